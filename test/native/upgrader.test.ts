/**
 * The Upgrader with real processes: examples/hello-http is started as a real service, upgraded under load by
 * SIGHUP and through the control socket, with a notify socket bound by the test standing in for systemd's.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startLoad } from '../../bench/load.js';
import { SdHandoffError } from '../../src/errors.js';
import { controlRequest } from '../../src/upgrade/control.js';
import { alive, readPid, serviceWorld, waitFor } from './helpers.js';

function get(port: number, urlPath = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

const world = serviceWorld();

/** The nice value of every thread of `pid` (/proc/PID/task/TID/stat, field 19), main thread first. */
function threadNices(pid: number): number[] {
  const tids = readdirSync(`/proc/${pid}/task`).map(Number).sort((a, b) => (a === pid ? -1 : b === pid ? 1 : a - b));
  return tids.flatMap((tid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return [Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])];
    } catch {
      return []; // the thread ended
    }
  });
}

async function startHello(extra: NodeJS.ProcessEnv = {}): Promise<number> {
  return (await world.startHello({ SDH_CONTROL_SOCKET: world.control, DRAIN_TIMEOUT_MS: '5000', ...extra })).pid;
}

/** Sends SIGHUP and waits until the PID file names a new process and the old one has exited. */
async function upgradeBySignal(oldPid: number): Promise<number> {
  process.kill(oldPid, 'SIGHUP');
  const newPid = await waitFor('the PID file to name the new process', () => {
    const p = readPid(world.pidFile);
    return p !== undefined && p !== oldPid ? p : undefined;
  });
  world.procs.track(newPid);
  await waitFor(`old pid ${oldPid} to exit`, () => !alive(oldPid), 15_000);
  return newPid;
}

