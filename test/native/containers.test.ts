/**
 * Containers without systemd, as `docker run` makes them, with `unshare --pid --fork --mount-proc` (root; no Docker
 * engine needed): the program is PID 1 of a new PID namespace, or the child of a tiny init (tini as
 * `docker run --init` does it, dumb-init, catatonit), or `sd-handoff run` is PID 1. The network is the host's, so
 * the load generator reaches 127.0.0.1:PORT; pids the service reports are the namespace's. Every namespace is ended
 * at the end of its test, failed or not, by SIGKILL to its PID 1 (the kernel then kills everything in it) and to
 * unshare.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startLoad, type Counts } from '../../bench/load.js';
import { controlRequest } from '../../src/upgrade/control.js';
import { descendants, listProcesses } from '../../src/upgrade/pid1.js';
import { freePort, HELLO, ROOT, tempDir, waitFor } from './helpers.js';

const CLI = path.join(ROOT, 'dist/cli.js');
const which = (...paths: string[]): string | undefined => paths.find((p) => existsSync(p));
const TINI = which('/usr/bin/tini', '/sbin/tini');
/** The tiny inits users put in front (`docker run --init` is tini; podman's --init is catatonit), as installed here. */
const INITS = [
  { name: 'tini', argv: TINI ? [TINI, '--'] : undefined },
  { name: 'dumb-init', argv: ((p) => (p ? [p] : undefined))(which('/usr/bin/dumb-init')) },
  { name: 'catatonit', argv: ((p) => (p ? [p, '--'] : undefined))(which('/usr/bin/catatonit', '/usr/libexec/podman/catatonit')) },
].filter((i): i is { name: string; argv: string[] } => i.argv !== undefined);
const canUnshare = process.getuid?.() === 0 && spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;
const NO_FAILURES: Counts = { ok: 0, non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0, total: 0 };

/** A PID namespace started by the test: unshare, and its PID 1 seen from here. */
interface Namespace {
  unshare: ChildProcess;
  /** Host pid of the namespace's PID 1. */
  init: number;
  output: () => string;
  exited: Promise<number | null>;
}

let spaces: Namespace[] = [];
let dir = '';
let cleanupDir = (): void => {};
let port = 0;

beforeEach(async () => {
  const t = tempDir('sdh-containers-');
  dir = t.dir;
  cleanupDir = t.cleanup;
  port = await freePort();
});

