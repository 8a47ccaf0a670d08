/**
 * WorkerPool with real processes: examples/hello-http as a pool (WORKERS=N), its primary upgraded by SIGHUP and its
 * workers restarted in place by SIGUSR2 under load, a worker killed with SIGKILL, a worker that hangs, and new
 * workers that fail; a notify socket bound by the test stands in for systemd's.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startLoad, type Counts } from '../../bench/load.js';
import { alive, childrenOf, readPid, serviceWorld, waitFor } from './helpers.js';

const world = serviceWorld({
  // Workers first (they are not in procs until seen), then every primary.
  beforeKill: ({ procs }) => {
    for (const pid of [...procs.pids]) for (const w of childrenOf(pid)) procs.track(w);
  },
});

async function startPool(workers: number, extra: NodeJS.ProcessEnv = {}): Promise<{ primary: number; workers: number[] }> {
  const { pid: primary } = await world.startHello({ WORKERS: String(workers), DRAIN_TIMEOUT_MS: '8000', ...extra });
  const kids = childrenOf(primary);
  kids.forEach((k) => world.procs.track(k));
  return { primary, workers: kids };
}

const failures = (c: Counts): Omit<Counts, 'ok' | 'total'> => ({ non2xx: c.non2xx, refused: c.refused, reset: c.reset, timeout: c.timeout, other: c.other });
const NONE = { non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0 };

/** SIGHUP to the primary; resolves with the new primary once the old one exited. */
async function upgradePrimary(oldPid: number): Promise<number> {
  process.kill(oldPid, 'SIGHUP');
  const newPid = await waitFor('the PID file to name the new primary', () => {
    const p = readPid(world.pidFile);
    return p !== undefined && p !== oldPid ? p : undefined;
  }, 30_000);
  world.procs.track(newPid);
  await waitFor(`old primary ${oldPid} to exit`, () => !alive(oldPid), 20_000);
  return newPid;
}

