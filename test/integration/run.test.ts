/**
 * `sd-handoff run` under real systemd: a Python server (test/fixtures/listen_http.py) as a `Type=notify` unit whose
 * main process is `run`, `ExecReload=` the control command (`sd-handoff upgrade --socket`, which waits and fails
 * honestly). 10 × `systemctl reload` under load with 0 failed requests, MainPID staying `run`; a broken new version
 * fails `systemctl reload` while the old instance keeps serving.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachSuite, pause, scaled, type Container } from './lab/index.js';
import { failures, NO_FAILURES as NONE, startLoad } from './load.js';

const UNIT = 'sdh-run.service';
const URL = 'http://127.0.0.1:8095/';
const FAIL = '/run/sdh-run-fail';
const CLI = '/usr/local/bin/node /project/dist/cli.js';

const UNIT_TEXT = `[Unit]
Description=A Python server run by sd-handoff run

[Service]
Type=notify
RuntimeDirectory=sdh-run
ExecStart=${CLI} run --listen 127.0.0.1:8095=http --ready notify --timeout ${scaled(10)} --drain 10 --control-socket /run/sdh-run/control.sock -- /usr/bin/python3 /project/test/fixtures/listen_http.py --fail-if-exists ${FAIL}
ExecReload=${CLI} upgrade --socket /run/sdh-run/control.sock --timeout ${scaled(30)}
TimeoutStartSec=${scaled(60)}
TimeoutStopSec=${scaled(20)}
KillMode=control-group
`;

async function served(c: Container): Promise<number> {
  return Number((await c.exec(['curl', '-sf', URL], { check: true })).stdout.trim());
}

async function unitState(c: Container): Promise<{ mainPid: number; active: string; status: string }> {
  const p = await c.show(UNIT, ['MainPID', 'ActiveState', 'StatusText']);
  return { mainPid: Number(p.MainPID), active: p.ActiveState, status: p.StatusText };
}

describeEachSuite('sd-handoff run', (c) => {
  beforeAll(async () => {
    await c.exec(['rm', '-f', FAIL]);
    await c.installUnit(UNIT, UNIT_TEXT);
    await c.systemctl(['start', UNIT], { check: true, timeoutMs: 60_000 });
  });
  afterAll(async () => {
    await c.exec(['rm', '-f', FAIL]);
    await c.removeUnit(UNIT);
  });

  it('10 × systemctl reload under new-connection and keep-alive load: 0 failed requests, a new Python pid each time, MainPID stays run', async () => {
    const first = await unitState(c);
    expect(first.active).toBe('active');
    const runPid = first.mainPid;
    expect((await c.exec(['cat', `/proc/${runPid}/cmdline`])).stdout).toContain('cli.js\0run\0');
    let pid = await served(c);
    expect(first.status).toMatch(new RegExp(`^(serving: pid ${pid} \\(/usr/bin/python3\\) ready in \\d+ ms|listen_http ${pid} serving)$`));
    const nc = await startLoad(c, 'newconn', 4, [], URL);
    const ka = await startLoad(c, 'keepalive', 4, ['--slow-path', '/slow', '--slow-connections', '1'], URL);
    await pause(1000);
    const pids = [pid];
    for (let i = 1; i <= 10; i++) {
      const r = await c.systemctl(['reload', UNIT], { timeoutMs: 60_000 });
      expect(r.code, `reload ${i}: ${r.stderr}`).toBe(0);
      const s = await unitState(c);
      expect(s.active).toBe('active');
      expect(s.mainPid).toBe(runPid);
      pid = await served(c);
      expect(pid).not.toBe(pids.at(-1));
      expect(s.status).toMatch(new RegExp(`^(reloaded: pid ${pid} serves \\(took over from ${pids.at(-1)} in \\d+ ms\\)|listen_http ${pid} serving)$`));
      pids.push(pid);
    }
    await pause(500);
    const [n, k] = await Promise.all([nc.stop(), ka.stop()]);
    console.log(`[${c.label}] 10 reloads: newconn ${JSON.stringify(n.counts)}; keepalive (HTTP/1.0) ${JSON.stringify(k.counts)}; slow ${JSON.stringify(k.slow?.counts)}`);
    expect(n.counts.ok).toBeGreaterThan(100);
    expect(k.counts.ok).toBeGreaterThan(100);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
    expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NONE);
    expect(failures(k.slow!.counts)).toEqual(NONE);
    // The old instances drained and exited: the unit's cgroup holds run and one Python server.
    const left = await c.waitFor(async () => {
      const r = await c.exec(['pgrep', '-f', '^/usr/bin/python3 /project/test/fixtures/listen_http']);
      const p = r.stdout.trim().split('\n').filter(Boolean).map(Number);
      return p.length === 1 ? p : undefined;
    }, 30_000, { what: 'old instances to exit' });
    expect(left).toEqual([pid]);
    expect((await c.exec(['cat', `/proc/${pid}/cgroup`])).stdout).toContain(UNIT);
  }, scaled(300_000));

  it('a new version that exits 1 at start: systemctl reload fails, the old one keeps serving, MainPID is still run', async () => {
    const before = await unitState(c);
    const pid = await served(c);
    await c.exec(['touch', FAIL], { check: true });
    try {
      const r = await c.systemctl(['reload', UNIT], { timeoutMs: 60_000 });
      expect(r.code).not.toBe(0);
      const after = await unitState(c);
      expect(after).toMatchObject({ mainPid: before.mainPid, active: 'active' });
      expect(after.status).toMatch(new RegExp(`^reload failed: the program \\(pid \\d+\\) exited with status 1 before it was ready; pid ${pid} still serves$`));
      expect(await served(c)).toBe(pid);
      const log = (await c.journal(UNIT, { since: '-60s' })).map((e) => String(e.MESSAGE)).join('\n');
      expect(log).toContain('exists: failing on purpose at start');
      expect(log).toContain('sd-handoff upgrade: upgrade failed: the program');
    } finally {
      await c.exec(['rm', '-f', FAIL]);
    }
    // Fixed: the next reload works.
    expect((await c.systemctl(['reload', UNIT], { timeoutMs: 60_000 })).code).toBe(0);
    expect(await served(c)).not.toBe(pid);
  }, scaled(120_000));

  it('systemctl stop: SIGTERM reaches the program through run, the unit ends inactive (not failed)', async () => {
    const pid = await served(c);
    await c.systemctl(['stop', UNIT], { check: true, timeoutMs: 60_000 });
    const s = await c.show(UNIT, ['ActiveState', 'Result']);
    expect(s).toEqual({ ActiveState: 'inactive', Result: 'success' });
    expect((await c.exec(['kill', '-0', String(pid)])).code).not.toBe(0);
  }, scaled(60_000));

  it('--watchdog program: the program\'s pings keep WatchdogSec= satisfied across a reload; a program that stops pinging is killed by the watchdog and restarted', async () => {
    const unit = 'sdh-run-wd.service';
    const hang = '/run/sdh-run-wd-hang';
    const url = 'http://127.0.0.1:8096/';
    const watchdogSec = Math.max(2, Math.round(scaled(2000) / 1000));
    const servedHere = async () => Number((await c.exec(['curl', '-sf', url], { check: true })).stdout.trim());
    const state = async () => {
      const p = await c.show(unit, ['MainPID', 'ActiveState', 'NRestarts']);
      return { mainPid: Number(p.MainPID), active: p.ActiveState, restarts: Number(p.NRestarts) };
    };
    await c.exec(['rm', '-f', hang]);
    await c.installUnit(
      unit,
      `[Service]\nType=notify\nRuntimeDirectory=sdh-run-wd\n` +
        `ExecStart=${CLI} run --listen 127.0.0.1:8096=http --ready notify --watchdog program --timeout ${scaled(10)} --drain 10 --control-socket /run/sdh-run-wd/control.sock -- /usr/bin/python3 /project/test/fixtures/listen_http.py --hang-if-exists ${hang}\n` +
        `ExecReload=${CLI} upgrade --socket /run/sdh-run-wd/control.sock --timeout ${scaled(30)}\n` +
        `WatchdogSec=${watchdogSec}\nRestart=on-failure\nRestartSec=200ms\nLimitCORE=0\nTimeoutStopSec=${scaled(20)}\n`,
    );
    try {
      await c.systemctl(['start', unit], { check: true, timeoutMs: 60_000 });
      const first = await state();
      const pid = await servedHere();
      // Twice the watchdog's limit: run does not ping (it says so), the program does, nothing is restarted.
      await new Promise((r) => setTimeout(r, 2 * watchdogSec * 1000));
      expect(await state()).toEqual({ ...first, active: 'active', restarts: 0 });
      expect((await c.journal(unit)).map((e) => String(e.MESSAGE))).toContain(
        `sd-handoff run: watchdog: the program gets WATCHDOG_USEC=${watchdogSec * 1_000_000}; its WATCHDOG=1 pings are passed on, run does not ping`,
      );
      // After a reload the new instance's pings count.
      expect((await c.systemctl(['reload', unit], { timeoutMs: 60_000 })).code).toBe(0);
      const next = await servedHere();
      expect(next).not.toBe(pid);
      await new Promise((r) => setTimeout(r, 2 * watchdogSec * 1000));
      expect(await state()).toEqual({ ...first, active: 'active', restarts: 0 });
      // The serving program stops pinging (it still answers HTTP): systemd's watchdog ends the service, Restart= brings it back.
      await c.exec(['touch', hang], { check: true });
      const back = await c.waitFor(async () => {
        const s = await state();
        return s.restarts === 1 && s.active === 'active' ? s : undefined;
      }, 4 * watchdogSec * 1000 + 20_000, { what: 'a restart by the watchdog' });
      expect(back.mainPid).not.toBe(first.mainPid);
      const log = (await c.journal(unit)).map((e) => String(e.MESSAGE)).join('\n');
      expect(log).toContain(`listen_http ${next}: ${hang} exists: no more watchdog pings`);
      expect(log).toMatch(/Watchdog timeout/);
      expect(await servedHere()).not.toBe(next);
    } finally {
      await c.exec(['rm', '-f', hang]);
      await c.removeUnit(unit);
    }
  }, scaled(120_000));
});