afterEach(async (ctx) => {
  for (const ns of spaces) {
    // What the namespace printed, for a failed test: the reason is usually there.
    if (ctx.task.result?.state === 'fail') console.error(ns.output());
    for (const pid of [ns.init, ns.unshare.pid]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await Promise.race([ns.exited, new Promise((r) => setTimeout(r, 5000))]);
  }
  spaces = [];
  cleanupDir();
});

async function startNamespace(command: string[], env: NodeJS.ProcessEnv): Promise<Namespace> {
  const unshare = spawn('unshare', ['--pid', '--fork', '--mount-proc', ...command], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  unshare.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  unshare.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => unshare.once('exit', (code) => r(code)));
  const init = await waitFor('the namespace PID 1', () => listProcesses().find((p) => p.ppid === unshare.pid)?.pid, 5000);
  const ns = { unshare, init, output: () => out, exited };
  spaces.push(ns);
  return ns;
}

function get(urlPath = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

const serving = (): Promise<string> => waitFor('hello-http to answer', () => get().then((r) => r.body, () => undefined), 15_000, 50);

/** Upgrades 5 times through the control socket under keep-alive and new-connection load; returns the pids that served. */
async function fiveUpgradesUnderLoad(control: string): Promise<number[]> {
  const url = `http://127.0.0.1:${port}/`;
  const pids: number[] = [Number(/hello from (\d+)/.exec(await serving())![1])];
  const keepalive = startLoad({ url, mode: 'keepalive', connections: 6, durationMs: 60_000, slow: { path: '/slow', connections: 1 } });
  const newconn = startLoad({ url, mode: 'newconn', connections: 3, durationMs: 60_000 });
  try {
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 5; i++) {
      const answer = await controlRequest(control, 'upgrade', { timeoutMs: 20_000 });
      expect(answer).toMatchObject({ ok: true });
      const pid = answer.pid as number;
      expect(pids).not.toContain(pid);
      // The new pid serves: a fresh connection is answered by it once the old one has stopped accepting.
      await waitFor(`pid ${pid} to answer`, () => get().then((r) => r.body.includes(`hello from ${pid}`), () => false), 10_000);
      pids.push(pid);
      await new Promise((r) => setTimeout(r, 300));
    }
  } finally {
    const [ka, nc] = await Promise.all([keepalive.stop(), newconn.stop()]);
    console.log(`${expect.getState().currentTestName}: ${ka.counts.ok}/${ka.counts.total} keep-alive, ${nc.counts.ok}/${nc.counts.total} new-connection, ${ka.slow?.counts.ok}/${ka.slow?.counts.total} slow requests ok; pids ${pids.join(' ')}`);
    expect(ka.counts.total).toBeGreaterThan(50);
    expect(nc.counts.total).toBeGreaterThan(20);
    expect({ ...ka.counts, ok: 0, total: 0 }).toEqual(NO_FAILURES);
    expect({ ...nc.counts, ok: 0, total: 0 }).toEqual(NO_FAILURES);
    expect(ka.slow?.counts.ok).toBe(ka.slow?.counts.total);
  }
  return pids;
}

/** Processes in the namespace below its PID 1, with their state. */
function inside(ns: Namespace): Array<{ pid: number; state: string }> {
  const procs = listProcesses();
  const ids = descendants(ns.init, procs);
  return procs.filter((p) => ids.includes(p.pid)).map((p) => ({ pid: p.pid, state: p.state }));
}

describe.skipIf(!canUnshare)('containers: bare node as PID 1', () => {
  it('refuses the upgrade with SDH_PID_ONE naming the fixes, on the control socket and on SIGHUP, and keeps serving', async () => {
    const control = path.join(dir, 'control.sock');
    const ns = await startNamespace([process.execPath, HELLO], { PORT: String(port), SDH_CONTROL_SOCKET: control });
    expect(await serving()).toContain('hello from 1');
    const url = `http://127.0.0.1:${port}/`;
    const load = startLoad({ url, mode: 'newconn', connections: 3, durationMs: 30_000 });
    // Not spawnSync: the load runs in this process and must go on meanwhile.
    const cli = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [CLI, 'upgrade', '--socket', control, '--timeout', '20'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      c.once('exit', (status) => resolve({ status, stderr }));
    });
    expect(cli.status).not.toBe(0);
    expect(cli.stderr).toMatch(/PID 1 of its PID namespace/);
    expect(cli.stderr).toMatch(/docker run --init/);
    expect(cli.stderr).toMatch(/sd-handoff run -- node app\.js/);
    const answer = await controlRequest(control, 'upgrade', { timeoutMs: 20_000 }).catch((err: { code: string }) => err);
    expect(answer).toMatchObject({ code: 'SDH_PID_ONE' });
    process.kill(ns.init, 'SIGHUP');
    await waitFor('the refusal of SIGHUP on stderr', () => ns.output().match(/<3>upgrade refused: this process is PID 1/g)?.length === 3, 5000);
    const counts = (await load.stop()).counts;
    expect(counts.total).toBeGreaterThan(20);
    expect({ ...counts, ok: 0, total: 0 }).toEqual(NO_FAILURES);
    expect((await get()).body).toContain('hello from 1');
    expect(ns.output()).toMatch(/<4>pid 1: upgrades will be refused/);
  }, 60_000);
});

