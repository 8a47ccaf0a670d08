/**
 * Every kind of listener through an upgrade, and takeover by an independently started process (Pingora's model):
 * real processes, real sockets, 300 listeners, names that do not match, a process that dies mid-takeover.
 */
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startLoad } from '../../bench/load.js';
import { SdHandoffError } from '../../src/errors.js';
import { native } from '../../src/native.js';
import { controlRequest } from '../../src/upgrade/control.js';
import { launchTakeover } from '../../src/upgrade/launch.js';
import { alive, freePort, HELLO, Procs, readPid, ROOT, tempDir, waitFor } from './helpers.js';

const MULTI = path.join(ROOT, 'test/fixtures/multi.mjs');

let procs: Procs;
let tmp: ReturnType<typeof tempDir>;
let env: NodeJS.ProcessEnv;

beforeEach(() => {
  procs = new Procs();
  tmp = tempDir();
  env = {
    PIDFILE: path.join(tmp.dir, 'multi.pid'),
    CONTROL: path.join(tmp.dir, 'control.sock'),
    SOCK_DIR: tmp.dir,
    ABSTRACT: `sdh-test-${process.pid}-${Date.now()}`,
  };
});
afterEach(async () => {
  await procs.killAll();
  tmp.cleanup();
});

function tcp(opts: net.NetConnectOpts): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    net.connect(opts).on('data', (d) => (data += d)).on('end', () => resolve(data.trim())).on('error', reject);
  });
}

async function abstract(name: string): Promise<string> {
  const addon = native();
  const fd = addon.connectUnix(`@${name}`);
  try {
    let data = '';
    for (;;) {
      const r = await addon.recvMsg(fd, 256, 0, 5000);
      if (r.data.length === 0) return data.trim();
      data += r.data.toString();
    }
  } finally {
    addon.close(fd);
  }
}

function udp(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => (s.close(), reject(new Error('no UDP answer'))), 5000);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m.toString().trim());
    });
    s.send('ping', port, '127.0.0.1');
  });
}

interface Ready {
  ready: number;
  ports: Record<string, number | string>;
}

/** Resolves with the next ready line printed after output offset `from` (by any of the processes we started). */
async function nextReady(from: number, what: string): Promise<Ready> {
  const line = await waitFor(what, () => procs.output.slice(from).split('\n').find((l) => l.startsWith('{"ready"')), 30_000);
  const r = JSON.parse(line) as Ready;
  procs.track(r.ready);
  return r;
}

/** Starts multi.mjs and resolves with its ready line. */
async function startMulti(extra: NodeJS.ProcessEnv = {}): Promise<Ready> {
  const from = procs.output.length;
  procs.start(MULTI, { ...env, ...extra });
  return nextReady(from, 'multi.mjs ready line');
}

/** Asks every listener who answers. */
async function answers(r: Ready): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, port] of Object.entries(r.ports)) {
    if (name === 'udp') out[name] = await udp(port as number);
    else if (name === 'unix') out[name] = await tcp({ path: port as string });
    else if (name === 'abstract') out[name] = await abstract(env.ABSTRACT!);
    else if (name === 'v6') out[name] = await tcp({ host: '::1', port: port as number });
    else out[name] = await tcp({ host: '127.0.0.1', port: port as number });
  }
  return out;
}

const allFrom = (r: Ready, pid: number): Record<string, string> => Object.fromEntries(Object.keys(r.ports).map((n) => [n, `${n} ${pid}`]));

describe('every kind of listener through an upgrade', () => {
  it('TCP, TCP6, unix path, unix abstract and UDP all pass by name; the unix path survives the old process', async () => {
    const first = await startMulti();
    expect(await answers(first)).toEqual(allFrom(first, first.ready));
    const from = procs.output.length;
    process.kill(first.ready, 'SIGHUP');
    const second = await nextReady(from, 'the upgraded process');
    expect(second.ready).not.toBe(first.ready);
    // Same listeners (same ports), by name.
    expect(second.ports).toEqual(first.ports);
    await waitFor('the old process to exit', () => !alive(first.ready), 15_000);
    expect(existsSync(path.join(tmp.dir, 'unix.sock'))).toBe(true);
    expect(await answers(second)).toEqual(allFrom(second, second.ready));
    expect(readPid(env.PIDFILE!)).toBe(second.ready);
  }, 40_000);
});

