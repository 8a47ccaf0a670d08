/**
 * `sd-handoff run` with fakes: argument errors and their messages, the --listen table, the notify proxy's reading
 * of messages, and the supervisor's protocol with systemd (READY/RELOADING/STATUS, MAINPID ignored, failed reloads)
 * driven by fake processes and a fake notify socket.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { EXIT, main, type CliIo } from '../../src/cli.js';
import type { NativeAddon, Received } from '../../src/native.js';
import { Notifier } from '../../src/notify.js';
import { Runner, exitStatus, LISTEN_PID_WRAPPER, WATCHDOG_PID_WRAPPER, type RunWorld } from '../../src/run.js';
import { interpretNotify, ownerOf } from '../../src/run/notify-proxy.js';
import { checkRunOptions, parseRunListen, splitCommand } from '../../src/run/options.js';
import { acceptedInode, probeHost } from '../../src/run/ready-port.js';

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const o: string[] = [];
  const e: string[] = [];
  const io: CliIo = { out: (t) => o.push(t), err: (t) => e.push(t), env: {} };
  const code = await main(argv, io);
  return { code, out: o.join(''), err: e.join('') };
}

describe('sd-handoff run: usage', () => {
  it('--help prints the run help, exit 0; the main help lists run', async () => {
    const h = await cli(['run', '--help']);
    expect(h.code).toBe(EXIT.OK);
    expect(h.out).toMatch(/^Usage: sd-handoff run \[--listen ADDR\[=NAME\]\]\.\.\. \[--ready notify\|port\|delay\]/);
    expect(h.out).toContain("LISTEN_PID=$$ exec \"$0\" \"$@\"");
    expect(h.out).toContain('--workers N');
    expect((await cli(['--help'])).out).toContain('sd-handoff run [--listen ADDR[=NAME]]...');
  });

  it.each([
    [['run', '--listen', '8080'], 'no program to run: sd-handoff run [options] -- CMD ARGS...'],
    [['run', '--listen', '8080', 'python3', 'app.py'], 'run: the program goes after `--`: sd-handoff run [options] -- python3 app.py'],
    [['run', '--ready', 'http', '--', 'x'], '--ready must be one of notify, port, delay, got "http"'],
    [['run', '--ready', 'notify', '--delay', '2', '--', 'x'], '--delay is for --ready delay (this is --ready notify)'],
    [['run', '--ready', 'delay', '--delay', '0', '--', 'x'], '--delay must be a positive number of seconds, got "0"'],
    [['run', '--timeout', 'soon', '--', 'x'], '--timeout must be a positive number of seconds, got "soon"'],
    [['run', '--watchdog', 'program', '--', 'x'], "--watchdog program needs --ready notify: the program's WATCHDOG=1 pings reach systemd through the notify socket run gives it (this is --ready port)"],
    [['run', '--drain', '', '--', 'x'], '--drain must be a positive number of seconds, got ""'],
    [['run', '--listen', 'localhost:80', '--', 'x'], '--listen "localhost:80": "localhost" is not an IPv4 address'],
    [['run', '--listen', '70000', '--', 'x'], '--listen "70000": port "70000" is not 1-65535'],
    [['run', '--listen', '/run/a.sock', '--', 'x'], '--ready port probes a TCP listener and none of --listen /run/a.sock is TCP: use --ready notify or --ready delay'],
    [['run', '--listen', '8080=http', '--listen', '8081=http', '--', 'x'], '--listen "8081=http": the name "http" is already given to --listen "8080=http"'],
    [['run', '--control-socket', 'ctl.sock', '--', 'x'], '--control-socket must be an absolute path or @abstract, got "ctl.sock"'],
    [['run', '--bogus', '--', 'x'], "Unknown option '--bogus'"],
  ])('%j: exit 2 and says %j', async (argv, message) => {
    const r = await cli(argv);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.out).toBe('');
    expect(r.err).toContain(message);
    expect(r.err).toContain('Run `sd-handoff --help`.');
  });

  it('--workers is documented and refused with a clear "not yet" (the pool needs programs written for it)', async () => {
    const r = await cli(['run', '--workers', '4', '--', 'node', 'app.js']);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toMatch(/^sd-handoff: --workers is not supported yet: sd-handoff's worker pool \(WorkerPool\) runs worker scripts written against its Worker API/);
  });

  it('arguments after -- pass through untouched, options included; defaults; the control socket from the environment', () => {
    const { options, command } = splitCommand(['--ready', 'delay', '--', 'prog', '--ready', 'notify', '--', "a 'b' $HOME"]);
    expect(options).toEqual(['--ready', 'delay']);
    expect(command).toEqual(['prog', '--ready', 'notify', '--', "a 'b' $HOME"]);
    const o = checkRunOptions({ listen: ['127.0.0.1:8095=http'] }, command, { SDH_CONTROL_SOCKET: '/run/x/control.sock' });
    expect(o).toMatchObject({ ready: 'port', delayMs: 1000, timeoutMs: 60_000, drainMs: 30_000, controlSocket: '/run/x/control.sock', command: 'prog' });
    expect(o.args).toEqual(['--ready', 'notify', '--', "a 'b' $HOME"]);
    expect(checkRunOptions({ ready: 'delay', delay: '0.25', timeout: '5', drain: '2.5' }, ['p'])).toMatchObject({ delayMs: 250, timeoutMs: 5000, drainMs: 2500 });
    expect(checkRunOptions({ 'control-socket': '/c' }, ['p'], { SDH_CONTROL_SOCKET: '/env' }).controlSocket).toBe('/c');
    expect(LISTEN_PID_WRAPPER).toBe('LISTEN_PID=$$ exec "$0" "$@"');
  });

  it('--watchdog: self by default; program only with --ready notify; anything else names the value', () => {
    expect(checkRunOptions({}, ['p']).watchdog).toBe('self');
    expect(checkRunOptions({ ready: 'notify', watchdog: 'program' }, ['p']).watchdog).toBe('program');
    expect(() => checkRunOptions({ watchdog: 'often' }, ['p'])).toThrow('--watchdog must be one of self, program, got "often"');
    expect(() => checkRunOptions({ watchdog: 'program', ready: 'port' }, ['p'])).toThrow(
      "--watchdog program needs --ready notify: the program's WATCHDOG=1 pings reach systemd through the notify socket run gives it (this is --ready port)",
    );
    try {
      checkRunOptions({ watchdog: 'often' }, ['p']);
    } catch (e) {
      expect(e).toMatchObject({ code: 'SDH_INVALID_OPTION', option: 'watchdog', value: 'often' });
    }
  });
});

describe('sd-handoff run: --listen addresses (one parser with units render)', () => {
  it.each([
    ['8080', { kind: 'stream', address: { port: 8080 } }],
    ['127.0.0.1:8095=http', { kind: 'stream', name: 'http', address: { host: '127.0.0.1', port: 8095 } }],
    ['[::1]:443=https', { kind: 'stream', name: 'https', address: { host: '::1', port: 443 } }],
    ['[::]:80', { kind: 'stream', address: { host: '::', port: 80 } }],
    ['/run/app/http.sock', { kind: 'stream', address: { path: '/run/app/http.sock' } }],
    ['@app-admin=admin', { kind: 'stream', name: 'admin', address: { path: '@app-admin' } }],
    ['udp:127.0.0.1:5353=dns', { kind: 'packet', name: 'dns', address: { host: '127.0.0.1', port: 5353, type: 'udp4' } }],
    ['udp:[::1]:5353', { kind: 'packet', address: { host: '::1', port: 5353, type: 'udp6' } }],
    ['udp:9999', { kind: 'packet', address: { port: 9999 } }],
  ])('%s', (spec, expected) => {
    expect(parseRunListen(spec)).toEqual({ spec, ...expected });
  });

  it.each([
    ['host.example:80', '"host.example" is not an IPv4 address'],
    ['[nope]:80', '"nope" is not an IPv6 address'],
    ['udp:/run/x.sock', 'udp: takes an IP address or a port'],
    ['8080=bad:name', 'fd name "bad:name" must be 1-255 of A-Z a-z 0-9 _ . -'],
    ['relative.sock', 'not an address'],
    ['0', 'port "0" is not 1-65535'],
    ['/run/%i.sock', '"%" is a systemd specifier: only with --template'],
  ])('%s is refused: %s', (spec, message) => {
    expect(() => parseRunListen(spec)).toThrow(message);
  });

  it('--ready port probes the first TCP listener; wildcard addresses are probed on loopback', () => {
    expect(() => checkRunOptions({ listen: ['/run/a.sock', '8080'] }, ['p'])).not.toThrow();
    expect(probeHost('0.0.0.0', 'inet')).toBe('127.0.0.1');
    expect(probeHost('::', 'inet6')).toBe('::1');
    expect(probeHost('127.0.0.2', 'inet')).toBe('127.0.0.2');
  });

  it('/proc/net/tcp: the accepted end of a probe has an inode, 0 while it waits in the backlog', () => {
    const table = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:46B1 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 2042755 2 0 100 0 0 10 0',
      '3247: 0100007F:46B1 0100007F:E854 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 0 0 10 -1',
      '3248: 0100007F:46B1 0100007F:E855 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0 20 0 0 10 -1',
      '3578: 0100007F:E854 0100007F:46B1 01 00000000:00000000 00:00000000 00000000     0        0 2042756 2 0 20 0 0 10 -1',
    ].join('\n');
    expect(acceptedInode(table, 0x46b1, 0xe854)).toBe(0);
    expect(acceptedInode(table, 0x46b1, 0xe855)).toBe(777);
    expect(acceptedInode(table, 0x46b1, 0xe856)).toBeUndefined();
  });
});

describe('sd-handoff run: the notify proxy reads messages', () => {
  it.each([
    ['READY=1', { ready: true, ignored: [] }],
    ['READY=1\nSTATUS=serving 3 sockets', { ready: true, status: 'serving 3 sockets', ignored: [] }],
    ['STATUS=a=b', { ready: false, status: 'a=b', ignored: [] }],
    ['MAINPID=4242\nREADY=1', { ready: true, ignored: ['MAINPID=4242'] }],
    ['RELOADING=1\nMONOTONIC_USEC=123', { ready: false, ignored: ['RELOADING=1', 'MONOTONIC_USEC=123'] }],
    ['READY=0', { ready: false, ignored: ['READY=0'] }],
    ['WATCHDOG=1\nSTOPPING=1\nFDSTORE=1\nFDNAME=x\n', { ready: false, watchdog: '1', ignored: ['STOPPING=1', 'FDSTORE=1', 'FDNAME=x'] }],
    ['WATCHDOG=trigger', { ready: false, watchdog: 'trigger', ignored: [] }],
    ['WATCHDOG=2\nWATCHDOG_USEC=5000000', { ready: false, ignored: ['WATCHDOG=2', 'WATCHDOG_USEC=5000000'] }],
    ['BARRIER=1', { ready: false, ignored: ['BARRIER=1'] }],
  ])('%j', (text, meaning) => {
    expect(interpretNotify(text)).toEqual(meaning);
  });

  it('a message counts for the instance it comes from: the program itself or a descendant, never a stranger', () => {
    const parents: Record<number, number> = { 30: 20, 20: 10, 10: 1, 99: 1, 41: 40 };
    const parentOf = (p: number) => parents[p];
    expect(ownerOf(10, [10, 40], parentOf)).toBe(10);
    expect(ownerOf(30, [10, 40], parentOf)).toBe(10);
    expect(ownerOf(41, [10, 40], parentOf)).toBe(40);
    expect(ownerOf(99, [10, 40], parentOf)).toBeUndefined();
    expect(ownerOf(undefined, [10], parentOf)).toBeUndefined();
    expect(ownerOf(5, [10], () => 5)).toBeUndefined(); // a loop in a broken table ends
  });

  it('exit status: the code, or 128 + the signal', () => {
    expect(exitStatus({ code: 3, signal: null })).toBe(3);
    expect(exitStatus({ code: null, signal: 'SIGKILL' })).toBe(137);
    expect(exitStatus(1)).toBe(1);
  });
});

/** A spawned program, as far as Runner sees it. */
class FakeChild extends EventEmitter {
  static next = 1000;
  readonly pid = FakeChild.next++;
  readonly signals: string[] = [];
  constructor(readonly env: NodeJS.ProcessEnv, readonly argv: string[]) {
    super();
  }
  kill(signal: string): boolean {
    this.signals.push(signal);
    setImmediate(() => this.emit('exit', null, signal));
    return true;
  }
  exit(code: number): void {
    this.emit('exit', code, null);
  }
}

