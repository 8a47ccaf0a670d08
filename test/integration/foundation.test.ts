/**
 * The foundation on real systemd as PID 1: socket activation, Type=notify, EXTEND_TIMEOUT_USEC, the watchdog,
 * the fd store and MAINPID=, driven with systemctl and real clients inside each suite's container.
 */
import { afterAll, expect, it } from 'vitest';
import { describeEachSuite, pause, scaled, type Container } from './lab/index.js';

const NODE = '/usr/local/bin/node';
const SERVICE = '/project/test/fixtures/sd-service.mjs';
const CLIENT = '/project/test/fixtures/client.mjs';

async function client(c: Container, addr: string): Promise<string> {
  const r = await c.node([CLIENT, addr], { check: true, timeoutMs: 20_000 });
  return r.stdout.trim();
}

async function mainPid(c: Container, unit: string): Promise<number> {
  return Number((await c.show(unit, ['MainPID'])).MainPID);
}

describeEachSuite('foundation', (c) => {
  const installed: string[] = [];
  const install = async (name: string, content: string): Promise<void> => {
    installed.push(name);
    await c.installUnit(name, content);
  };
  afterAll(async () => {
    for (const u of installed.reverse()) await c.removeUnit(u);
  });

  it('socket activation: a TCP and a unix socket, named by FileDescriptorName=, both served', async () => {
    await install(
      'sdh-act-web.socket',
      '[Socket]\nListenStream=127.0.0.1:9101\nFileDescriptorName=web\nService=sdh-act.service\n',
    );
    await install('sdh-act-admin.socket', '[Socket]\nListenStream=/run/sdh-act-admin.sock\nFileDescriptorName=admin\nService=sdh-act.service\n');
    await install(
      'sdh-act.service',
      `[Unit]\nRequires=sdh-act-web.socket sdh-act-admin.socket\n[Service]\nSockets=sdh-act-web.socket sdh-act-admin.socket\nExecStart=${NODE} /project/test/fixtures/activation-child.mjs serve\n`,
    );
    await c.systemctl(['start', 'sdh-act-web.socket', 'sdh-act-admin.socket'], { check: true });
    expect((await c.show('sdh-act.service', ['ActiveState'])).ActiveState).toBe('inactive');
    // The first connection starts the service, which gets both fds with their names.
    const web = await client(c, '127.0.0.1:9101');
    const pid = await mainPid(c, 'sdh-act.service');
    expect(pid).toBeGreaterThan(1);
    expect(web).toBe(`web ${pid}`);
    expect(await client(c, '/run/sdh-act-admin.sock')).toBe(`admin ${pid}`);
    // Both fds arrived, each with its name (systemd does not promise an order across socket units).
    const journal = await c.journal('sdh-act.service');
    const ready = journal.map((e) => String(e.MESSAGE)).find((m) => m.startsWith('{"ready":'));
    expect((JSON.parse(ready!) as { ready: string[] }).ready.sort()).toEqual(['admin', 'web']);
  });

  it('Type=notify: active only after notify.ready(); STATUS= shows in StatusText', async () => {
    await c.exec(['rm', '-f', '/run/sdh-notify-go']);
    await install(
      'sdh-notify.service',
      `[Service]\nType=notify\nEnvironment=GO_FILE=/run/sdh-notify-go\nExecStart=${NODE} ${SERVICE} notify\nTimeoutStartSec=60\n`,
    );
    await c.systemctl(['start', '--no-block', 'sdh-notify.service'], { check: true });
    const waiting = await c.waitFor(async () => {
      const p = await c.show('sdh-notify.service', ['ActiveState', 'StatusText']);
      return p.StatusText === 'waiting for /run/sdh-notify-go' ? p : undefined;
    }, 15_000, { what: 'the STATUS= sent before ready' });
    expect(waiting.ActiveState).toBe('activating');
    // Still not active a second later: nothing but READY=1 makes it so.
    await pause(1000);
    expect((await c.show('sdh-notify.service', ['ActiveState'])).ActiveState).toBe('activating');
    await c.exec(['touch', '/run/sdh-notify-go'], { check: true });
    const ready = await c.waitFor(async () => {
      const p = await c.show('sdh-notify.service', ['ActiveState', 'SubState', 'StatusText']);
      return p.ActiveState === 'active' ? p : undefined;
    }, 15_000, { what: 'active after READY=1' });
    expect(ready).toEqual({ ActiveState: 'active', SubState: 'running', StatusText: 'serving' });
  });

  it('EXTEND_TIMEOUT_USEC lets a start longer than TimeoutStartSec= succeed; without it the start fails', async () => {
    const unit = (extend: string): string =>
      `[Service]\nType=notify\nEnvironment=START_MS=4000 EXTEND=${extend}\nExecStart=${NODE} ${SERVICE} slow-start\nTimeoutStartSec=2\n`;
    await install('sdh-extend.service', unit('1'));
    const ok = await c.systemctl(['start', 'sdh-extend.service'], { timeoutMs: 30_000 });
    expect(ok.code, ok.stderr).toBe(0);
    const p = await c.show('sdh-extend.service', ['ActiveState', 'StatusText']);
    expect(p.ActiveState).toBe('active');
    expect(p.StatusText).toMatch(/^ready after \d+ ms$/);
    await c.systemctl(['stop', 'sdh-extend.service'], { check: true });

    await install('sdh-noextend.service', unit('0'));
    const fail = await c.systemctl(['start', 'sdh-noextend.service'], { timeoutMs: 30_000 });
    expect(fail.code).not.toBe(0);
    expect(await c.show('sdh-noextend.service', ['ActiveState', 'Result'])).toEqual({ ActiveState: 'failed', Result: 'timeout' });
  });

  it('watchdog: the automatic keep-alive satisfies WatchdogSec=; a blocked event loop is killed and restarted', async () => {
    await install('sdh-wd.service', `[Service]\nType=notify\nWatchdogSec=1\nExecStart=${NODE} ${SERVICE} watchdog\n`);
    await c.systemctl(['start', 'sdh-wd.service'], { check: true });
    const pid = await mainPid(c, 'sdh-wd.service');
    await pause(3500);
    expect(await c.show('sdh-wd.service', ['ActiveState', 'NRestarts', 'StatusText'])).toEqual({
      ActiveState: 'active',
      NRestarts: '0',
      StatusText: 'watchdog every 1000000 us',
    });
    expect(await mainPid(c, 'sdh-wd.service')).toBe(pid);
    await c.systemctl(['stop', 'sdh-wd.service'], { check: true });

    await install(
      'sdh-wdblock.service',
      `[Service]\nType=notify\nWatchdogSec=1\nRestart=on-watchdog\nRestartSec=100ms\nEnvironment=BLOCK_AFTER_MS=1500\nExecStart=${NODE} ${SERVICE} watchdog\n`,
    );
    await c.systemctl(['start', 'sdh-wdblock.service'], { check: true });
    const first = await mainPid(c, 'sdh-wdblock.service');
    const restarted = await c.waitFor(async () => {
      const p = await c.show('sdh-wdblock.service', ['NRestarts', 'MainPID']);
      return Number(p.NRestarts) >= 1 && Number(p.MainPID) !== first && Number(p.MainPID) > 0 ? p : undefined;
    }, 20_000, { what: 'a watchdog restart' });
    expect(Number(restarted.MainPID)).not.toBe(first);
    const log = (await c.journal('sdh-wdblock.service')).map((e) => e.MESSAGE).join('\n');
    expect(log).toMatch(/[Ww]atchdog timeout/);
    await c.systemctl(['stop', 'sdh-wdblock.service']);
  });

  it('fd store: the listener comes back (same inode) after restart and after a crash; clients meanwhile are queued, not refused', async () => {
    await install(
      'sdh-fds.service',
      `[Service]\nType=notify\nFileDescriptorStoreMax=4\nRestart=on-failure\nRestartSec=1\nEnvironment=PORT=9102\nExecStart=${NODE} ${SERVICE} fdstore\n`,
    );
    await c.systemctl(['start', 'sdh-fds.service'], { check: true });
    const [pid1, ino] = (await client(c, '127.0.0.1:9102')).split(' ');
    expect((await c.show('sdh-fds.service', ['StatusText', 'NFileDescriptorStore'])).StatusText).toBe(`bound fresh: inode ${ino}`);

    // Clients keep connecting through the restart: none is refused, the kernel queues them in the backlog.
    const during = c.node([CLIENT, '127.0.0.1:9102', '--for', String(scaled(4000))], { check: true, timeoutMs: 30_000 });
    await pause(300);
    await c.systemctl(['restart', 'sdh-fds.service'], { check: true });
    const counts = JSON.parse((await during).stdout) as { ok: number; failed: number; codes: Record<string, number> };
    expect(counts.failed, JSON.stringify(counts.codes)).toBe(0);
    expect(counts.ok).toBeGreaterThan(10);
    const [pid2, ino2] = (await client(c, '127.0.0.1:9102')).split(' ');
    expect(pid2).not.toBe(pid1);
    expect(ino2).toBe(ino);
    expect((await c.show('sdh-fds.service', ['StatusText'])).StatusText).toBe(`from the fd store: inode ${ino}`);

    // A crash (SIGKILL) with Restart=on-failure: the fd store survives that too.
    await c.systemctl(['kill', '-s', 'KILL', 'sdh-fds.service'], { check: true });
    const after = await c.waitFor(async () => {
      const p = await c.show('sdh-fds.service', ['ActiveState', 'MainPID', 'NRestarts']);
      return p.ActiveState === 'active' && Number(p.MainPID) !== Number(pid2) && Number(p.NRestarts) >= 1 ? p : undefined;
    }, 20_000, { what: 'the restart after the crash' });
    const [pid3, ino3] = (await client(c, '127.0.0.1:9102')).split(' ');
    expect(Number(pid3)).toBe(Number(after.MainPID));
    expect(ino3).toBe(ino);
  });

  it('MAINPID= from the main process to a helper child is accepted', async () => {
    await install('sdh-mainpid.service', `[Service]\nType=notify\nExecStart=${NODE} ${SERVICE} mainpid\n`);
    await c.systemctl(['start', 'sdh-mainpid.service'], { check: true });
    const p = await c.waitFor(async () => {
      const s = await c.show('sdh-mainpid.service', ['ActiveState', 'MainPID', 'StatusText']);
      return s.StatusText.startsWith('handed over to ') ? s : undefined;
    }, 10_000, { what: 'the handover status' });
    expect(p.ActiveState).toBe('active');
    expect(p.StatusText).toBe(`handed over to ${p.MainPID}`);
    // The original main process has exited; the unit is still active with the helper as its main process.
    await pause(1000);
    const s = await c.show('sdh-mainpid.service', ['ActiveState', 'MainPID']);
    expect(s).toEqual({ ActiveState: 'active', MainPID: p.MainPID });
    const cmd = await c.exec(['cat', `/proc/${p.MainPID}/cmdline`], { check: true });
    expect(cmd.stdout).toContain('setInterval');
  });
});
