/**
 * The Upgrader on real systemd: examples/hello-http with its shipped unit files, reloaded under load with
 * `systemctl reload` (ExecReload= runs `sd-handoff upgrade`), broken and hanging new versions, Type=notify-reload
 * where systemd has it (>= 253), and a restart that keeps the listener through the fd store.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachSuite, pause, scaled, type Container } from './lab/index.js';
import { exampleUnit, PIDFILE, reloadOk, SOCKET, UNIT } from './hello.js';
import { failures, NO_FAILURES as NONE, startLoad } from './load.js';



async function state(c: Container): Promise<{ pid: number; active: string; status: string; pidFile: number }> {
  const p = await c.show(UNIT, ['MainPID', 'ActiveState', 'StatusText']);
  const pidFile = Number((await c.exec(['cat', PIDFILE])).stdout.trim());
  return { pid: Number(p.MainPID), active: p.ActiveState, status: p.StatusText, pidFile };
}

async function helloProcesses(c: Container): Promise<number[]> {
  const r = await c.exec(['pgrep', '-f', 'hello-http/server.mjs']);
  return r.stdout.trim().split('\n').filter(Boolean).map(Number);
}

async function dropIn(c: Container, text: string): Promise<void> {
  await c.writeFile(`/etc/systemd/system/${UNIT}.d/test.conf`, text);
  await c.systemctl(['daemon-reload'], { check: true });
}

describeEachSuite('upgrader', (c) => {
  beforeAll(async () => {
    await c.exec(['rm', '-f', '/run/sdh-hello-fail', '/run/sdh-hello-hang']);
    await c.installUnit(SOCKET, exampleUnit(SOCKET));
    await c.installUnit(UNIT, exampleUnit(UNIT));
    await dropIn(c, `[Service]\nEnvironment=HELLO_FAIL_FILE=/run/sdh-hello-fail HELLO_HANG_FILE=/run/sdh-hello-hang UPGRADE_TIMEOUT_MS=${scaled(5000)}\n`);
    await c.systemctl(['start', SOCKET, UNIT], { check: true });
  });
  afterAll(async () => {
    await c.removeUnit(UNIT);
    await c.removeUnit(SOCKET);
  });

  it('20 × systemctl reload under keep-alive and new-connection load: 0 failed requests, a new MainPID each time, PID file in step', async () => {
    const first = await state(c);
    expect(first.active).toBe('active');
    expect(first.pidFile).toBe(first.pid);
    const ka = await startLoad(c, 'keepalive', 8, ['--slow-path', '/slow', '--slow-connections', '2']);
    const nc = await startLoad(c, 'newconn', 4);
    await pause(1000);
    const pids = [first.pid];
    for (let i = 0; i < 20; i++) {
      await reloadOk(c, UNIT, `reload ${i + 1}`);
      const s = await state(c);
      expect(s.active).toBe('active');
      expect(s.pid).not.toBe(pids.at(-1));
      expect(s.pidFile).toBe(s.pid);
      expect(s.status).toMatch(new RegExp(`^upgraded: pid ${s.pid} took over from ${pids.at(-1)} in \\d+ ms$`));
      pids.push(s.pid);
    }
    await pause(500);
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    expect(new Set(pids).size).toBe(21);
    expect(k.counts.ok).toBeGreaterThan(500);
    expect(n.counts.ok).toBeGreaterThan(200);
    expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NONE);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
    expect(k.slow?.counts.ok).toBeGreaterThan(0);
    expect(failures(k.slow!.counts)).toEqual(NONE);
    // Every old version drained and exited: one hello-http process is left.
    const left = await c.waitFor(async () => {
      const p = await helloProcesses(c);
      return p.length === 1 ? p : undefined;
    }, 45_000, { what: 'old versions to exit' });
    expect(left).toEqual([pids.at(-1)]);
  }, scaled(240_000));

  it('a new version that fails before ready: systemctl reload fails, the old one keeps serving and stays MainPID', async () => {
    const before = await state(c);
    await c.exec(['touch', '/run/sdh-hello-fail'], { check: true });
    try {
      const r = await c.systemctl(['reload', UNIT], { timeoutMs: 60_000 });
      expect(r.code).not.toBe(0);
      const after = await state(c);
      expect(after).toMatchObject({ pid: before.pid, pidFile: before.pid, active: 'active' });
      expect(after.status).toMatch(/^upgrade failed: the new version \(pid \d+\) exited with status 3 before it was ready/);
      const answer = await c.exec(['curl', '-sf', 'http://127.0.0.1:8080/'], { check: true });
      expect(answer.stdout).toContain(`hello from ${before.pid}`);
      const log = (await c.journal(UNIT, { since: '-60s' })).map((e) => String(e.MESSAGE)).join('\n');
      expect(log).toContain('exists: failing on purpose before ready');
    } finally {
      await c.exec(['rm', '-f', '/run/sdh-hello-fail']);
    }
  });

  it('a new version that never becomes ready is killed after the timeout; systemctl reload fails; the old one serves', async () => {
    const before = await state(c);
    await c.exec(['touch', '/run/sdh-hello-hang'], { check: true });
    try {
      const r = await c.systemctl(['reload', UNIT], { timeoutMs: 60_000 });
      expect(r.code).not.toBe(0);
      const after = await state(c);
      expect(after).toMatchObject({ pid: before.pid, pidFile: before.pid, active: 'active' });
      expect(after.status).toContain(`did not become ready within ${scaled(5000)} ms and was killed`);
      expect(await c.waitFor(async () => ((await helloProcesses(c)).length === 1 ? true : undefined), 10_000, { what: 'the hanging version to be gone' })).toBe(true);
      expect((await c.exec(['curl', '-sf', 'http://127.0.0.1:8080/'], { check: true })).stdout).toContain(`hello from ${before.pid}`);
    } finally {
      await c.exec(['rm', '-f', '/run/sdh-hello-hang']);
    }
  });

  it('Type=notify-reload (systemd >= 253): SIGHUP from systemctl reload, RELOADING=1 + MONOTONIC_USEC, then the handover', async () => {
    // Older systemd does not know the type (it ignores the line and falls back to simple): that is why the shipped
    // unit uses Type=notify + ExecReload=sd-handoff upgrade, which works everywhere.
    await c.installUnit('sdh-nr-probe.service', '[Service]\nType=notify-reload\nExecStart=/bin/sleep 1\n');
    const type = (await c.show('sdh-nr-probe.service', ['Type'])).Type;
    await c.removeUnit('sdh-nr-probe.service');
    expect(type).toBe(c.systemdVersion >= 253 ? 'notify-reload' : 'simple');
    if (c.systemdVersion < 253) return;
    await dropIn(
      c,
      `[Service]\nType=notify-reload\nExecReload=\nEnvironment=HELLO_FAIL_FILE=/run/sdh-hello-fail HELLO_HANG_FILE=/run/sdh-hello-hang UPGRADE_TIMEOUT_MS=${scaled(3000)}\n`,
    );
    await c.systemctl(['restart', UNIT], { check: true });
    const ka = await startLoad(c, 'keepalive', 4);
    await pause(500);
    let pid = (await state(c)).pid;
    for (let i = 0; i < 3; i++) {
      const r = await c.systemctl(['reload', UNIT], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      const s = await state(c);
      expect(s.pid).not.toBe(pid);
      expect(s.pidFile).toBe(s.pid);
      pid = s.pid;
    }
    const k = await ka.stop();
    expect(failures(k.counts)).toEqual(NONE);
    expect(k.counts.ok).toBeGreaterThan(100);
  }, scaled(120_000));

  it('systemctl restart with the listener in the fd store (no socket unit): same socket, no refused connection', async () => {
    await c.systemctl(['stop', UNIT, SOCKET], { check: true });
    // The same unit without its socket unit (dependencies cannot be reset by a drop-in): the service binds the port
    // itself and keeps the listener in the fd store (FDSTORE=1 in the shipped unit).
    const standalone = exampleUnit(UNIT).replace(/^(Requires|After)=hello-http\.socket\n/gm, '');
    expect(standalone).not.toContain('hello-http.socket');
    await c.installUnit(UNIT, standalone);
    await dropIn(c, '[Service]\nType=notify\nEnvironment=HOST=127.0.0.1 PORT=8080\n');
    await c.systemctl(['start', UNIT], { check: true });
    const inode = async (): Promise<string> => {
      const r = await c.exec(['ss', '-Hltne', 'sport = :8080'], { check: true });
      return /ino:(\d+)/.exec(r.stdout)?.[1] ?? `none in ${r.stdout}`;
    };
    const ino = await inode();
    expect(Number((await c.show(UNIT, ['NFileDescriptorStore'])).NFileDescriptorStore)).toBeGreaterThanOrEqual(1);
    const nc = await startLoad(c, 'newconn', 4);
    await pause(500);
    const before = (await state(c)).pid;
    await c.systemctl(['restart', UNIT], { check: true, timeoutMs: 60_000 });
    const after = await state(c);
    expect(after.pid).not.toBe(before);
    await pause(500);
    const n = await nc.stop();
    expect(await inode()).toBe(ino);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
    expect(n.counts.ok).toBeGreaterThan(50);
  }, scaled(120_000));
});
