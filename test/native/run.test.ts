/**
 * `sd-handoff run` as a real process around a real Python server (test/fixtures/listen_http.py): LISTEN_FDS with
 * the program's own LISTEN_PID, arguments untouched, 10 reloads by SIGHUP under load with 0 failed requests in every
 * readiness mode, a broken new version reported while the old one keeps serving (by SIGHUP and through the control
 * socket, where `sd-handoff upgrade` exits 1), and SIGTERM passed on with the program's exit status.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startLoad } from '../../bench/load.js';
import { alive, freePort, NotifyRecorder, Procs, ROOT, tempDir, waitFor } from './helpers.js';

const CLI = path.join(ROOT, 'dist/cli.js');
const PY = path.join(ROOT, 'test/fixtures/listen_http.py');
const hasPython = spawnSync('python3', ['--version']).status === 0;
const NONE = { non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0 };

function get(port: number, urlPath = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

const servedPid = async (port: number) => Number((await get(port)).trim());

let procs: Procs;
let tmp: ReturnType<typeof tempDir>;
let recorder: NotifyRecorder;
let port: number;

beforeEach(async () => {
  procs = new Procs();
  tmp = tempDir('sdh-run-');
  recorder = new NotifyRecorder(path.join(tmp.dir, 'notify'));
  port = await freePort();
});
afterEach(async () => {
  // Children first (by the pids run reported), then run itself.
  for (const m of procs.output.matchAll(/started pid (\d+)/g)) procs.track(Number(m[1]));
  await procs.killAll();
  await recorder.close();
  tmp.cleanup();
});

/** Starts `sd-handoff run` with NOTIFY_SOCKET = the recorder; resolves once run says READY=1. */
async function startRun(args: string[], pyArgs: string[] = []): Promise<{ run: ChildProcess; pid: number }> {
  const run = spawn(process.execPath, [CLI, 'run', ...args, '--', 'python3', PY, ...pyArgs], {
    env: { PATH: process.env.PATH, NOTIFY_SOCKET: recorder.path },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.track(run.pid!);
  run.stdout!.on('data', (d: Buffer) => (procs.output += d.toString()));
  run.stderr!.on('data', (d: Buffer) => (procs.output += d.toString()));
  await waitFor('run to report READY=1', () => recorder.texts().some((t) => t.startsWith('READY=1')) || (run.exitCode !== null && Promise.reject(new Error(`run exited ${run.exitCode}:\n${procs.output}`))), 20_000);
  return { run, pid: await servedPid(port) };
}

/** SIGHUP to run and wait for the reload's outcome in its log; returns the pid serving afterwards. */
async function reloadBySignal(run: ChildProcess, n: number): Promise<string> {
  const before = procs.output.match(/reload(: pid \d+ ready| failed)/g)?.length ?? 0;
  process.kill(run.pid!, 'SIGHUP');
  await waitFor(`reload ${n} to end`, () => (procs.output.match(/reload(: pid \d+ ready| failed)/g)?.length ?? 0) > before, 20_000);
  return procs.output.match(/reload(: pid \d+ ready| failed)[^\n]*/g)!.at(-1)!;
}

describe.skipIf(!hasPython)('sd-handoff run with a Python server', () => {
  it('the program gets fd 3 with LISTEN_FDS=1, LISTEN_FDNAMES, its own LISTEN_PID, the proxy NOTIFY_SOCKET, and its arguments untouched', async () => {
    const { run, pid } = await startRun(['--listen', `127.0.0.1:${port}=http`, '--ready', 'notify'], ['--protocol', 'HTTP/1.0', "it's $HOME", '']);
    const env = JSON.parse(await get(port, '/env')) as Record<string, unknown>;
    expect(env).toMatchObject({ LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', LISTEN_PID: String(pid), pid, argv: ['--protocol', 'HTTP/1.0', "it's $HOME", ''] });
    expect(env.NOTIFY_SOCKET).toMatch(/^@sdh-run\//);
    // run speaks to systemd as the main process: READY=1 with the program's pid; the program's STATUS= forwarded.
    await waitFor('the forwarded STATUS=', () => recorder.texts().includes(`STATUS=listen_http ${pid} serving`));
    expect(recorder.messages.every((m) => m.pid === run.pid)).toBe(true);
    expect(recorder.texts().find((t) => t.startsWith('READY=1'))).toMatch(new RegExp(`^READY=1\nSTATUS=serving: pid ${pid} \\(python3\\) ready in \\d+ ms$`));
  });

  it.each([
    ['notify', ['--ready', 'notify']],
    ['port', ['--ready', 'port']],
    ['delay', ['--ready', 'delay', '--delay', '1.5']],
  ])('--ready %s: 10 reloads by SIGHUP under new-connection and keep-alive load: 0 failed requests, a new pid each time', async (mode, readyArgs) => {
    const { run, pid } = await startRun(['--listen', `127.0.0.1:${port}=http`, ...readyArgs, '--drain', '10']);
    const url = `http://127.0.0.1:${port}/`;
    const newconn = startLoad({ url, mode: 'newconn', connections: 4, durationMs: 120_000 });
    const keepalive = startLoad({ url, mode: 'keepalive', connections: 4, durationMs: 120_000, slow: { path: '/slow', connections: 1 } });
    await new Promise((r) => setTimeout(r, 500));
    const pids = [pid];
    for (let i = 1; i <= 10; i++) {
      const line = await reloadBySignal(run, i);
      expect(line, procs.output).toMatch(/^reload: pid \d+ ready/);
      const now = Number(/pid (\d+)/.exec(line)![1]);
      expect(now).not.toBe(pids.at(-1));
      pids.push(now);
      await waitFor(`pid ${now} to serve`, async () => (await servedPid(port)) === now, 5000);
    }
    await new Promise((r) => setTimeout(r, 500));
    const [nc, ka] = await Promise.all([newconn.stop(), keepalive.stop()]);
    console.log(`--ready ${mode}: 10 reloads; newconn ${JSON.stringify(nc.counts)}; keepalive (HTTP/1.0: one request per connection) ${JSON.stringify(ka.counts)}; slow ${JSON.stringify(ka.slow?.counts)}`);
    expect(nc.counts.ok).toBeGreaterThan(100);
    expect(ka.counts.ok).toBeGreaterThan(100);
    expect({ ...nc.counts, ok: 0, total: 0 }, JSON.stringify(nc.errorSamples)).toMatchObject(NONE);
    expect({ ...ka.counts, ok: 0, total: 0 }, JSON.stringify(ka.errorSamples)).toMatchObject(NONE);
    expect(ka.slow!.counts.ok).toBeGreaterThan(0);
    expect(ka.slow!.counts.ok).toBe(ka.slow!.counts.total);
    // Every old instance drained and exited (none was SIGKILLed); run stayed the one process systemd knows.
    await waitFor('old instances to exit', () => pids.slice(0, -1).every((p) => !alive(p)), 15_000);
    expect(procs.output).not.toMatch(/still running \d+ ms after SIGTERM: SIGKILL/);
    expect(recorder.texts().filter((t) => t.startsWith('RELOADING=1\nMONOTONIC_USEC='))).toHaveLength(10);
    expect(recorder.texts().filter((t) => t.startsWith('READY=1\nSTATUS=reloaded: pid '))).toHaveLength(10);
    expect(recorder.texts().some((t) => t.includes('MAINPID='))).toBe(false);
  }, 120_000);

  it('a new version that exits 1 at start: the reload is reported failed (SIGHUP and sd-handoff upgrade exits 1), the old one keeps serving', async () => {
    const fail = path.join(tmp.dir, 'fail');
    const control = path.join(tmp.dir, 'control.sock');
    const { run, pid } = await startRun(['--listen', `127.0.0.1:${port}=http`, '--ready', 'notify', '--control-socket', control], ['--fail-if-exists', fail]);
    writeFileSync(fail, '');
    const line = await reloadBySignal(run, 1);
    expect(line).toMatch(new RegExp(`^reload failed: the program \\(pid \\d+\\) exited with status 1 before it was ready; pid ${pid} still serves$`));
    expect(procs.output).toContain('exists: failing on purpose at start');
    expect(recorder.texts().at(-1)).toMatch(new RegExp(`^READY=1\nSTATUS=reload failed: the program \\(pid \\d+\\) exited with status 1 before it was ready; pid ${pid} still serves$`));
    expect(await servedPid(port)).toBe(pid);

    const up = spawnSync(process.execPath, [CLI, 'upgrade', '--socket', control, '--timeout', '20'], { encoding: 'utf8' });
    expect(up.status).toBe(1);
    expect(up.stderr).toMatch(/^sd-handoff upgrade: upgrade failed: the program \(pid \d+\) exited with status 1 before it was ready\n$/);
    expect(await servedPid(port)).toBe(pid);
    expect(alive(pid)).toBe(true);

    // And once it is fixed, the control socket reloads: `sd-handoff upgrade` says which pid took over.
    spawnSync('rm', ['-f', fail]);
    const ok = spawnSync(process.execPath, [CLI, 'upgrade', '--socket', control, '--timeout', '20'], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    const m = new RegExp(`^upgraded: pid ${pid} -> (\\d+) in \\d+ ms\n$`).exec(ok.stdout);
    expect(m, ok.stdout).not.toBeNull();
    expect(await servedPid(port)).toBe(Number(m![1]));
  }, 60_000);

  it('SIGTERM: passed on to the program, which finishes its in-flight request; run exits with its status; the control socket is removed', async () => {
    const control = path.join(tmp.dir, 'control.sock');
    const { run, pid } = await startRun(['--listen', `127.0.0.1:${port}`, '--ready', 'port', '--control-socket', control]);
    const slow = get(port, '/slow');
    await new Promise((r) => setTimeout(r, 300));
    const exited = new Promise<number | null>((resolve) => run.once('exit', (code) => resolve(code)));
    run.kill('SIGTERM');
    expect(await slow).toBe(`${pid}\n`);
    expect(await exited).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(existsSync(control)).toBe(false);
    expect(recorder.texts().at(-1)).toBe(`STOPPING=1\nSTATUS=stopping: SIGTERM to pid ${pid}`);
  });

  it('the program dying on its own ends run with its status, for systemd\'s Restart= to act on', async () => {
    const { run, pid } = await startRun(['--listen', `127.0.0.1:${port}`, '--ready', 'delay', '--delay', '0.3']);
    const exited = new Promise<[number | null, string | null]>((resolve) => run.once('exit', (code, signal) => resolve([code, signal])));
    process.kill(pid, 'SIGKILL');
    expect(await exited).toEqual([null, 'SIGKILL']);
    expect(procs.output).toContain(`pid ${pid} was killed by SIGKILL on its own: sd-handoff run exits with its status`);
  });
});