/** A fake world: children, a notify socket fed by the test, systemd's messages recorded. */
function fakeWorld(systemdEnv: NodeJS.ProcessEnv = {}) {
  const children: FakeChild[] = [];
  const inbox: Received[] = [];
  const sent: string[] = [];
  const logs: string[] = [];
  const handlers = new Map<string, () => void>();
  const addon = {
    bindDgram: () => 50,
    recvDatagram: async () => {
      await new Promise((r) => setTimeout(r, 2));
      return inbox.shift() ?? null;
    },
    close: () => {},
    sendDatagram: (_path: string, data: Buffer) => {
      sent.push(data.toString());
      return data.length;
    },
  } as unknown as NativeAddon;
  const world: Partial<RunWorld> = {
    env: {},
    pid: 77,
    addon,
    notifier: new Notifier({ env: { NOTIFY_SOCKET: '/run/systemd/notify', ...systemdEnv }, pid: 77, addon: () => addon, monotonicUsec: () => 5n }),
    spawn: ((command: string, args: string[], options: { env: NodeJS.ProcessEnv }) => {
      const c = new FakeChild(options.env, [command, ...args]);
      children.push(c);
      return c;
    }) as unknown as RunWorld['spawn'],
    log: (l) => logs.push(l),
    onSignal: (sig, fn) => {
      handlers.set(sig, fn);
      return () => handlers.delete(sig);
    },
  };
  const from = (child: FakeChild | number, text: string, fds: number[] = []) =>
    inbox.push({ data: Buffer.from(text), fds, cred: { pid: typeof child === 'number' ? child : child.pid, uid: 0, gid: 0 }, truncated: false });
  const until = async (what: string, fn: () => unknown) => {
    for (let i = 0; i < 400; i++) {
      if (fn()) return;
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`timed out waiting for ${what}; sent: ${JSON.stringify(sent)}; logs: ${JSON.stringify(logs)}`);
  };
  return { world, children, sent, logs, handlers, from, until };
}

