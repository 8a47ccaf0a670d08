/**
 * WorkerPool on real systemd: examples/hello-http run as a pool (WORKERS=3) with its shipped unit files, reloaded
 * with `systemctl reload` (ExecReload= runs `sd-handoff upgrade`) under keep-alive and new-connection load: the
 * primary hands over to a new one that replaces the workers one at a time; MainPID follows, nothing fails.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { exampleUnit, PIDFILE, reloadOk, SOCKET, UNIT } from './hello.js';
import { describeEachSuite, pause, scaled, type Container } from './lab/index.js';
import { failures, NO_FAILURES as NONE, startLoad } from './load.js';



async function processes(c: Container, script: string): Promise<number[]> {
  const r = await c.exec(['pgrep', '-f', `hello-http/${script}`]);
  return r.stdout.trim().split('\n').filter(Boolean).map(Number);
}

async function workersOf(c: Container, pid: number): Promise<number[]> {
  const r = await c.exec(['pgrep', '-P', String(pid), '-f', 'hello-http/worker.mjs']);
  return r.stdout.trim().split('\n').filter(Boolean).map(Number);
}

describeEachSuite('worker pool', (c) => {
  beforeAll(async () => {
    await c.installUnit(SOCKET, exampleUnit(SOCKET));
    await c.installUnit(UNIT, exampleUnit(UNIT));
    await c.writeFile(`/etc/systemd/system/${UNIT}.d/pool.conf`, `[Service]\nEnvironment=WORKERS=3 MAX_SURGE=1 MAX_UNAVAILABLE=0 DRAIN_TIMEOUT_MS=${scaled(10_000)} HEALTH_TIMEOUT_MS=${scaled(3000)} UPGRADE_TIMEOUT_MS=${scaled(60_000)}\n`);
    await c.systemctl(['daemon-reload'], { check: true });
    await c.systemctl(['start', SOCKET, UNIT], { check: true });
  });
  afterAll(async () => {
    await c.removeUnit(UNIT);
    await c.removeUnit(SOCKET);
  });

  it('5 × systemctl reload of a 3-worker pool under load: a new MainPID each time, 3 new workers, 0 failed requests', async () => {
    const first = await c.show(UNIT, ['MainPID', 'ActiveState']);
    expect(first.ActiveState).toBe('active');
    let main = Number(first.MainPID);
    expect(await c.waitFor(async () => ((await workersOf(c, main)).length === 3 ? true : undefined), 15_000, { what: '3 workers' })).toBe(true);
    const ka = await startLoad(c, 'keepalive', 8);
    const nc = await startLoad(c, 'newconn', 4);
    await pause(1000);
    const mains = [main];
    let workers = await workersOf(c, main);
    for (let i = 0; i < 5; i++) {
      await reloadOk(c, UNIT, `reload ${i + 1}`);
      const s = await c.show(UNIT, ['MainPID', 'ActiveState', 'StatusText']);
      expect(s.ActiveState).toBe('active');
      main = Number(s.MainPID);
      expect(main).not.toBe(mains.at(-1));
      expect(Number((await c.exec(['cat', PIDFILE])).stdout.trim())).toBe(main);
      expect(s.StatusText).toMatch(new RegExp(`^upgraded: pid ${main} took over from ${mains.at(-1)} in \\d+ ms$`));
      const now = await workersOf(c, main);
      expect(now).toHaveLength(3);
      expect(now.filter((w) => workers.includes(w))).toEqual([]);
      workers = now;
      mains.push(main);
    }
    await pause(500);
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    expect(new Set(mains).size).toBe(6);
    expect(k.counts.ok).toBeGreaterThan(300);
    expect(n.counts.ok).toBeGreaterThan(100);
    expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NONE);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
    // Old primaries are gone, and so are their workers: one primary and 3 workers are left, all in the unit.
    const left = await c.waitFor(async () => ((await processes(c, 'server.mjs')).length === 1 ? true : undefined), 30_000, { what: 'old primaries to exit' });
    expect(left).toBe(true);
    expect(await processes(c, 'server.mjs')).toEqual([main]);
    expect((await processes(c, 'worker.mjs')).sort()).toEqual([...workers].sort());
    const cgroup = (await c.exec(['systemctl', 'show', '-P', 'ControlGroup', UNIT], { check: true })).stdout.trim();
    const procs = (await c.exec(['cat', `/sys/fs/cgroup${cgroup}/cgroup.procs`])).stdout.trim().split('\n').map(Number);
    for (const w of workers) expect(procs).toContain(w);
  }, scaled(180_000));
});