describe('takeover by an independently started process', () => {
  it('takes over 300 listeners (several SCM_RIGHTS messages) plus every other kind, by name', async () => {
    const first = await startMulti({ COUNT: '300' });
    const from = procs.output.length;
    procs.start(MULTI, { ...env, COUNT: '300', SDH_TAKEOVER: env.CONTROL });
    const second = await nextReady(from, 'the process taking over');
    expect(second.ready).not.toBe(first.ready);
    expect(Object.keys(second.ports)).toHaveLength(304);
    expect(second.ports).toEqual(first.ports);
    await waitFor('the old instance to exit', () => !alive(first.ready), 15_000);
    expect(await answers(second)).toEqual(allFrom(second, second.ready));
    expect(readPid(env.PIDFILE!)).toBe(second.ready);
    // The control socket went along: the new instance answers it.
    expect(await controlRequest(env.CONTROL!, 'status')).toMatchObject({ pid: second.ready, state: 'ready' });
  }, 60_000);

  it('launched like ExecReload= would (sd-handoff takeover): 0 failed requests under load', async () => {
    const port = await freePort();
    const helloEnv = { PORT: String(port), PIDFILE: env.PIDFILE, SDH_CONTROL_SOCKET: env.CONTROL, DRAIN_TIMEOUT_MS: '5000' };
    procs.start(HELLO, helloEnv);
    const oldPid = await waitFor('hello-http PID file', () => readPid(env.PIDFILE!));
    procs.track(oldPid);
    const url = `http://127.0.0.1:${port}/`;
    const ka = startLoad({ url, mode: 'keepalive', connections: 8, durationMs: 60_000 });
    const nc = startLoad({ url, mode: 'newconn', connections: 4, durationMs: 60_000 });
    await new Promise((r) => setTimeout(r, 500));
    const { pid, durationMs } = await launchTakeover(process.execPath, [HELLO], {
      socket: env.CONTROL!,
      timeoutMs: 20_000,
      env: { PATH: process.env.PATH, ...helloEnv },
    });
    procs.track(pid);
    expect(pid).not.toBe(oldPid);
    expect(durationMs).toBeLessThan(20_000);
    expect(readPid(env.PIDFILE!)).toBe(pid);
    await waitFor('the old instance to exit', () => !alive(oldPid), 15_000);
    await new Promise((r) => setTimeout(r, 300));
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    for (const r of [k, n]) {
      expect(r.counts.ok).toBeGreaterThan(50);
      expect(r.counts.ok, JSON.stringify(r.errorSamples)).toBe(r.counts.total);
    }
  }, 60_000);

  it('names that do not match: the takeover fails, both sides say why, the old instance keeps serving', async () => {
    const first = await startMulti();
    const err = await launchTakeover(process.execPath, [MULTI], {
      socket: env.CONTROL!,
      timeoutMs: 20_000,
      env: { PATH: process.env.PATH, ...env, EXTRA_NAME: 'metrics' },
    }).catch((e: unknown) => e as SdHandoffError);
    expect(err).toBeInstanceOf(SdHandoffError);
    expect((err as SdHandoffError).message).toContain('takeover: the running instance offers no listener named "metrics" (it offers: sdh-control, tcp0, tcp1, v6, unix, abstract, udp)');
    // The old side hears of the failure on its own connection, a moment after the launcher does.
    const status = await waitFor('the old instance to record the failure', async () => {
      const s = await controlRequest(env.CONTROL!, 'status');
      return s.state === 'ready' && s.lastUpgrade ? s : undefined;
    });
    expect(status).toMatchObject({ pid: first.ready, state: 'ready', lastUpgrade: { ok: false } });
    expect(String((status.lastUpgrade as { error: string }).error)).toContain(`gave up: takeover: the running instance offers no listener named "metrics"`);
    expect(await answers(first)).toEqual(allFrom(first, first.ready));
    expect(readPid(env.PIDFILE!)).toBe(first.ready);
  }, 40_000);

  it('a process that dies mid-takeover leaves the old instance serving and saying so', async () => {
    const first = await startMulti();
    const launched = launchTakeover(process.execPath, [MULTI], {
      socket: env.CONTROL!,
      timeoutMs: 20_000,
      env: { PATH: process.env.PATH, ...env, HANG_BEFORE_READY: '1' },
    }).catch((e: unknown) => e as SdHandoffError);
    // Wait until the old instance has made its offer (its state says so), then kill the new process.
    await waitFor('the takeover to be under way', async () => (await controlRequest(env.CONTROL!, 'status').catch(() => ({ state: '' }))).state === 'upgrading');
    const pids = execFileSync('pgrep', ['-f', 'test/fixtures/multi.mjs'], { encoding: 'utf8' }).trim().split('\n').map(Number);
    const victim = pids.find((p) => p !== first.ready)!;
    procs.track(victim);
    process.kill(victim, 'SIGKILL');
    const err = await launched;
    expect((err as SdHandoffError).message).toMatch(/was killed by SIGKILL before it took over/);
    const status = await waitFor('the failure recorded', async () => {
      const s = await controlRequest(env.CONTROL!, 'status');
      return s.state === 'ready' ? s : undefined;
    });
    expect(String((status.lastUpgrade as { error: string }).error)).toContain('closed the connection before it was ready');
    expect(await answers(first)).toEqual(allFrom(first, first.ready));
  }, 40_000);
});