describe('sd-handoff run: the supervisor with fakes (--ready notify)', () => {
  const options = { listen: [], ready: 'notify' as const, delayMs: 1000, timeoutMs: 2000, drainMs: 500, command: 'python3', args: ['app.py', '--x y'] };

  it('start: the program runs through the LISTEN_PID wrapper with the proxy socket; READY=1 from it makes run ready; STATUS= forwarded; MAINPID= ignored', async () => {
    const f = fakeWorld();
    const runner = new Runner(options, f.world);
    const done = runner.run();
    await f.until('the first instance', () => f.children.length === 1);
    const a = f.children[0]!;
    expect(a.argv).toEqual(['/bin/sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@"', 'python3', 'app.py', '--x y']);
    expect(a.env).toMatchObject({ LISTEN_FDS: '0', LISTEN_FDNAMES: '' });
    expect(a.env.NOTIFY_SOCKET).toMatch(/^@sdh-run\/77\/[0-9a-f]{12}$/);
    f.from(999_999_999, 'READY=1'); // a stranger: not heard
    f.from(a, 'STATUS=warming up');
    await f.until('the status', () => f.sent.includes('STATUS=warming up'));
    expect(f.sent.filter((s) => s.startsWith('READY=1'))).toEqual([]);
    f.from(a, 'MAINPID=1\nREADY=1');
    await f.until('READY=1', () => f.sent.some((s) => s.startsWith('READY=1')));
    expect(f.sent.at(-1)).toMatch(new RegExp(`^READY=1\nSTATUS=serving: pid ${a.pid} \\(python3\\) ready in \\d+ ms$`));
    expect(f.sent.some((s) => s.includes('MAINPID'))).toBe(false);
    expect(f.logs).toContain(`pid ${a.pid} sent MAINPID=: ignored, sd-handoff run stays the main process`);
    expect(runner.pid).toBe(a.pid);

    // Reload: RELOADING=1 + MONOTONIC_USEC, the new instance's READY=1 (not the old one's), then SIGTERM to the old.
    const reload = runner.reload();
    await f.until('the second instance', () => f.children.length === 2);
    const b = f.children[1]!;
    expect(f.sent).toContain(`RELOADING=1\nMONOTONIC_USEC=5\nSTATUS=reloading: starting a new instance; pid ${a.pid} serves`);
    f.from(a, 'READY=1');
    await new Promise((r) => setTimeout(r, 30));
    expect(a.signals).toEqual([]);
    f.from(b, 'READY=1');
    const r = await reload;
    expect(r).toMatchObject({ ok: true, pid: b.pid, oldPid: a.pid });
    expect(a.signals).toEqual(['SIGTERM']);
    expect(f.sent.at(-1)).toMatch(new RegExp(`^READY=1\nSTATUS=reloaded: pid ${b.pid} serves \\(took over from ${a.pid} in \\d+ ms\\)$`));
    expect(runner.pid).toBe(b.pid);

    // SIGTERM to run: STOPPING=1, SIGTERM to the program, run ends with its ending.
    f.handlers.get('SIGTERM')!();
    expect(await done).toEqual({ code: null, signal: 'SIGTERM' });
    expect(b.signals).toEqual(['SIGTERM']);
    expect(f.sent).toContain(`STOPPING=1\nSTATUS=stopping: SIGTERM to pid ${b.pid}`);
  });

  it('a new instance that exits before ready: the reload rejects, READY=1 + STATUS= says why, the old one serves on', async () => {
    const f = fakeWorld();
    const runner = new Runner(options, f.world);
    const done = runner.run();
    await f.until('the first instance', () => f.children.length === 1);
    const a = f.children[0]!;
    f.from(a, 'READY=1');
    await f.until('ready', () => runner.pid === a.pid && f.sent.some((s) => s.startsWith('READY=1')));
    const reload = runner.reload();
    await f.until('the second instance', () => f.children.length === 2);
    await expect(runner.reload()).rejects.toMatchObject({ code: 'SDH_UPGRADE_IN_PROGRESS' });
    f.children[1]!.exit(1);
    await expect(reload).rejects.toMatchObject({ code: 'SDH_UPGRADE_FAILED', message: `the program (pid ${f.children[1]!.pid}) exited with status 1 before it was ready` });
    expect(f.sent.at(-1)).toBe(`READY=1\nSTATUS=reload failed: the program (pid ${f.children[1]!.pid}) exited with status 1 before it was ready; pid ${a.pid} still serves`);
    expect(a.signals).toEqual([]);
    expect(runner.pid).toBe(a.pid);
    expect(runner.lastReload).toMatchObject({ ok: false, oldPid: a.pid });

    // The serving instance dying on its own ends run with its status: systemd's Restart= takes it from there.
    a.exit(3);
    expect(await done).toEqual({ code: 3, signal: null });
    expect(f.sent.at(-1)).toBe(`STOPPING=1\nSTATUS=the program (pid ${a.pid}) exited with status 3`);
  });

  it('a new instance not ready within --timeout is killed; the first one failing to start ends run with 1', async () => {
    const f = fakeWorld();
    const runner = new Runner({ ...options, timeoutMs: 50 }, f.world);
    const done = runner.run();
    expect(await done).toBe(1);
    expect(f.children[0]!.signals).toEqual(['SIGTERM']);
    expect(f.logs.at(-1)).toMatch(/^the program did not start: the program \(pid \d+\) was not ready within 50 ms \(--ready notify\) and was killed$/);
  });
});

