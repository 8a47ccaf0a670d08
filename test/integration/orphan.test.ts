/**
 * The old version dies (SIGKILL) while a new one is starting. Outside systemd the new version takes the service
 * over (test/native/upgrade-faults.test.ts). Under systemd the main process's death decides: 252 and 257 fail the
 * unit at once and KillMode=control-group ends the new version; 247 keeps the unit "reloading" with no known main PID
 * (and refuses the new version's MAINPID=) until TimeoutStartSec=, so the new version exits by itself (journal event
 * parent-gone). What matters, and is asserted on all three: Restart=on-failure brings the service back with exactly
 * one process, the one systemd calls main, serving, and nothing of the killed generation left.
 */
import { expect, it } from 'vitest';
import { describeEachSuite, pause, scaled, waitFor } from './lab/index.js';

const UNIT = 'sdh-orphan.service';
const PIDFILE = '/run/sdh-orphan/orphan.pid';

describeEachSuite('old version SIGKILLed during an upgrade', (c) => {
  it('the unit fails and the starting new version ends; Restart=on-failure brings back one serving process, the one systemd calls main', async () => {
    await c.installUnit(
      UNIT,
      [
        '[Service]',
        'Type=notify',
        'ExecStart=/usr/local/bin/node /project/test/fixtures/plain-service.mjs',
        `Environment=PORT=8095 PIDFILE=${PIDFILE} START_DELAY_MS=${scaled(3000)}`,
        `PIDFile=${PIDFILE}`,
        'RuntimeDirectory=sdh-orphan',
        'Restart=on-failure',
        'RestartSec=200ms',
        // systemd 247 keeps a unit whose main process died during RELOADING=1 in "reloading" until this timeout.
        'TimeoutStartSec=5s',
        '',
      ].join('\n'),
    );
    const journal = async (): Promise<string> => (await c.journal(UNIT, { since: '-60s' })).map((e) => `${e._PID ?? ''} ${String(e.MESSAGE)}`).join('\n');
    try {
      await c.systemctl(['start', UNIT], { check: true });
      const oldPid = Number((await c.show(UNIT, ['MainPID'])).MainPID);
      await c.exec(['kill', '-HUP', String(oldPid)], { check: true });
      const newPid = await waitFor(async () => {
        const r = await c.exec(['cat', `/proc/${oldPid}/task/${oldPid}/children`]);
        return Number(r.stdout.trim().split(/\s+/)[0]) || undefined;
      }, scaled(10_000), { what: 'the new version to start' });
      await c.exec(['kill', '-KILL', String(oldPid)], { check: true });
      const restarted = await waitFor(async () => {
        const s = await c.show(UNIT, ['MainPID', 'ActiveState', 'NRestarts']);
        return s.ActiveState === 'active' && s.NRestarts === '1' && Number(s.MainPID) > 0 ? Number(s.MainPID) : undefined;
      }, scaled(20_000), { what: 'the unit to be restarted' }).catch(async (err: Error) => {
        throw new Error(`${err.message}\n${JSON.stringify(await c.show(UNIT, ['MainPID', 'ActiveState', 'SubState', 'Result', 'NRestarts']))}\n${await journal()}`);
      });
      expect(restarted).not.toBe(oldPid);
      expect(restarted).not.toBe(newPid);
      await pause(500);
      // One process serves, it is the one systemd calls main, and the killed generation's new version is gone.
      const cgroup = (await c.show(UNIT, ['ControlGroup'])).ControlGroup;
      const procs = (await c.exec(['cat', `/sys/fs/cgroup${cgroup}/cgroup.procs`])).stdout.trim().split('\n').map(Number);
      expect(procs, await journal()).toEqual([restarted]);
      expect((await c.exec(['curl', '-s', 'http://127.0.0.1:8095/'])).stdout).toBe(`hello from ${restarted}\n`);
      expect((await c.exec(['cat', PIDFILE])).stdout.trim()).toBe(String(restarted));
      expect(await journal()).toMatch(/Main process exited, code=killed, status=9\/KILL/);
    } finally {
      await c.removeUnit(UNIT);
    }
  });
});
