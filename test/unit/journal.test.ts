import { describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import {
  captureConsole,
  checkFieldName,
  createJournal,
  defaultIdentifier,
  fallbackLines,
  isJournalStream,
  serializeEntry,
  type JournalOptions,
} from '../../src/journal.js';
import type { NativeAddon } from '../../src/native.js';
import { journalDestination, journalFieldName, pinoFields, pinoPriority } from '../../src/pino.js';
import { fakeAddon } from './fakes.js';

/** `KEY\n` + u64 LE length + value + `\n`, written out by hand. */
function binaryField(key: string, value: string): Buffer {
  const v = Buffer.from(value, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(v.length));
  return Buffer.concat([Buffer.from(`${key}\n`), len, v, Buffer.from('\n')]);
}

const sysErr = (code: string, errno: number, syscall = 'sendmsg') => {
  const e = new SdHandoffError('', { errno, syscall });
  expect(e.code).toBe(code);
  return e;
};
const EAGAIN = () => sysErr('EAGAIN', 11);

interface Sent {
  data: Buffer;
  fds: number[];
  memfd?: Buffer;
  dontwait: boolean;
}

/**
 * A fake world: JOURNAL_STREAM matches fd 2 unless told otherwise; sendTo records datagrams, or throws what `fail`
 * returns for them; memfds are remembered with their content.
 */
function world(opts: { stream?: 'stderr' | 'stdout' | 'none' | 'unset'; fail?: (data: Buffer, fds: number[]) => Error | undefined } = {}) {
  const sent: Sent[] = [];
  const lines: string[] = [];
  const memfds = new Map<number, Buffer>();
  const closed: number[] = [];
  const timers: Array<{ fn: () => void; ms: number; cancelled: boolean }> = [];
  const exitHooks: Array<() => void> = [];
  let nextFd = 100;
  let clock = 0;
  const stream = opts.stream ?? 'stderr';
  const base = fakeAddon();
  const addon: NativeAddon = {
    ...base,
    fstat(fd) {
      const matching = (stream === 'stderr' && fd === 2) || (stream === 'stdout' && fd === 1);
      return { dev: matching ? 64769n : 5n, ino: matching ? 123456n : BigInt(fd), mode: 0o140777 };
    },
    dgramSocket: () => 42,
    sendTo(sock, path, data, fds, dontwait) {
      expect(sock).toBe(42);
      const err = opts.fail?.(data, fds);
      if (err) throw err;
      sent.push({ data: Buffer.from(data), fds: [...fds], memfd: fds[0] !== undefined ? memfds.get(fds[0]) : undefined, dontwait });
      return data.length;
    },
    memfdSealed(_name, data) {
      const fd = nextFd++;
      memfds.set(fd, Buffer.from(data));
      return fd;
    },
    close(fd) {
      closed.push(fd);
    },
  };
  const env: NodeJS.ProcessEnv = stream === 'unset' ? {} : { JOURNAL_STREAM: '64769:123456' };
  const options: JournalOptions = {
    identifier: 'app',
    env,
    argv: ['/usr/bin/node', '/srv/app/server.mjs'],
    addon: () => addon,
    stderr: {
      write(chunk, cb) {
        lines.push(chunk);
        cb?.();
        return true;
      },
    },
    now: () => clock,
    schedule(fn, ms) {
      const t = { fn, ms, cancelled: false };
      timers.push(t);
      return () => (t.cancelled = true);
    },
    sleepSync: (ms) => (clock += ms),
    onExit(fn) {
      exitHooks.push(fn);
      return () => exitHooks.splice(exitHooks.indexOf(fn), 1);
    },
  };
  /** Runs the retry timers that are due (not the flush timeouts, which are longer). */
  const runTimers = () => {
    const due = timers.filter((t) => !t.cancelled && t.ms < 1000);
    for (const t of due) timers.splice(timers.indexOf(t), 1);
    for (const t of due) t.fn();
  };
  return { sent, lines, memfds, closed, timers, exitHooks, options, env, runTimers, tick: (ms: number) => (clock += ms), texts: () => sent.map((s) => s.data.toString('latin1')) };
}

describe('serialization', () => {
  it('writes KEY=VALUE lines in order', () => {
    expect(serializeEntry([['MESSAGE', 'hello'], ['PRIORITY', '6'], ['SYSLOG_IDENTIFIER', 'app']]).toString()).toBe(
      'MESSAGE=hello\nPRIORITY=6\nSYSLOG_IDENTIFIER=app\n',
    );
  });

  it('uses the length-prefixed binary form for a value with a newline, byte for byte', () => {
    const got = serializeEntry([['MESSAGE', 'line 1\nline 2\nline 3'], ['PRIORITY', '3']]);
    const want = Buffer.concat([binaryField('MESSAGE', 'line 1\nline 2\nline 3'), Buffer.from('PRIORITY=3\n')]);
    expect(got.equals(want)).toBe(true);
    // The length is little-endian u64: 20 bytes of value.
    expect([...got.subarray(8, 16)]).toEqual([20, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('counts the length in bytes, not characters', () => {
    const got = serializeEntry([['M', 'é\n']]);
    expect(got.equals(Buffer.from([0x4d, 0x0a, 3, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0xa9, 0x0a, 0x0a]))).toBe(true);
  });

  it('sends Buffers as raw bytes, binary form only when they hold a newline', () => {
    expect(serializeEntry([['B', Buffer.from([0, 1, 255])]]).equals(Buffer.from([0x42, 0x3d, 0, 1, 255, 0x0a]))).toBe(true);
    expect(serializeEntry([['B', Buffer.from([10, 0])]]).equals(Buffer.from([0x42, 0x0a, 2, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0x0a]))).toBe(true);
  });

  it('formats values of every kind', () => {
    const w = world();
    const j = createJournal(w.options);
    const circular: Record<string, unknown> = { a: 1 };
    circular.self = circular;
    j.info('m', {
      S: 'text',
      N: 42.5,
      T: true,
      F: false,
      BIG: 12345678901234567890n,
      OBJ: { a: [1, 2], b: { c: 3n } },
      DATE: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)),
      NONE: undefined,
      NUL: null,
      CIRC: circular,
    });
    expect(w.texts()[0]).toBe(
      'MESSAGE=m\nPRIORITY=6\nSYSLOG_IDENTIFIER=app\nS=text\nN=42.5\nT=true\nF=false\nBIG=12345678901234567890\n' +
        'OBJ={"a":[1,2],"b":{"c":"3"}}\nDATE=2024-01-02T03:04:05.000Z\nCIRC=<ref *1> { a: 1, self: [Circular *1] }\n',
    );
  });
});

describe('field names', () => {
  const bad: Array<[string, string]> = [
    ['', 'journal field name "" is empty'],
    ['lower', 'journal field name "lower" holds "l" at index 0; only A-Z, 0-9 and "_" are allowed'],
    ['A-B', 'journal field name "A-B" holds "-" at index 1; only A-Z, 0-9 and "_" are allowed'],
    ['ÄB', 'journal field name "ÄB" holds "Ä" at index 0; only A-Z, 0-9 and "_" are allowed'],
    ['A B', 'journal field name "A B" holds " " at index 1; only A-Z, 0-9 and "_" are allowed'],
    ['_PID', 'journal field name "_PID" starts with "_" (journald reserves those for the fields it adds itself)'],
    ['1ST', 'journal field name "1ST" starts with a digit'],
    ['A'.repeat(65), `journal field name "${'A'.repeat(65)}" is 65 characters; journald allows at most 64`],
  ];
  it.each(bad)('rejects %j', (name, message) => {
    const err = (() => {
      try {
        checkFieldName(name);
      } catch (e) {
        return e as SdHandoffError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(SdHandoffError);
    expect(err!.code).toBe('SDH_INVALID_FIELD');
    expect(err!.message).toBe(message);
    expect((err as unknown as { field: string }).field).toBe(name);
  });

  it.each(['MESSAGE_ID', 'A', 'X1', 'CODE_LINE', 'A'.repeat(64), 'A_'])('accepts %j', (name) => {
    expect(checkFieldName(name)).toBe(name);
  });

  it('rejects a bad name in a log call and in the journal-wide fields, sending nothing', () => {
    const w = world();
    const j = createJournal(w.options);
    expect(() => j.info('x', { 'USER-ID': 1 })).toThrow(/journal field name "USER-ID" holds "-" at index 4/);
    expect(() => createJournal({ ...w.options, fields: { _SYSTEMD_UNIT: 'x' } })).toThrow(/"_SYSTEMD_UNIT" starts with "_"/);
    expect(w.sent).toHaveLength(0);
  });
});

describe('entries', () => {
  it('sets MESSAGE, PRIORITY and SYSLOG_IDENTIFIER with the priority of each method', () => {
    const w = world();
    const j = createJournal(w.options);
    j.debug('d');
    j.info('i');
    j.notice('n');
    j.warn('w');
    j.error('e');
    j.crit('c');
    j.log(1, 'a');
    expect(w.texts().map((t) => t.split('\n').slice(0, 2).join(' '))).toEqual([
      'MESSAGE=d PRIORITY=7',
      'MESSAGE=i PRIORITY=6',
      'MESSAGE=n PRIORITY=5',
      'MESSAGE=w PRIORITY=4',
      'MESSAGE=e PRIORITY=3',
      'MESSAGE=c PRIORITY=2',
      'MESSAGE=a PRIORITY=1',
    ]);
    expect(w.sent.every((s) => s.data.toString().includes('\nSYSLOG_IDENTIFIER=app\n') && s.dontwait)).toBe(true);
    expect(() => j.log(8, 'x')).toThrow(/PRIORITY must be an integer 0..7, got 8/);
  });

  it('defaults the identifier to the script name without extension', () => {
    expect(defaultIdentifier(['/usr/bin/node', '/srv/app/server.mjs'])).toBe('server');
    expect(defaultIdentifier(['/usr/bin/node', 'dist/cli.js'])).toBe('cli');
    expect(defaultIdentifier(['/usr/bin/node'])).toBe('node');
    const w = world();
    const { identifier: _ignored, ...noIdentifier } = w.options;
    const j = createJournal(noIdentifier);
    expect(j.identifier).toBe('server');
  });

  it('merges journal-wide, child and per-call fields; the call wins, MESSAGE and PRIORITY cannot be overridden', () => {
    const w = world();
    const j = createJournal({ ...w.options, fields: { SERVICE: 'api', REGION: 'eu' } });
    const c = j.child({ REQUEST_ID: 'r1', REGION: 'us' });
    c.warn('hello', { REGION: 'ap', MESSAGE: 'nope', PRIORITY: 0, EXTRA: 1 });
    expect(w.texts()[0]).toBe('MESSAGE=hello\nPRIORITY=4\nSYSLOG_IDENTIFIER=app\nSERVICE=api\nREGION=ap\nREQUEST_ID=r1\nEXTRA=1\n');
  });

  it('send() takes raw fields with defaults, and may override SYSLOG_IDENTIFIER', () => {
    const w = world();
    const j = createJournal(w.options);
    j.send({ MESSAGE_ID: 'fc2e22bc6ee647b6b90729ab34a250b1', SDH_EVENT: 'upgrade-started' });
    j.send({ MESSAGE: 'm', PRIORITY: '3', SYSLOG_IDENTIFIER: 'other' });
    expect(w.texts()).toEqual([
      'MESSAGE=\nPRIORITY=6\nSYSLOG_IDENTIFIER=app\nMESSAGE_ID=fc2e22bc6ee647b6b90729ab34a250b1\nSDH_EVENT=upgrade-started\n',
      'MESSAGE=m\nPRIORITY=3\nSYSLOG_IDENTIFIER=other\n',
    ]);
    expect(() => j.send({ PRIORITY: 'high' })).toThrow(/PRIORITY must be an integer 0..7, got "high"/);
  });

  it('logs an Error with its stack in EXCEPTION_TEXT and its code and errno', () => {
    const w = world();
    const j = createJournal(w.options);
    const err = Object.assign(new Error('connect failed'), { code: 'ECONNREFUSED', errno: -111 });
    j.error(err);
    j.warn('retrying', { CAUSE: new TypeError('bad') });
    const [first, second] = w.texts();
    expect(first).toMatch(/^MESSAGE=Error: connect failed\nPRIORITY=3\nSYSLOG_IDENTIFIER=app\nEXCEPTION_TEXT\n/);
    expect(first).toContain('Error: connect failed\n    at ');
    expect(first).toContain("code: 'ECONNREFUSED'");
    expect(first).toMatch(/\nEXCEPTION_NAME=Error\nEXCEPTION_CODE=ECONNREFUSED\nERRNO=111\n$/);
    expect(second).toMatch(/^MESSAGE=retrying\nPRIORITY=4\nSYSLOG_IDENTIFIER=app\nCAUSE=TypeError: bad\nEXCEPTION_TEXT\n/);
    expect(second).toMatch(/\nEXCEPTION_NAME=TypeError\n$/);
  });

  it('captures CODE_FILE, CODE_LINE and CODE_FUNC of the caller when asked', () => {
    const w = world();
    const j = createJournal({ ...w.options, codeLocation: true });
    function handler() {
      const line = new Error().stack!.split('\n')[1]!.match(/:(\d+):\d+\)?$/)![1];
      j.info('here');
      return Number(line) + 1;
    }
    const line = handler();
    const text = w.texts()[0]!;
    expect(text).toContain(`\nCODE_FILE=${import.meta.filename}\n`);
    expect(text).toContain(`\nCODE_LINE=${line}\n`);
    expect(text).toContain('\nCODE_FUNC=handler\n');
    createJournal(w.options).info('no location');
    expect(w.texts()[1]).not.toContain('CODE_');
  });

  it('discards entries above maxPriority', () => {
    const w = world();
    const j = createJournal({ ...w.options, maxPriority: 6 });
    j.debug('hidden');
    j.info('shown');
    expect(w.texts()).toHaveLength(1);
    expect(j.stats().filtered).toBe(1);
  });
});

describe('where entries go', () => {
  it.each([
    ['stderr', 'journal'],
    ['stdout', 'journal'],
    ['none', 'stderr'],
    ['unset', 'stderr'],
  ] as const)('JOURNAL_STREAM matching %s -> %s', (stream, target) => {
    const w = world({ stream });
    expect(createJournal(w.options).target).toBe(target);
  });

  it('isJournalStream: false when unset, SDH_INVALID_ENV when malformed', () => {
    const w = world();
    expect(isJournalStream({ env: {}, addon: w.options.addon })).toBe(false);
    expect(isJournalStream({ env: { JOURNAL_STREAM: '64769:123456' }, addon: w.options.addon })).toBe(true);
    expect(() => isJournalStream({ env: { JOURNAL_STREAM: '8:x' }, addon: w.options.addon })).toThrow(
      /JOURNAL_STREAM="8:x" is not <device>:<inode> in decimal/,
    );
    // A journal does not throw for it: it falls back to stderr.
    expect(createJournal({ ...w.options, env: { JOURNAL_STREAM: 'junk' } }).target).toBe('stderr');
  });

  it('writes stderr lines with <N> prefixes and the fields on the first line; later lines indented, so one entry stays one record', () => {
    const w = world({ stream: 'unset' });
    const j = createJournal(w.options);
    j.warn('one line', { REQUEST_ID: 'r-17', ATTEMPT: 3 });
    j.error('first\nsecond');
    j.info('trailing newline\n');
    j.info('');
    expect(w.lines).toEqual(['<4>one line REQUEST_ID=r-17 ATTEMPT=3\n', '<3>first\n<3>  second\n', '<6>trailing newline\n', '<6>\n']);
    expect(w.sent).toHaveLength(0);
    expect(j.stats().stderr).toBe(4);
  });

  it('quotes a field value that has spaces, quotes, "=", a newline or nothing, so the first line stays one line of KEY=value pairs', () => {
    const w = world({ stream: 'unset' });
    const j = createJournal(w.options).child({ SERVICE: 'api' });
    j.notice('started', { PATH: '/srv/my app', QUERY: 'a=b', NOTE: 'say "hi"', MULTI: 'x\ny', EMPTY: '' });
    expect(w.lines).toEqual(['<5>started SERVICE=api PATH="/srv/my app" QUERY="a=b" NOTE="say \\"hi\\"" MULTI="x\\ny" EMPTY=""\n']);
  });

  it('prints an error once, with its fields and its stack, every line prefixed and the stack indented', () => {
    expect(fallbackLines(3, 'Error: x', 'Error: x\n    at f (a.js:1:1)')).toBe('<3>Error: x\n<3>      at f (a.js:1:1)\n');
    expect(fallbackLines(4, 'retrying', 'TypeError: bad\n    at g')).toBe('<4>retrying\n<4>  TypeError: bad\n<4>      at g\n');
    expect(fallbackLines(6, 'a\nb', undefined, false)).toBe('a\n  b\n');
    const w = world({ stream: 'unset' });
    const err = Object.assign(new Error('connect failed'), { code: 'ECONNREFUSED' });
    createJournal(w.options).error(err, { DB_HOST: 'db1' });
    const lines = w.lines[0]!.split('\n');
    expect(lines[0]).toBe('<3>Error: connect failed DB_HOST=db1 EXCEPTION_NAME=Error EXCEPTION_CODE=ECONNREFUSED');
    expect(lines[1]).toMatch(/^<3> {6}at .*journal\.test\.ts:\d+:\d+\)?$/);
    expect(lines.slice(1, -1).every((l) => l.startsWith('<3>  '))).toBe(true);
  });

  it('falls back to stderr without throwing when journald is absent (ENOENT, ECONNREFUSED)', () => {
    for (const [code, errno] of [
      ['ENOENT', 2],
      ['ECONNREFUSED', 111],
    ] as const) {
      const w = world({ fail: () => sysErr(code, errno) });
      const j = createJournal(w.options);
      expect(j.target).toBe('journal');
      expect(() => j.info('still logged')).not.toThrow();
      expect(w.lines).toEqual(['<6>still logged\n']);
    }
  });

  it('falls back to stderr when the addon cannot load', () => {
    const w = world();
    const j = createJournal({
      ...w.options,
      addon: () => {
        throw new SdHandoffError('no addon', { code: 'SDH_NATIVE_UNAVAILABLE' });
      },
    });
    j.info('x');
    expect(j.target).toBe('stderr');
    expect(w.lines).toEqual(['<6>x\n']);
  });

  it('re-checks a mismatching JOURNAL_STREAM lazily, and at once on redetect()', () => {
    let matching = false;
    const w = world();
    const addon = w.options.addon!();
    const j = createJournal({
      ...w.options,
      recheckMs: 1000,
      addon: () => ({ ...addon, fstat: (fd: number) => (matching && fd === 2 ? { dev: 64769n, ino: 123456n, mode: 0 } : { dev: 1n, ino: 1n, mode: 0 }) }),
    });
    j.info('before');
    matching = true; // the Upgrader dup2'd the inherited journal stream onto fd 2
    w.tick(999);
    j.info('still stderr');
    w.tick(1);
    j.info('native');
    expect(w.lines).toEqual(['<6>before\n', '<6>still stderr\n']);
    expect(w.texts()).toHaveLength(1);
    matching = false;
    expect(j.redetect()).toBe('stderr');
    expect(j.target).toBe('stderr');
  });
});

describe('large entries', () => {
  it('sends an entry of memfdThreshold bytes or more as an empty datagram with one sealed memfd, and closes it', () => {
    const w = world();
    const j = createJournal({ ...w.options, memfdThreshold: 1000 });
    j.info('x'.repeat(2000));
    expect(w.sent).toHaveLength(1);
    expect(w.sent[0]!.data.length).toBe(0);
    expect(w.sent[0]!.fds).toEqual([100]);
    expect(w.sent[0]!.memfd!.toString()).toBe(`MESSAGE=${'x'.repeat(2000)}\nPRIORITY=6\nSYSLOG_IDENTIFIER=app\n`);
    expect(w.closed).toEqual([100]);
    expect(j.stats()).toMatchObject({ sent: 1, memfd: 1 });
  });

  it.each([
    ['EMSGSIZE', 90],
    ['ENOBUFS', 105],
  ] as const)('retries a datagram refused with %s as a memfd', (code, errno) => {
    const w = world({ fail: (data) => (data.length > 100 ? sysErr(code, errno) : undefined) });
    const j = createJournal(w.options);
    j.info('y'.repeat(200));
    expect(w.sent).toHaveLength(1);
    expect(w.sent[0]!.data.length).toBe(0);
    expect(w.sent[0]!.memfd!.toString()).toContain(`MESSAGE=${'y'.repeat(200)}\n`);
  });
});

describe('a full socket', () => {
  it('queues on EAGAIN, keeps order, retries on the timer and resolves flush() once empty', async () => {
    let full = true;
    const w = world({ fail: () => (full ? EAGAIN() : undefined) });
    const j = createJournal(w.options);
    j.info('1');
    j.info('2');
    expect(j.stats().queued).toBe(2);
    expect(w.timers).toHaveLength(1);
    let flushed = false;
    const f = j.flush().then(() => (flushed = true));
    w.runTimers(); // still full: re-armed
    expect(w.timers.filter((t) => !t.cancelled).length).toBeGreaterThan(0);
    await Promise.resolve();
    expect(flushed).toBe(false);
    full = false;
    w.tick(1); // a log call retries at most once a millisecond after a refusal
    j.info('3'); // goes after the queued ones
    await f;
    expect(flushed).toBe(true);
    expect(w.texts().map((t) => t.split('\n')[0])).toEqual(['MESSAGE=1', 'MESSAGE=2', 'MESSAGE=3']);
  });

  it('while the socket is full, log calls try at most once a millisecond; the retry comes sooner while it drains', () => {
    let attempts = 0;
    let room = 0;
    const w = world({
      fail: () => {
        attempts++;
        return room-- > 0 ? undefined : EAGAIN();
      },
    });
    const j = createJournal(w.options);
    for (let i = 0; i < 100; i++) j.info(`m${i}`);
    expect(attempts).toBe(1);
    expect(w.timers.map((t) => t.ms)).toEqual([5]);
    room = 10;
    w.runTimers(); // 10 taken, then refused: progress, so the next try is on the next timer turn
    expect(w.texts()).toHaveLength(10);
    expect(w.timers.filter((t) => !t.cancelled).map((t) => t.ms)).toEqual([0]);
    w.runTimers(); // nothing taken: back to retryMs
    expect(w.timers.filter((t) => !t.cancelled).map((t) => t.ms)).toEqual([5]);
    w.tick(1);
    room = 1000;
    j.info('last');
    expect(w.texts().map((t) => t.split('\n')[0]).slice(-2)).toEqual(['MESSAGE=m99', 'MESSAGE=last']);
    expect(j.stats().queued).toBe(0);
  });

  it('bounds the queue, counts drops and reports them once it drains', () => {
    let full = true;
    const w = world({ fail: () => (full ? EAGAIN() : undefined) });
    const j = createJournal({ ...w.options, maxQueueBytes: 100 });
    for (let i = 0; i < 5; i++) j.info(`m${i}`); // 40 bytes each: 2 fit
    expect(j.stats()).toMatchObject({ queued: 2, dropped: 3 });
    full = false;
    w.runTimers();
    expect(w.texts().map((t) => t.split('\n')[0])).toEqual([
      'MESSAGE=m0',
      'MESSAGE=m1',
      "MESSAGE=sd-handoff journal: 3 entries dropped while journald's socket was full",
    ]);
    expect(w.texts()[2]).toContain('\nPRIORITY=4\nSDH_DROPPED=3\n');
  });

  it('flush() rejects with SDH_TIMEOUT when journald accepts nothing', async () => {
    const w = world({ fail: () => EAGAIN() });
    const j = createJournal(w.options);
    j.info('stuck');
    const p = j.flush(50);
    const timeout = w.timers.find((t) => t.ms === 50)!;
    timeout.fn();
    await expect(p).rejects.toMatchObject({ code: 'SDH_TIMEOUT' });
  });

  it('on exit sends the queue synchronously, blocking until journald takes it', () => {
    let refusals = 3;
    const w = world({ fail: () => (refusals-- > 0 ? EAGAIN() : undefined) });
    const j = createJournal(w.options);
    j.info('a');
    j.info('b');
    expect(w.exitHooks).toHaveLength(1);
    w.exitHooks[0]!();
    expect(w.texts().map((t) => t.split('\n')[0])).toEqual(['MESSAGE=a', 'MESSAGE=b']);
    expect(j.stats().queued).toBe(0);
  });

  it('on exit writes to stderr what journald did not take within exitTimeoutMs', () => {
    const w = world({ fail: () => EAGAIN() });
    const j = createJournal({ ...w.options, exitTimeoutMs: 10 });
    j.info('a');
    j.error('b');
    w.exitHooks[0]!();
    expect(w.lines).toEqual(['<6>a\n', '<3>b\n']);
  });

  it('spills the queue to stderr when redetection finds no journal', () => {
    let matching = true;
    const w = world({ fail: () => EAGAIN() });
    const addon = w.options.addon!();
    const j = createJournal({ ...w.options, addon: () => ({ ...addon, fstat: () => (matching ? { dev: 64769n, ino: 123456n, mode: 0 } : { dev: 1n, ino: 1n, mode: 0 }) }) });
    j.info('queued');
    matching = false;
    j.redetect();
    expect(w.lines).toEqual(['<6>queued\n']);
  });

  it('close() closes the socket, unregisters the exit hook, and later entries go to stderr', async () => {
    const w = world();
    const j = createJournal(w.options);
    j.info('a');
    await j.close();
    await j.close();
    expect(w.closed).toEqual([42]);
    expect(w.exitHooks).toHaveLength(0);
    j.info('b');
    expect(w.lines).toEqual(['<6>b\n']);
  });
});

describe('captureConsole', () => {
  it('routes console methods with matching priorities and undoes', () => {
    const w = world();
    const j = createJournal(w.options);
    const fake = { log() {}, info() {}, warn() {}, error() {}, debug() {} } as unknown as Console;
    const original = fake.log;
    const undo = captureConsole(j, fake);
    fake.log('a %d', 1);
    fake.info('b');
    fake.warn('c', { x: 1 });
    fake.error('d', new RangeError('r'));
    fake.debug('e');
    undo();
    expect(fake.log).toBe(original);
    const t = w.texts();
    expect(t.map((x) => x.match(/PRIORITY=(\d)/)![1])).toEqual(['6', '6', '4', '3', '7']);
    expect(t[0]).toMatch(/^MESSAGE=a 1\n/);
    expect(t[2]).toMatch(/^MESSAGE=c \{ x: 1 \}\n/);
    expect(t[3]).toMatch(/^MESSAGE\n/); // util.format put the stack in the message: binary form
    expect(t[3]).toContain('d RangeError: r\n    at ');
    expect(t[3]).toContain('\nEXCEPTION_NAME=RangeError\n');
  });
});

describe('pino mapping', () => {
  it.each([
    [10, 7],
    [20, 7],
    [25, 6],
    [30, 6],
    [40, 4],
    [50, 3],
    [60, 2],
    ['warn', 4],
    ['fatal', 2],
    [undefined, 6],
  ])('level %j -> priority %d', (level, priority) => {
    expect(pinoPriority(level)).toBe(priority);
  });

  it.each([
    ['reqId', 'REQID'],
    ['user.name', 'USER_NAME'],
    ['content-length', 'CONTENT_LENGTH'],
    ['_id', 'X_ID'],
    ['2fa', 'X2FA'],
    ['a'.repeat(70), 'A'.repeat(64)],
  ])('key %j -> field %s', (key, name) => {
    expect(journalFieldName(key)).toBe(name);
    expect(checkFieldName(name)).toBe(name);
  });

  it('maps msg, level, err and nested objects; drops time, pid and hostname', () => {
    const fields = pinoFields({
      level: 50,
      time: 1700000000000,
      pid: 1,
      hostname: 'h',
      msg: 'failed',
      req: { id: 7 },
      err: { type: 'Error', message: 'boom', stack: 'Error: boom\n    at x', code: 'EPIPE', errno: -32 },
    });
    expect(fields).toEqual({
      PRIORITY: 3,
      EXCEPTION_TEXT: 'Error: boom\n    at x',
      EXCEPTION_NAME: 'Error',
      EXCEPTION_CODE: 'EPIPE',
      ERRNO: 32,
      ERR: { type: 'Error', message: 'boom', code: 'EPIPE', errno: -32 },
      MESSAGE: 'failed',
      REQ: { id: 7 },
    });
  });

  it('writes pino lines as journal entries', () => {
    const w = world();
    const dest = journalDestination(createJournal(w.options));
    dest.write('{"level":40,"time":1,"pid":2,"hostname":"h","msg":"slow","ms":250}\n');
    dest.write('not json\n');
    expect(w.texts()).toEqual(['MESSAGE=slow\nPRIORITY=4\nSYSLOG_IDENTIFIER=app\nMS=250\n', 'MESSAGE=not json\nPRIORITY=6\nSYSLOG_IDENTIFIER=app\n']);
  });
});
