/**
 * Faults inside the old process during an upgrade, with the old Upgrader in this process (its notifier made to
 * fail where a test says) and a real new version (test/fixtures/plain-service.mjs) started by it.
 */
import { mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import { Notifier } from '../../src/notify.js';
import { Upgrader, type UpgradeLogEntry } from '../../src/upgrade/upgrader.js';
import { ROOT, alive, childrenOf, readPid, serviceWorld, waitFor } from './helpers.js';

const world = serviceWorld({ pidFile: 'faults.pid' });
const FIXTURE = path.join(ROOT, 'test/fixtures/plain-service.mjs');

/** A notifier on the world's notify socket whose `reloading` / `mainPid` throw while their flag is set. */
class FaultyNotifier extends Notifier {
  failReloading = false;
  failMainPid = false;
  override reloading(status?: string): boolean {
    if (this.failReloading) throw new SdHandoffError('sendmsg', { errno: 111, syscall: 'sendmsg', path: '/run/systemd/notify' });
    return super.reloading(status);
  }
  override mainPid(pid: number, also: { ready?: boolean; status?: string } = {}): boolean {
    if (this.failMainPid) throw new SdHandoffError('sendmsg', { errno: 111, syscall: 'sendmsg', path: '/run/systemd/notify' });
    return super.mainPid(pid, also);
  }
}

async function oldVersion(options: { pidFile?: string } = {}): Promise<{ upg: Upgrader; notifier: FaultyNotifier; logs: UpgradeLogEntry[] }> {
  const env = { PATH: process.env.PATH, NOTIFY_SOCKET: world.notify.path, PORT: String(world.port) };
  const notifier = new FaultyNotifier({ env });
  const logs: UpgradeLogEntry[] = [];
  const upg = await Upgrader.create({
    env,
    notifier,
    command: process.execPath,
    args: [FIXTURE],
    upgradeSignals: [],
    stopSignals: [],
    fastStopSignals: [],
    startupNice: 0,
    upgradeTimeoutMs: 10_000,
    drainTimeoutMs: 1000,
    exitWhenDrained: false,
    log: (e) => logs.push(e),
    ...options,
  });
  await upg.listen('http', { port: world.port, host: '127.0.0.1' }, { server: http.createServer((_, res) => res.end('old\n')) });
  await upg.ready();
  return { upg, notifier, logs };
}

const failing = (p: Promise<unknown>): Promise<SdHandoffError> => p.then(() => Promise.reject(new Error('expected a rejection')), (e: SdHandoffError) => e);

describe('Upgrader: faults in the old process', () => {
  it('RELOADING=1 that cannot be sent fails that upgrade only: the next one is not refused as "in progress"', async () => {
    const { upg, notifier } = await oldVersion();
    notifier.failReloading = true;
    const first = await failing(upg.upgrade());
    // The upgrade failed (the code users match on); the errno is its cause, named in the message.
    expect(first.code).toBe('SDH_UPGRADE_FAILED');
    expect(first.message).toContain('ECONNREFUSED');
    expect((first.cause as SdHandoffError).code).toBe('ECONNREFUSED');
    expect(upg.state).toBe('ready');
    notifier.failReloading = false;
    notifier.failMainPid = true; // the second upgrade fails later, at the handover; it must have started at all
    expect((await failing(upg.upgrade())).code).not.toBe('SDH_UPGRADE_IN_PROGRESS');
    await upg.stop();
  }, 30_000);

  it('MAINPID= that cannot be sent: the ready new version is killed, not left holding the listeners', async () => {
    const { upg, notifier, logs } = await oldVersion();
    notifier.failMainPid = true;
    expect((await failing(upg.upgrade())).code).toBe('SDH_UPGRADE_FAILED');
    const newPid = logs.find((e) => e.event === 'upgrade-failed')?.newPid as number;
    expect(newPid).toBeGreaterThan(0);
    world.procs.track(newPid);
    await waitFor(`the new version (pid ${newPid}) to be killed`, () => !alive(newPid), 5000);
    expect(upg.state).toBe('ready');
    await upg.stop();
  }, 30_000);

  it('a PID file that cannot be written on the failure path still gives READY=1 after RELOADING=1, and is logged', async () => {
    const { upg, notifier, logs } = await oldVersion({ pidFile: world.pidFile });
    // The PID file's path becomes a directory: rename() onto it fails (EISDIR), as ENOSPC or EROFS would.
    rmSync(world.pidFile);
    mkdirSync(world.pidFile);
    notifier.failMainPid = true;
    await failing(upg.upgrade());
    // The recorder reads datagrams on the thread pool: wait for the answer to RELOADING=1.
    const ready = await waitFor('READY=1 after RELOADING=1', () => {
      const texts = world.notify.texts();
      const reloading = texts.findIndex((t) => t.startsWith('RELOADING=1'));
      return reloading >= 0 && texts.slice(reloading + 1).find((t) => t.startsWith('READY=1'));
    }, 3000);
    expect(ready).toMatch(/^READY=1\nSTATUS=upgrade failed: /);
    expect(logs.map((e) => e.event)).toContain('pid-file-failed');
    rmSync(world.pidFile, { recursive: true });
    await upg.stop();
  }, 30_000);

  it('a stop during a beforeUpgrade hook stops the upgrade: no new version is started', async () => {
    const { upg, logs } = await oldVersion();
    let release = (): void => {};
    upg.beforeUpgrade(() => new Promise<void>((r) => (release = r)));
    const upgrading = failing(upg.upgrade());
    await waitFor('the hook to run', () => logs.some((e) => e.event === 'upgrade-started'));
    const stopping = upg.stop();
    release();
    expect((await upgrading).code).toBe('SDH_STOPPED');
    await stopping;
    expect(logs.find((e) => e.event === 'upgrade-failed')?.newPid).toBeUndefined();
    expect(world.notify.texts().some((t) => t.startsWith('MAINPID='))).toBe(false);
  }, 30_000);
});

describe('Upgrader: a forged SDH_UPGRADE', () => {
  it('with nothing behind it (fd 3 is Node\'s own epoll fd) is refused with SDH_INVALID_ENV naming fd 3', async () => {
    const script = `import('sd-handoff').then(async ({ Upgrader }) => {
      try { await Upgrader.create({ upgradeSignals: [], stopSignals: [], fastStopSignals: [] }); console.log('created'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }
      process.exit(0);
    })`;
    const forged = JSON.stringify({ v: 1, parent: process.pid, names: ['http'], id: 'forged' });
    const child = world.procs.start('-e', { SDH_UPGRADE: forged }, [script]);
    await new Promise((r) => child.once('exit', r));
    const line = world.procs.output.trim().split('\n').pop()!;
    expect(JSON.parse(line)).toEqual({ code: 'SDH_INVALID_ENV', message: expect.stringMatching(/^SDH_UPGRADE is set but fd 3 is not the upgrade channel \(a unix stream socket\) \(it is /) });
  });
});

describe('Upgrader: the old version dies during an upgrade', () => {
  async function startThenKillOld(env: NodeJS.ProcessEnv, afterMs: number): Promise<{ oldPid: number; newPid: number }> {
    world.procs.start(FIXTURE, { PORT: String(world.port), PIDFILE: world.pidFile, START_DELAY_MS: '1500', ...env });
    const oldPid = await waitFor('the PID file', () => readPid(world.pidFile));
    world.procs.track(oldPid);
    process.kill(oldPid, 'SIGHUP');
    const newPid = await waitFor('the new version to start', () => childrenOf(oldPid)[0]);
    world.procs.track(newPid);
    await new Promise((r) => setTimeout(r, afterMs));
    process.kill(oldPid, 'SIGKILL');
    return { oldPid, newPid };
  }

  // At once: the new version has not read SDH_UPGRADE yet, and finds a parent pid that is gone. Later: it is
  // starting (its Upgrader exists) when the channel ends.
  it.each([0, 700])('no systemd, SIGKILLed %i ms into the new version\'s start: the new one takes over (PID file), serves and keeps printing', async (afterMs) => {
    const { newPid } = await startThenKillOld({}, afterMs);
    await waitFor('the PID file to name the new version', () => readPid(world.pidFile) === newPid, 10_000).catch((err: Error) => {
      throw new Error(`${err.message}; PID file: ${readPid(world.pidFile)}; output:\n${world.procs.output}`);
    });
    // It serves, and writing to its stdout (a pipe into the dead parent until then) does not kill it.
    for (let i = 0; i < 3; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port: world.port, path: `/${i}`, agent: false }, (res) => {
          let b = '';
          res.on('data', (d: Buffer) => (b += d.toString()));
          res.on('end', () => resolve(b));
        }).on('error', reject);
      });
      expect(body).toBe(`hello from ${newPid}\n`);
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(newPid)).toBe(true);
    expect(world.procs.output).toMatch(new RegExp(`pid ${newPid} serves: the upgrading parent \\(pid \\d+\\) exited before handing over`));
  }, 30_000);

  it('under systemd (NOTIFY_SOCKET), the orphaned new version exits at once, saying why, and claims nothing', async () => {
    const { oldPid, newPid } = await startThenKillOld({ NOTIFY_SOCKET: world.notify.path }, 0);
    await waitFor(`the new version (pid ${newPid}) to exit`, () => !alive(newPid), 5000);
    expect(world.procs.output).toContain(`pid ${newPid} exits: the upgrading parent (pid ${oldPid}) exited before handing over`);
    expect(world.notify.messages.some((m) => m.pid === newPid)).toBe(false);
    expect(readPid(world.pidFile)).not.toBe(newPid);
  }, 30_000);
});