describe('Upgrader with hello-http as a real process', () => {
  it('upgrades 3 times under keep-alive and new-connection load with 0 failed requests, the slow request completing', async () => {
    let pid = await startHello({ DRAIN_TIMEOUT_MS: '8000' });
    const url = `http://127.0.0.1:${world.port}/`;
    const keepalive = startLoad({ url, mode: 'keepalive', connections: 8, durationMs: 60_000, slow: { path: '/slow', connections: 2 } });
    const newconn = startLoad({ url, mode: 'newconn', connections: 4, durationMs: 60_000 });
    await new Promise((r) => setTimeout(r, 500));
    const pids = [pid];
    for (let i = 0; i < 3; i++) {
      keepalive.mark(`upgrade ${i}`);
      pid = await upgradeBySignal(pid);
      pids.push(pid);
      await new Promise((r) => setTimeout(r, 300));
    }
    const [ka, nc] = await Promise.all([keepalive.stop(), newconn.stop()]);
    expect(new Set(pids).size).toBe(4);
    expect(ka.counts.total).toBeGreaterThan(100);
    expect(nc.counts.total).toBeGreaterThan(50);
    expect({ ...ka.counts, ok: 0, total: 0 }).toEqual({ ok: 0, non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0, total: 0 });
    expect({ ...nc.counts, ok: 0, total: 0 }).toEqual({ ok: 0, non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0, total: 0 });
    // Slow requests spanning the upgrades all completed.
    expect(ka.slow?.counts.ok).toBeGreaterThan(0);
    expect(ka.slow?.counts.ok).toBe(ka.slow?.counts.total);
    const answer = await get(world.port);
    expect(answer.body).toContain(`hello from ${pid}`);
  }, 90_000);

  it('tells systemd RELOADING=1 + MONOTONIC_USEC, then MAINPID=<new> + READY=1 from the old main, in that order', async () => {
    const oldPid = await startHello();
    const before = world.notify.messages.length;
    const newPid = await upgradeBySignal(oldPid);
    const msgs = world.notify.messages.slice(before).filter((m) => !m.text.startsWith('WATCHDOG'));
    expect(msgs[0]?.text).toMatch(/^RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=/);
    expect(msgs[0]?.pid).toBe(oldPid);
    const handover = msgs.findIndex((m) => m.text.startsWith(`MAINPID=${newPid}\nREADY=1\nSTATUS=upgraded: pid ${newPid} took over from ${oldPid}`));
    expect(handover).toBe(1);
    expect(msgs[handover]?.pid).toBe(oldPid);
    // The old process never says STOPPING=1 once it has handed over.
    expect(msgs.some((m) => m.pid === oldPid && m.text.includes('STOPPING=1'))).toBe(false);
    // MONOTONIC_USEC is CLOCK_MONOTONIC in µs: close to ours.
    const usec = Number(/MONOTONIC_USEC=(\d+)/.exec(msgs[0]!.text)![1]);
    const now = Number(process.hrtime.bigint() / 1000n);
    expect(now - usec).toBeGreaterThan(0);
    expect(now - usec).toBeLessThan(30_000_000);
  }, 30_000);

  it('answers an upgrade through the control socket with the new pid', async () => {
    const oldPid = await startHello();
    const answer = await controlRequest(world.control, 'upgrade', { timeoutMs: 20_000 });
    expect(answer).toMatchObject({ ok: true, oldPid });
    const newPid = answer.pid as number;
    world.procs.track(newPid);
    expect(newPid).not.toBe(oldPid);
    expect(readPid(world.pidFile)).toBe(newPid);
    await waitFor('old pid to exit', () => !alive(oldPid));
    expect((await get(world.port)).body).toContain(`hello from ${newPid}`);
    // The control socket was handed over too: the new process answers it.
    expect(await controlRequest(world.control, 'status')).toMatchObject({ ok: true, pid: newPid, state: 'ready' });
  }, 30_000);

  it('a new version that exits before ready leaves the old one serving and reports its status and last lines', async () => {
    const failFile = path.join(world.dir, 'fail');
    const oldPid = await startHello({ HELLO_FAIL_FILE: failFile });
    writeFileSync(failFile, '');
    const before = world.notify.messages.length;
    const err = await controlRequest(world.control, 'upgrade', { timeoutMs: 20_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SdHandoffError);
    expect((err as SdHandoffError).code).toBe('SDH_UPGRADE_FAILED');
    expect((err as SdHandoffError).message).toMatch(/the new version \(pid \d+\) exited with status 3 before it was ready/);
    expect((err as SdHandoffError).message).toContain('exists: failing on purpose before ready');
    expect(readPid(world.pidFile)).toBe(oldPid);
    expect((await get(world.port)).body).toContain(`hello from ${oldPid}`);
    // RELOADING=1 is always answered by READY=1, with a STATUS= saying what failed.
    const texts = world.notify.messages.slice(before).map((m) => m.text).filter((t) => !t.startsWith('WATCHDOG'));
    expect(texts[0]).toMatch(/^RELOADING=1/);
    expect(texts[1]).toMatch(/^READY=1\nSTATUS=upgrade failed: the new version \(pid \d+\) exited with status 3/);
    expect(texts.some((t) => t.startsWith('MAINPID='))).toBe(false);
  }, 30_000);

  it('a new version that never becomes ready is killed after upgradeTimeoutMs; a second request meanwhile is refused', async () => {
    const hangFile = path.join(world.dir, 'hang');
    const oldPid = await startHello({ HELLO_HANG_FILE: hangFile, UPGRADE_TIMEOUT_MS: '1500' });
    writeFileSync(hangFile, '');
    const first = controlRequest(world.control, 'upgrade', { timeoutMs: 20_000 }).catch((e: unknown) => e);
    await waitFor('the hanging child to start', () => world.procs.output.includes('never becoming ready'));
    const hangingPid = Number(/hello-http (\d+): .* never becoming ready/.exec(world.procs.output)![1]);
    world.procs.track(hangingPid);
    const second = await controlRequest(world.control, 'upgrade', { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect((second as SdHandoffError).code).toBe('SDH_UPGRADE_IN_PROGRESS');
    expect((second as SdHandoffError).message).toContain(`an upgrade is already in progress (new pid ${hangingPid})`);
    const err = (await first) as SdHandoffError;
    expect(err.code).toBe('SDH_UPGRADE_TIMEOUT');
    expect(err.message).toContain(`the new version (pid ${hangingPid}) did not become ready within 1500 ms and was killed`);
    expect(alive(hangingPid)).toBe(false);
    expect(readPid(world.pidFile)).toBe(oldPid);
    expect((await get(world.port)).body).toContain(`hello from ${oldPid}`);
  }, 30_000);

  it('start-up nice: every thread of the new version runs at +10 until it serves, is lifted half-way through a slow start, and serves with every thread back at the serving priority', async () => {
    // Only root may raise a priority back, so only root lowers it (startupNice); as another user nothing changes.
    const root = process.getuid?.() === 0;
    const hangFile = path.join(world.dir, 'hang');
    const oldPid = await startHello({ HELLO_HANG_FILE: hangFile, UPGRADE_TIMEOUT_MS: '3000' });
    const serving = threadNices(oldPid)[0]!;
    expect(threadNices(oldPid).every((n) => n === serving)).toBe(true);
    writeFileSync(hangFile, '');
    process.kill(oldPid, 'SIGHUP');
    await waitFor('the hanging child to start', () => world.procs.output.includes('never becoming ready'));
    const hangingPid = Number(/hello-http (\d+): .* never becoming ready/.exec(world.procs.output)![1]);
    world.procs.track(hangingPid);
    // Node's own threads (V8 platform, libuv's pool) as well as the main one.
    const starting = threadNices(hangingPid);
    expect(starting.length).toBeGreaterThan(4);
    expect(starting).toEqual(starting.map(() => (root ? serving + 10 : serving)));
    if (root) {
      // Half of UPGRADE_TIMEOUT_MS: a start-up that slow gets the serving priority back, every thread of it.
      await waitFor('the start-up nice to be lifted', () => alive(hangingPid) && threadNices(hangingPid).every((n) => n === serving), 2500);
      expect(world.procs.output).toContain(`new pid ${hangingPid} not ready after 1500 ms at nice +10: back to the serving priority`);
    }
    await waitFor('the hanging version to be killed', () => !alive(hangingPid), 10_000);
    // The failed upgrade ends a moment after its process (Node 24 under load: a SIGHUP in between was refused as
    // "an upgrade is already in progress" and the test timed out): the next one starts once it is reported.
    await waitFor('the failed upgrade to be reported', () => world.procs.output.includes(`the new version (pid ${hangingPid}) did not become ready`), 10_000);
    rmSync(hangFile);
    const newPid = await upgradeBySignal(oldPid);
    // Raised back at the handover: threads started during the niced start-up included.
    expect(threadNices(newPid)).toEqual(threadNices(newPid).map(() => serving));
  }, 30_000);

  it('rejects bad options at creation with a clear error', async () => {
    const { Upgrader } = await import('../../src/upgrade/upgrader.js');
    const cases: Array<[object, string]> = [
      [{ pidFile: 'relative.pid' }, 'pidFile must be an absolute file path, got "relative.pid"'],
      [{ upgradeTimeoutMs: -1 }, 'upgradeTimeoutMs must be a positive number of milliseconds, got -1'],
      [{ drainTimeoutMs: 'soon' }, 'drainTimeoutMs must be a positive number of milliseconds, got "soon"'],
      [{ upgradeSignals: ['HUP'] }, 'upgradeSignals must be an array of signal names like "SIGHUP", got ["HUP"]'],
      [{ fdStore: 'yes' }, 'fdStore must be a boolean, got "yes"'],
      [{ pidfile: '/x' }, 'unknown option "pidfile"'],
      [{ startupNice: 25 }, 'startupNice must be an integer from 0 to 19, got 25'],
      [{ stopTimeoutMs: 0 }, 'stopTimeoutMs must be a positive number of milliseconds, got 0'],
      [{ takeover: 'control.sock' }, 'takeover must be an absolute file path, got "control.sock"'],
      [{ fastStopSignals: 'SIGINT' }, 'fastStopSignals must be an array of signal names like "SIGHUP", got "SIGINT"'],
    ];
    for (const [options, message] of cases) {
      const err = await Upgrader.create({ ...options, env: {} } as never).catch((e: unknown) => e);
      expect(err, message).toBeInstanceOf(SdHandoffError);
      expect((err as SdHandoffError).code).toBe('SDH_INVALID_OPTION');
      expect((err as SdHandoffError).message).toBe(message);
    }
    expect(existsSync(world.pidFile)).toBe(false);
  });
});