describe('WorkerPool (hello-http WORKERS=N) as real processes', () => {
  it('maxSurge 1: a rolling restart and 2 primary upgrades under keep-alive and new-connection load, 0 failed requests', async () => {
    let { primary, workers } = await startPool(3);
    expect(workers).toHaveLength(3);
    const url = `http://127.0.0.1:${world.port}/`;
    const ka = startLoad({ url, mode: 'keepalive', connections: 8, durationMs: 60_000, slow: { path: '/slow', connections: 2 } });
    const nc = startLoad({ url, mode: 'newconn', connections: 4, durationMs: 60_000 });
    await new Promise((r) => setTimeout(r, 500));

    // In place: every worker replaced, the primary unchanged, never more than 4 workers at once.
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, childrenOf(primary).length)), 20);
    process.kill(primary, 'SIGUSR2');
    const replaced = await waitFor('3 new workers', () => {
      const now = childrenOf(primary);
      return now.length === 3 && now.every((p) => !workers.includes(p)) ? now : undefined;
    }, 30_000);
    replaced.forEach((p) => world.procs.track(p));
    clearInterval(watch);
    expect(most).toBeLessThanOrEqual(4);

    const primaries = [primary];
    for (let i = 0; i < 2; i++) {
      primary = await upgradePrimary(primary);
      primaries.push(primary);
      const kids = await waitFor('3 workers of the new primary', () => (childrenOf(primary).length === 3 ? childrenOf(primary) : undefined));
      kids.forEach((p) => world.procs.track(p));
    }
    await new Promise((r) => setTimeout(r, 300));
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    expect(new Set(primaries).size).toBe(3);
    expect(k.counts.ok).toBeGreaterThan(100);
    expect(n.counts.ok).toBeGreaterThan(50);
    expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NONE);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
    expect(k.slow?.counts.ok).toBeGreaterThan(0);
    expect(failures(k.slow!.counts)).toEqual(NONE);
    // The handover reached systemd: MAINPID of each new primary with READY=1.
    for (const p of primaries.slice(1)) expect(world.notify.texts().some((t) => t.startsWith(`MAINPID=${p}\nREADY=1`))).toBe(true);
  }, 80_000);

  it('maxSurge 0: a primary upgrade stops one old worker before starting each new one, 0 failed requests', async () => {
    const { primary, workers } = await startPool(3, { MAX_SURGE: '0', MAX_UNAVAILABLE: '1', DRAIN_TIMEOUT_MS: '5000' });
    const url = `http://127.0.0.1:${world.port}/`;
    const ka = startLoad({ url, mode: 'keepalive', connections: 8, durationMs: 60_000 });
    const nc = startLoad({ url, mode: 'newconn', connections: 4, durationMs: 60_000 });
    await new Promise((r) => setTimeout(r, 500));
    // Count every worker process of either primary while the upgrade runs: never more than 3.
    let most = 0;
    let newPrimary: number | undefined;
    const watch = setInterval(() => {
      newPrimary ??= childrenOf(primary).find((c) => !workers.includes(c));
      const ws = childrenOf(primary).filter((c) => workers.includes(c)).length + (newPrimary ? childrenOf(newPrimary).length : 0);
      most = Math.max(most, ws);
    }, 10);
    const next = await upgradePrimary(primary);
    clearInterval(watch);
    expect(next).toBe(newPrimary);
    const kids = await waitFor('3 new workers', () => (childrenOf(next).length === 3 ? childrenOf(next) : undefined));
    kids.forEach((p) => world.procs.track(p));
    expect(most).toBeLessThanOrEqual(3);
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    expect(k.counts.ok).toBeGreaterThan(100);
    expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NONE);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
  }, 60_000);

  it('a worker killed with SIGKILL is replaced; new connections are never refused', async () => {
    const { primary, workers } = await startPool(2);
    const nc = startLoad({ url: `http://127.0.0.1:${world.port}/`, mode: 'newconn', connections: 4, durationMs: 30_000 });
    await new Promise((r) => setTimeout(r, 300));
    process.kill(workers[0]!, 'SIGKILL');
    const now = await waitFor('a replacement worker', () => {
      const c = childrenOf(primary);
      return c.length === 2 && !c.includes(workers[0]!) ? c : undefined;
    });
    now.forEach((p) => world.procs.track(p));
    await new Promise((r) => setTimeout(r, 500));
    const n = await nc.stop();
    expect(n.counts.ok).toBeGreaterThan(50);
    // The listening socket never closed: nothing refused or timed out. Requests the killed worker had accepted and
    // not answered die with it (at most one per load connection), seen as resets.
    expect(n.counts.refused).toBe(0);
    expect(n.counts.timeout).toBe(0);
    expect(n.counts.non2xx).toBe(0);
    expect(n.counts.reset + n.counts.other).toBeLessThanOrEqual(4);
  }, 30_000);

  it('a worker that stops answering its health ping is killed and replaced', async () => {
    const { primary, workers } = await startPool(2, { WORKER_HANG_ON_SIGUSR2: '1', HEALTH_INTERVAL_MS: '200', HEALTH_TIMEOUT_MS: '600' });
    const hung = workers[1]!;
    const t = Date.now();
    process.kill(hung, 'SIGUSR2');
    await waitFor('the hung worker to be killed', () => !alive(hung), 10_000);
    const took = Date.now() - t;
    expect(took).toBeGreaterThanOrEqual(150);
    expect(took).toBeLessThan(3000);
    const now = await waitFor('a replacement worker', () => (childrenOf(primary).length === 2 ? childrenOf(primary) : undefined));
    now.forEach((p) => world.procs.track(p));
    expect(now).not.toContain(hung);
    expect(world.procs.output).toMatch(new RegExp(`pid ${hung}\\) did not answer its health ping within 600 ms: killed`));
  }, 30_000);

  it('a new version whose workers fail: the primary upgrade fails, the old primary restores its workers and tells systemd; 0 failed requests', async () => {
    const failFile = path.join(world.dir, 'fail');
    const { primary, workers } = await startPool(2, { WORKER_FAIL_FILE: failFile, MAX_SURGE: '0', MAX_UNAVAILABLE: '1', UPGRADE_TIMEOUT_MS: '20000' });
    const nc = startLoad({ url: `http://127.0.0.1:${world.port}/`, mode: 'newconn', connections: 4, durationMs: 40_000 });
    const ka = startLoad({ url: `http://127.0.0.1:${world.port}/`, mode: 'keepalive', connections: 4, durationMs: 40_000 });
    await new Promise((r) => setTimeout(r, 300));
    // Only workers of another primary fail: the old primary's replacements start fine.
    writeFileSync(failFile, String(primary));
    const before = world.notify.messages.length;
    process.kill(primary, 'SIGHUP');
    await waitFor('READY=1 with the failure', () => world.notify.texts().slice(before).find((t) => t.startsWith('READY=1\nSTATUS=upgrade failed')), 30_000);
    expect(readPid(world.pidFile)).toBe(primary);
    expect(alive(primary)).toBe(true);
    // maxSurge 0 retired one old worker before the new one failed: the old primary started a replacement.
    const kids = await waitFor('the old primary back at 2 workers', () => (childrenOf(primary).length === 2 ? childrenOf(primary) : undefined), 15_000);
    kids.forEach((p) => world.procs.track(p));
    expect(kids.filter((k) => workers.includes(k))).toHaveLength(1);
    expect(world.procs.output).toMatch(/failing on purpose before ready/);
    const [n, k] = await Promise.all([nc.stop(), ka.stop()]);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
    expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NONE);
  }, 60_000);

  it('a rolling restart (maxSurge 1) whose first new worker fails stops, keeps every old worker and says so in STATUS=', async () => {
    const failFile = path.join(world.dir, 'fail');
    const { primary, workers } = await startPool(2, { WORKER_FAIL_FILE: failFile });
    writeFileSync(failFile, '');
    const before = world.notify.messages.length;
    process.kill(primary, 'SIGUSR2');
    const status = await waitFor('STATUS=rolling restart failed', () => world.notify.texts().slice(before).find((t) => t.startsWith('STATUS=rolling restart failed')), 30_000);
    expect(status).toMatch(/exited with status 3 before it was ready/);
    expect(childrenOf(primary).filter((p) => workers.includes(p))).toEqual(workers);
    expect(world.procs.output).toContain('rolling restart failed');
  }, 45_000);
});