describe('sd-handoff run: systemd\'s watchdog (WatchdogSec=)', () => {
  const options = { listen: [], ready: 'notify' as const, delayMs: 1000, timeoutMs: 2000, drainMs: 500, command: 'python3', args: ['app.py'] };
  // 40 ms: run's own keep-alive would ping every 20 ms.
  const watched = { WATCHDOG_USEC: '40000', WATCHDOG_PID: '77' };
  const pings = (sent: string[]) => sent.filter((s) => s.startsWith('WATCHDOG=')).length;
  const ready = async (f: ReturnType<typeof fakeWorld>, runner: Runner) => {
    await f.until('the first instance', () => f.children.length === 1);
    f.from(f.children[0]!, 'READY=1');
    await f.until('ready', () => runner.pid === f.children[0]!.pid && f.sent.some((s) => s.startsWith('READY=1')));
    return f.children[0]!;
  };

  it('--watchdog self: run pings for itself; the program gets no WATCHDOG_* and its pings are not passed on', async () => {
    const f = fakeWorld(watched);
    const runner = new Runner({ ...options, watchdog: 'self' }, f.world);
    const done = runner.run();
    const a = await ready(f, runner);
    expect(a.argv[2]).toBe(LISTEN_PID_WRAPPER);
    expect(a.env.WATCHDOG_USEC).toBeUndefined();
    expect(a.env.WATCHDOG_PID).toBeUndefined();
    await f.until('run\'s own pings', () => pings(f.sent) >= 2);
    expect(f.logs).toContain('watchdog: run pings systemd itself every 20 ms (a hung program goes unnoticed; --watchdog program passes it to the program)');
    f.handlers.get('SIGTERM')!();
    await done;
  });

  it('--watchdog program: the serving instance\'s pings reach systemd, run sends none of its own, a starting instance cannot cover for the serving one', async () => {
    const f = fakeWorld(watched);
    const runner = new Runner({ ...options, watchdog: 'program' }, f.world);
    const done = runner.run();
    const a = await ready(f, runner);
    expect(a.argv[2]).toBe(WATCHDOG_PID_WRAPPER);
    expect(WATCHDOG_PID_WRAPPER).toBe('LISTEN_PID=$$ WATCHDOG_PID=$$ exec "$0" "$@"');
    expect(a.env.WATCHDOG_USEC).toBe('40000');
    // Five of run's own intervals: nothing pinged but the program.
    await new Promise((r) => setTimeout(r, 100));
    expect(pings(f.sent)).toBe(0);
    f.from(a, 'WATCHDOG=1');
    f.from(a, 'WATCHDOG=trigger');
    await f.until('the pings passed on', () => pings(f.sent) === 2);
    expect(f.sent.filter((s) => s.startsWith('WATCHDOG='))).toEqual(['WATCHDOG=1', 'WATCHDOG=trigger']);

    const reload = runner.reload();
    await f.until('the second instance', () => f.children.length === 2);
    const b = f.children[1]!;
    expect(b.env.WATCHDOG_USEC).toBe('40000');
    f.from(b, 'WATCHDOG=1'); // still starting: not passed on
    f.from(a, 'WATCHDOG=1'); // still serving: passed on
    await f.until('the serving instance\'s ping', () => pings(f.sent) === 3);
    f.from(b, 'READY=1');
    await reload;
    f.from(a, 'WATCHDOG=1'); // replaced, draining: not passed on
    f.from(b, 'WATCHDOG=1');
    await f.until('the new serving instance\'s ping', () => pings(f.sent) === 4);
    await new Promise((r) => setTimeout(r, 30));
    expect(pings(f.sent)).toBe(4);
    f.handlers.get('SIGTERM')!();
    await done;
  });

  it('--watchdog program without WatchdogSec=: says so; the program gets no WATCHDOG_*', async () => {
    const f = fakeWorld();
    const runner = new Runner({ ...options, watchdog: 'program' }, f.world);
    const done = runner.run();
    const a = await ready(f, runner);
    expect(a.argv[2]).toBe(LISTEN_PID_WRAPPER);
    expect(a.env.WATCHDOG_USEC).toBeUndefined();
    expect(f.logs).toContain('--watchdog program: systemd asked for no watchdog (no WatchdogSec=): nothing to pass on');
    f.handlers.get('SIGTERM')!();
    await done;
  });

  it('a malformed WATCHDOG_USEC: run says which variable and value, exits 1, starts nothing', async () => {
    const f = fakeWorld({ WATCHDOG_USEC: 'soon' });
    expect(await new Runner({ ...options, watchdog: 'program' }, f.world).run()).toBe(1);
    expect(f.children).toEqual([]);
    expect(f.logs.at(-1)).toBe('WATCHDOG_USEC="soon" is not a positive integer');
  });
});