describe.skipIf(!canUnshare || INITS.length === 0)('containers: a tiny init as PID 1 (docker run --init)', () => {
  it.each(INITS)('$name: 5 upgrades under load, 0 failed requests, a new pid serving after each; the init and the waiter survive; SIGTERM to the init exits 0', async ({ argv }) => {
    const control = path.join(dir, 'control.sock');
    const ns = await startNamespace([...argv, process.execPath, HELLO], { PORT: String(port), SDH_CONTROL_SOCKET: control, DRAIN_TIMEOUT_MS: '4000', SLOW_MS: '1000' });
    const pids = await fiveUpgradesUnderLoad(control);
    expect(new Set(pids).size).toBe(6);
    expect(ns.output()).toMatch(/stays as the waiter of pid/);
    // Every drained version was reaped: the init, the waiter (pid 2) and the serving one remain, no zombie.
    await waitFor('the old versions to be gone', () => inside(ns).length === 2, 15_000);
    expect(inside(ns).every((p) => p.state !== 'Z')).toBe(true);
    expect((await get()).body).toContain(`hello from ${pids.at(-1)}`);
    // docker stop: SIGTERM to PID 1; the init passes it to the waiter, the waiter to the serving version, which drains.
    process.kill(ns.init, 'SIGTERM');
    expect(await Promise.race([ns.exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))])).toBe(0);
    expect(ns.output()).toMatch(new RegExp(`pid ${pids.at(-1)} exited with status 0 and left no successor: waiter pid 2 exits with 0`));
  }, 120_000);

  it.skipIf(!TINI)('the container ends with the serving version: killed by SIGKILL, tini exits 137', async () => {
    const control = path.join(dir, 'control.sock');
    const ns = await startNamespace([TINI!, '--', process.execPath, HELLO], { PORT: String(port), SDH_CONTROL_SOCKET: control, DRAIN_TIMEOUT_MS: '2000' });
    await serving();
    const answer = await controlRequest(control, 'upgrade', { timeoutMs: 20_000 });
    const pid = answer.pid as number;
    await waitFor('the old version to be gone', () => inside(ns).length === 2, 15_000);
    await waitFor(`pid ${pid} to answer`, () => get().then((r) => r.body.includes(`hello from ${pid}`), () => false), 10_000);
    const procs = listProcesses();
    // The serving version, seen from here: the waiter's child.
    const waiter = procs.find((p) => p.ppid === ns.init)!.pid;
    const main = procs.find((p) => p.ppid === waiter)!.pid;
    process.kill(main, 'SIGKILL');
    expect(await Promise.race([ns.exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))])).toBe(137);
  }, 60_000);
});

describe.skipIf(!canUnshare)('containers: sd-handoff run as PID 1', () => {
  it('5 reloads under load, 0 failed requests, a new pid serving after each; exited instances and orphans reaped; SIGTERM exits 0', async () => {
    const control = path.join(dir, 'control.sock');
    // Each instance leaves an orphan behind (a subshell's background sleep): PID 1 must reap it.
    const program = ['sh', '-c', `(sleep 0.2 &); exec "${process.execPath}" "${HELLO}"`];
    const ns = await startNamespace([process.execPath, CLI, 'run', '--listen', `127.0.0.1:${port}=http`, '--ready', 'notify', '--drain', '4', '--control-socket', control, '--', ...program], { SLOW_MS: '1000' });
    const pids = await fiveUpgradesUnderLoad(control);
    expect(new Set(pids).size).toBe(6);
    await waitFor('one instance left, no zombie', () => {
      const procs = inside(ns);
      return procs.length === 1 && procs[0]!.state !== 'Z';
    }, 15_000);
    process.kill(ns.init, 'SIGTERM');
    expect(await Promise.race([ns.exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))])).toBe(0);
  }, 120_000);

  it('exits 128+N when the serving instance is killed by signal N (PID 1 cannot re-raise it on itself)', async () => {
    const ns = await startNamespace([process.execPath, CLI, 'run', '--listen', `127.0.0.1:${port}=http`, '--ready', 'notify', '--', process.execPath, HELLO], {});
    await serving();
    const instance = listProcesses().find((p) => p.ppid === ns.init)!.pid;
    process.kill(instance, 'SIGKILL');
    expect(await Promise.race([ns.exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))])).toBe(137);
  }, 60_000);
});
