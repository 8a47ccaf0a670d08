import { describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import { Notifier, checkFdName } from '../../src/notify.js';
import { fakeAddon } from './fakes.js';

function notifier(env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/systemd/notify' }, pid = 100) {
  const addon = fakeAddon();
  const n = new Notifier({ env, pid, addon: () => addon, monotonicUsec: () => 123456789n });
  return { n, addon };
}

function thrown(fn: () => unknown): SdHandoffError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SdHandoffError);
    return err as SdHandoffError;
  }
  throw new Error('expected a throw');
}

describe('notify: exact bytes of every assignment', () => {
  it.each<[string, (n: Notifier) => boolean, string]>([
    ['ready()', (n) => n.ready(), 'READY=1'],
    ['ready(status)', (n) => n.ready('serving 3 listeners'), 'READY=1\nSTATUS=serving 3 listeners'],
    ['reloading()', (n) => n.reloading(), 'RELOADING=1\nMONOTONIC_USEC=123456789'],
    ['reloading(status)', (n) => n.reloading('upgrading'), 'RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=upgrading'],
    ['stopping()', (n) => n.stopping(), 'STOPPING=1'],
    ['status(text)', (n) => n.status('draining 4 connections'), 'STATUS=draining 4 connections'],
    ['mainPid(pid)', (n) => n.mainPid(4321), 'MAINPID=4321'],
    ['mainPid(pid, ready+status)', (n) => n.mainPid(4321, { ready: true, status: 'handed over' }), 'MAINPID=4321\nREADY=1\nSTATUS=handed over'],
    ['errno(n)', (n) => n.errno(5), 'ERRNO=5'],
    ['extendTimeout(ms)', (n) => n.extendTimeout(30_000), 'EXTEND_TIMEOUT_USEC=30000000'],
    ['watchdog()', (n) => n.watchdog(), 'WATCHDOG=1'],
    ['fdStoreRemove(name)', (n) => n.fdStoreRemove('http'), 'FDSTOREREMOVE=1\nFDNAME=http'],
    ['send(raw)', (n) => n.send('X_CUSTOM=1'), 'X_CUSTOM=1'],
  ])('%s', (_label, call, bytes) => {
    const { n, addon } = notifier();
    expect(call(n)).toBe(true);
    expect(addon.sent).toEqual([{ path: '/run/systemd/notify', text: bytes, fds: [] }]);
  });

  it('fdStore sends FDSTORE=1 and FDNAME with the fds, and FDPOLL=0 when asked', () => {
    const { n, addon } = notifier();
    n.fdStore('http', [7, 8]);
    n.fdStore('state', [9], { poll: false });
    expect(addon.sent).toEqual([
      { path: '/run/systemd/notify', text: 'FDSTORE=1\nFDNAME=http', fds: [7, 8] },
      { path: '/run/systemd/notify', text: 'FDSTORE=1\nFDNAME=state\nFDPOLL=0', fds: [9] },
    ]);
  });

  it('splits 300 fds into messages of at most 253, all arriving in order', () => {
    const { n, addon } = notifier({ NOTIFY_SOCKET: '@abstract/notify' });
    const fds = Array.from({ length: 300 }, (_, i) => 1000 + i);
    expect(n.fdStore('many', fds)).toBe(true);
    expect(addon.sent.map((m) => m.fds.length)).toEqual([253, 47]);
    expect(addon.sent.flatMap((m) => m.fds)).toEqual(fds);
    expect(new Set(addon.sent.map((m) => `${m.path} ${m.text}`))).toEqual(new Set(['@abstract/notify FDSTORE=1\nFDNAME=many']));
  });
});

describe('notify: not under systemd is a no-op returning false', () => {
  it.each([{ env: {} }, { env: { NOTIFY_SOCKET: '' } }])('$env', ({ env }) => {
    const { n, addon } = notifier(env);
    expect(n.ready()).toBe(false);
    expect(n.stopping()).toBe(false);
    expect(n.fdStore('http', [3])).toBe(false);
    expect(n.startWatchdog()).toBe(false);
    expect(addon.sent).toEqual([]);
  });

  it('barrier resolves false', async () => {
    const { n } = notifier({});
    await expect(n.barrier(100)).resolves.toBe(false);
  });
});

