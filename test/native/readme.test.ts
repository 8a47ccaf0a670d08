/**
 * The README's JavaScript snippets, run exactly as written (copied byte for byte into a file) the way a user would
 * try them: by hand, outside systemd, with `sd-handoff` resolved as an installed package (a node_modules symlink to
 * this checkout's built package). The tour's server listens on 127.0.0.1:8080 and writes /tmp/hello.pid, so it runs
 * in a network namespace and on a private /tmp of its own (needs root: unshare), which also keeps it off whatever the
 * machine runs on port 8080.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { alive, childrenOf, NotifyRecorder, Procs, ROOT, waitFor } from './helpers.js';

const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const snippets = [...readme.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
const tour = snippets.find((s) => s.includes('Upgrader.create('));
const lower = snippets.find((s) => s.includes('listenFds()'));
const isRoot = process.getuid?.() === 0;
// Nothing of a systemd service or a test runner's environment: the snippets run as in a user's shell.
const shellEnv = { PATH: process.env.PATH, HOME: process.env.HOME ?? '/root' };

let dir: string;
let procs: Procs;
const recorders: NotifyRecorder[] = [];
beforeEach(() => {
  // Not under /tmp: the tour runs with a private /tmp and must still see its own file.
  dir = mkdtempSync('/var/tmp/sdh-readme-');
  mkdirSync(path.join(dir, 'node_modules'));
  symlinkSync(ROOT, path.join(dir, 'node_modules', 'sd-handoff'));
  procs = new Procs();
});
afterEach(async () => {
  await procs.killAll();
  for (const r of recorders.splice(0)) await r.close();
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, code: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, code);
  return file;
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

function collect(child: ChildProcess): { text: () => string } {
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return { text: () => out };
}

/** GET http://127.0.0.1:8080/ from inside the network namespace of `pid`; the body, or undefined on any error. */
function getIn(pid: number): string | undefined {
  const client = `require('node:http').get('http://127.0.0.1:8080/', { agent: false }, (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => process.stdout.write(b)); }).on('error', () => process.exit(1));`;
  const r = spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, process.execPath, '-e', client], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? r.stdout : undefined;
}

describe('README snippets, run as written outside systemd', () => {
  it('the README has the two snippets this file runs (a new one needs its run here)', () => {
    expect(snippets).toHaveLength(2);
    expect(tour).toBeDefined();
    expect(lower).toBeDefined();
  });

  it.skipIf(!isRoot)('the tour: serves on 127.0.0.1:8080, writes /tmp/hello.pid, upgrades on SIGHUP, stops on SIGTERM', async () => {
    const file = write('tour.mjs', tour!);
    // The package is bound in (not symlinked) before /tmp goes private: a checkout under /tmp would vanish with it.
    const link = path.join(dir, 'node_modules', 'sd-handoff');
    rmSync(link);
    mkdirSync(link);
    // unshare (no --fork) execs in place: the pid spawned is the pid of the node that runs the snippet.
    const setup = 'mount --bind "$1" "$2" && shift 2 && mount -t tmpfs tmpfs /tmp && ip link set lo up && exec "$@"';
    const child = spawn('unshare', ['--mount', '--net', 'sh', '-c', setup, 'sh', ROOT, link, process.execPath, file], { cwd: dir, env: shellEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    const output = collect(child);
    const oldExit = exited(child);
    const oldPid = child.pid!;
    procs.track(oldPid);
    const pidFile = (pid: number): string | undefined => {
      try {
        return readFileSync(`/proc/${pid}/root/tmp/hello.pid`, 'utf8');
      } catch {
        return undefined;
      }
    };

    await waitFor(`the tour to answer (output: ${output.text()})`, () => getIn(oldPid) === `hello from ${oldPid}\n`, 20_000, 200);
    expect(pidFile(oldPid)).toBe(`${oldPid}\n`);

    process.kill(oldPid, 'SIGHUP');
    const newPid = await waitFor('the new version to start', () => childrenOf(oldPid)[0], 15_000).catch((err: Error) => {
      throw new Error(`${err.message}; the tour printed:\n${output.text()}`);
    });
    procs.track(newPid);
    await waitFor('the new version to write its pid', () => pidFile(newPid) === `${newPid}\n`, 30_000, 100);
    procs.track(newPid);
    expect(getIn(newPid)).toBe(`hello from ${newPid}\n`);
    expect(await oldExit).toEqual({ code: 0, signal: null });
    expect(pidFile(newPid)).toBe(`${newPid}\n`);

    process.kill(newPid, 'SIGTERM');
    await waitFor('the new version to stop', () => !alive(newPid), 15_000);
    expect(output.text()).not.toMatch(/Error|ENOENT/);
  }, 90_000);

  it('the lower layers, by hand: nothing inherited, nothing sent, exit 0 without a word', async () => {
    const child = spawn(process.execPath, [write('lower.mjs', lower!)], { env: shellEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    procs.track(child.pid!);
    const output = collect(child);
    expect(await exited(child)).toEqual({ code: 0, signal: null });
    expect(output.text()).toBe('');
  });

  it('the lower layers, given a socket as systemd passes it: serve it, store it, then READY=1 and a barrier', async () => {
    const listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const port = (listener.address() as net.AddressInfo).port;
    const notify = new NotifyRecorder(path.join(dir, 'notify.sock'));
    recorders.push(notify);
    const fd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
    // LISTEN_PID must be the snippet's own pid: set by the shell that execs node, as systemd sets it after fork().
    const child = spawn('sh', ['-c', 'LISTEN_PID=$$ exec "$@"', 'sh', process.execPath, write('lower.mjs', lower!)], {
      env: { ...shellEnv, LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', NOTIFY_SOCKET: notify.path },
      stdio: ['ignore', 'pipe', 'pipe', fd],
    });
    procs.track(child.pid!);
    const output = collect(child);
    await new Promise<void>((resolve) => listener.close(() => resolve()));

    await waitFor(`READY=1 and the barrier (output: ${output.text()})`, () => notify.texts().includes('BARRIER=1'), 15_000);
    const texts = notify.texts();
    expect(texts[0]).toMatch(/^EXTEND_TIMEOUT_USEC=30000000$/);
    expect(texts).toContain('FDSTORE=1\nFDNAME=http');
    expect(notify.messages.find((m) => m.text.startsWith('FDSTORE=1'))!.fds).toHaveLength(1);
    expect(texts.indexOf('READY=1\nSTATUS=serving')).toBeGreaterThan(texts.findIndex((t) => t.startsWith('FDSTORE=1')));
    const body = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    expect(body).toBe('hello\n');
  });
});