describe('notify: bad input', () => {
  it.each([
    { env: { NOTIFY_SOCKET: 'run/notify' }, message: 'NOTIFY_SOCKET="run/notify" is neither an absolute path nor an @abstract name' },
    { env: { NOTIFY_SOCKET: 'vsock:2:1234' }, message: 'NOTIFY_SOCKET="vsock:2:1234" is neither an absolute path nor an @abstract name' },
    { env: { NOTIFY_SOCKET: '@' }, message: 'NOTIFY_SOCKET="@" names no socket' },
  ])('NOTIFY_SOCKET $env.NOTIFY_SOCKET', ({ env, message }) => {
    const { n } = notifier(env);
    const err = thrown(() => n.ready());
    expect(err.code).toBe('SDH_NOTIFY_SOCKET');
    expect(err.message).toBe(message);
  });

  it.each([
    { name: 'a:b', message: 'FDNAME "a:b" holds ":" (LISTEN_FDNAMES separates names with it)' },
    { name: '', message: 'FDNAME must not be empty' },
    { name: 'x'.repeat(256), message: 'is 256 characters; at most 255' },
    { name: 'tab\there', message: 'FDNAME "tab\\there" holds a control or non-ASCII character at index 3' },
    { name: 'é', message: 'holds a control or non-ASCII character at index 0' },
  ])('FDNAME $name', ({ name, message }) => {
    const { n, addon } = notifier();
    const err = thrown(() => n.fdStore(name, [3]));
    expect(err.code).toBe('SDH_INVALID_NAME');
    expect(err.message).toContain(message);
    expect(addon.sent).toEqual([]);
  });

  it('accepts a name of exactly 255 printable characters', () => {
    expect(checkFdName('x'.repeat(255))).toHaveLength(255);
  });

  it.each<[string, (n: Notifier) => unknown, string]>([
    ['status with a newline', (n) => n.status('a\nREADY=1'), 'status "a\\nREADY=1" must not hold a newline or NUL'],
    ['mainPid(0)', (n) => n.mainPid(0), 'pid must be an integer >= 1, got 0'],
    ['mainPid(1.5)', (n) => n.mainPid(1.5), 'pid must be an integer >= 1, got 1.5'],
    ['errno(-1)', (n) => n.errno(-1), 'errno must be an integer >= 0, got -1'],
    ['extendTimeout(NaN)', (n) => n.extendTimeout(Number.NaN), 'ms must be an integer >= 0, got NaN'],
    ['fdStore with no fds', (n) => n.fdStore('x', []), 'fds must be a non-empty array of fd numbers, got []'],
    ['fdStore with a bad fd', (n) => n.fdStore('x', [-1]), 'fds must be a non-empty array of fd numbers, got [-1]'],
  ])('%s', (_label, call, message) => {
    const { n, addon } = notifier();
    const err = thrown(() => call(n));
    expect(err.code).toBe('SDH_INVALID_OPTION');
    expect(err.message).toBe(message);
    expect(addon.sent).toEqual([]);
  });
});

describe('notify: watchdog', () => {
  it.each([
    { env: {}, usec: 0 },
    { env: { WATCHDOG_USEC: '2000000' }, usec: 2_000_000 },
    { env: { WATCHDOG_USEC: '2000000', WATCHDOG_PID: '100' }, usec: 2_000_000 },
    { env: { WATCHDOG_USEC: '2000000', WATCHDOG_PID: '99' }, usec: 0 },
  ])('$env -> $usec', ({ env, usec }) => {
    const { n } = notifier({ NOTIFY_SOCKET: '/run/n', ...env });
    expect(n.watchdogUsec()).toBe(usec);
  });

  it.each([{ WATCHDOG_USEC: 'soon' }, { WATCHDOG_USEC: '0' }, { WATCHDOG_USEC: '-5' }])('WATCHDOG_USEC=%o is an error', (env) => {
    const { n } = notifier({ NOTIFY_SOCKET: '/run/n', ...env });
    const err = thrown(() => n.watchdogUsec());
    expect(err.code).toBe('SDH_INVALID_ENV');
    expect(err.message).toContain(`WATCHDOG_USEC="${env.WATCHDOG_USEC}"`);
  });

  it('ready() starts pinging at half the interval; stopWatchdog ends it', async () => {
    const { n, addon } = notifier({ NOTIFY_SOCKET: '/run/n', WATCHDOG_USEC: '100000' });
    n.ready();
    await new Promise((r) => setTimeout(r, 180));
    n.stopWatchdog();
    const pings = addon.sent.filter((m) => m.text === 'WATCHDOG=1').length;
    expect(pings).toBeGreaterThanOrEqual(2);
    expect(pings).toBeLessThanOrEqual(4);
    const after = addon.sent.length;
    await new Promise((r) => setTimeout(r, 120));
    expect(addon.sent.length).toBe(after);
  });

  it('does not ping for another process (WATCHDOG_PID)', async () => {
    const { n, addon } = notifier({ NOTIFY_SOCKET: '/run/n', WATCHDOG_USEC: '50000', WATCHDOG_PID: '7' });
    n.ready();
    await new Promise((r) => setTimeout(r, 80));
    n.stopWatchdog();
    expect(addon.sent.map((m) => m.text)).toEqual(['READY=1']);
  });
});

describe('notify: watchdog keep-alive', () => {
  it('a WatchdogSec= longer than Node timers allow (50 days) is not pinged every millisecond', async () => {
    const usec = 50 * 24 * 3600 * 1_000_000;
    const { n, addon } = notifier({ NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: String(usec) });
    expect(n.startWatchdog()).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    n.stopWatchdog();
    // An overflowing interval runs after 1 ms: about 100 WATCHDOG=1 datagrams here.
    expect(addon.sent.filter((m) => m.text === 'WATCHDOG=1')).toEqual([]);
  });
});
