/**
 * The journal against a real datagram socket bound by the test as "journald", and real child processes whose stderr
 * is a socketpair the test made (the way systemd connects a service's output to the journal) with JOURNAL_STREAM
 * naming it, or not.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createJournal } from '../../src/journal.js';
import { native } from '../../src/native.js';
import { NotifyRecorder, ROOT, tempDir } from './helpers.js';

const CHILD = path.join(ROOT, 'test/fixtures/journal-child.mjs');

/** Decodes journald's native format (both forms) into [key, value] pairs, failing on anything malformed. */
function parseEntry(buf: Buffer): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let i = 0;
  while (i < buf.length) {
    const nl = buf.indexOf(0x0a, i);
    if (nl < 0) throw new Error(`unterminated field at ${i}`);
    const line = buf.subarray(i, nl).toString('utf8');
    const eq = line.indexOf('=');
    if (eq >= 0) {
      out.push([line.slice(0, eq), line.slice(eq + 1)]);
      i = nl + 1;
      continue;
    }
    const len = Number(buf.readBigUInt64LE(nl + 1));
    const start = nl + 9;
    if (buf[start + len] !== 0x0a) throw new Error(`binary field ${line} not followed by a newline`);
    out.push([line, buf.subarray(start, start + len).toString('utf8')]);
    i = start + len + 1;
  }
  return out;
}

/** journald's socket: the recorder with room for large entries, which it decodes (memfds read through /proc). */
class FakeJournald extends NotifyRecorder {
  constructor(path: string) {
    super(path, { maxBytes: 8 * 1024 * 1024 });
  }

  entries(): Array<Record<string, string>> {
    if (this.error) throw this.error;
    return this.messages.map((d) => {
      const bytes = d.data.length === 0 && d.fds.length === 1 ? readFileSync(`/proc/self/fd/${d.fds[0]}`) : d.data;
      return Object.fromEntries(parseEntry(bytes));
    });
  }

  async waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.messages.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    // Give a stray extra datagram the chance to show up before callers count.
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
  report: { target: string; stats: Record<string, number> } | undefined;
}

/**
 * Runs the fixture with a socketpair as its stderr. `stream`: 'match' sets JOURNAL_STREAM to that socket's
 * dev:ino (as systemd does), 'other' to some other file's, 'unset' leaves it out.
 */
async function runChild(args: string[], stream: 'match' | 'other' | 'unset', socketPath: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<ChildResult> {
  const addon = native();
  const [ours, theirs] = addon.socketpair();
  const st = addon.fstat(theirs);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, SDH_JOURNAL_SOCKET: socketPath, ...extraEnv };
  if (stream === 'match') env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
  if (stream === 'other') env.JOURNAL_STREAM = `${st.dev}:${st.ino + 1000n}`;
  const child = spawn(process.execPath, [CHILD, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', theirs] });
  addon.close(theirs);
  const errSock = new net.Socket({ fd: ours, readable: true, writable: false });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  errSock.on('data', (d: Buffer) => (stderr += d.toString()));
  const errClosed = new Promise<void>((r) => errSock.on('close', () => r()));
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  await errClosed;
  const last = stdout.trim().split('\n').pop();
  return { code, stdout, stderr, report: last ? JSON.parse(last) : undefined };
}

let dir: { dir: string; cleanup: () => void };
let journald: FakeJournald;
let sockPath: string;

beforeEach(() => {
  dir = tempDir('sdh-journal-');
  sockPath = path.join(dir.dir, 'journal.sock');
  journald = new FakeJournald(sockPath);
});

afterEach(async () => {
  await journald.close();
  dir.cleanup();
});

describe('in process, against a real socket', () => {
  it('entries arrive byte-exact, a multi-line message as one datagram in the binary form', async () => {
    const j = createJournal({ target: 'journal', socketPath: sockPath, identifier: 'native-test' });
    j.info('hello', { REQUEST_ID: 'r1', BYTES: Buffer.from([0, 1, 2]) });
    j.warn('line one\nline two\nline three');
    await j.flush();
    await journald.waitFor(2);
    await j.close();
    expect(journald.messages).toHaveLength(2);
    expect(journald.messages[0]!.data.equals(Buffer.from('MESSAGE=hello\nPRIORITY=6\nSYSLOG_IDENTIFIER=native-test\nREQUEST_ID=r1\nBYTES=\x00\x01\x02\n', 'latin1'))).toBe(
      true,
    );
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(28n); // "line one\nline two\nline three"
    expect(
      journald.messages[1]!.data.equals(
        Buffer.concat([Buffer.from('MESSAGE\n'), len, Buffer.from('line one\nline two\nline three\nPRIORITY=4\nSYSLOG_IDENTIFIER=native-test\n')]),
      ),
    ).toBe(true);
    // Sent with credentials: journald attributes the entry to the sender's pid.
    expect(journald.messages[0]!.pid).toBe(process.pid);
  });

  it('a 1 MiB message arrives as an empty datagram carrying one sealed memfd holding the entry', async () => {
    const j = createJournal({ target: 'journal', socketPath: sockPath, identifier: 'big' });
    const message = 'm'.repeat(1024 * 1024);
    j.info(message);
    await j.flush();
    await journald.waitFor(1);
    await j.close();
    expect(journald.messages).toHaveLength(1);
    const d = journald.messages[0]!;
    expect(d.data.length).toBe(0);
    expect(d.fds).toHaveLength(1);
    const content = readFileSync(`/proc/self/fd/${d.fds[0]}`);
    expect(content.equals(Buffer.from(`MESSAGE=${message}\nPRIORITY=6\nSYSLOG_IDENTIFIER=big\n`))).toBe(true);
    expect(native().describe(d.fds[0]!).kind).toBe('file');
    // Sealed: journald may trust that the content no longer changes.
    const w = openSync(`/proc/self/fd/${d.fds[0]}`, 'r+');
    try {
      expect(() => writeSync(w, 'x', 0)).toThrow(/EPERM/);
    } finally {
      closeSync(w);
    }
    expect(j.stats()).toMatchObject({ sent: 1, memfd: 1 });
  });

  it('an entry just under the threshold is still a datagram', async () => {
    const j = createJournal({ target: 'journal', socketPath: sockPath, identifier: 'x', memfdThreshold: 200_000 });
    j.info('a'.repeat(150_000));
    await j.flush();
    await journald.waitFor(1);
    await j.close();
    expect(journald.messages[0]!.data.length).toBeGreaterThan(150_000);
    expect(journald.messages[0]!.fds).toHaveLength(0);
  });

  it('a full socket (the receiver not reading) queues, and flush() resolves once the receiver catches up', async () => {
    // A second socket nobody reads yet: net.unix.max_dgram_qlen datagrams fit, then EAGAIN.
    const slowPath = path.join(dir.dir, 'slow.sock');
    const slow = native().bindDgram(slowPath, false);
    const j = createJournal({ target: 'journal', socketPath: slowPath, identifier: 'q' });
    for (let i = 0; i < 300; i++) j.info(`e${i}`);
    expect(j.stats().queued).toBeGreaterThan(0);
    const got: string[] = [];
    const reader = (async () => {
      while (got.length < 300) {
        const r = await native().recvDatagram(slow, 65536, 0, 2000);
        if (!r) break;
        got.push(r.data.toString().split('\n')[0]!);
      }
    })();
    await j.flush(10_000);
    await reader;
    await j.close();
    native().close(slow);
    expect(got).toEqual(Array.from({ length: 300 }, (_, i) => `MESSAGE=e${i}`));
    expect(j.stats()).toMatchObject({ queued: 0, dropped: 0, sent: 300 });
  });
});

describe('child processes', () => {
  it('logs natively when JOURNAL_STREAM matches stderr; nothing on stderr', async () => {
    const r = await runChild(['levels'], 'match', sockPath);
    await journald.waitFor(4);
    expect(r.code).toBe(0);
    expect(r.report?.target).toBe('journal');
    expect(r.stderr).toBe('');
    const entries = journald.entries();
    expect(entries.map((e) => [e.MESSAGE, e.PRIORITY, e.SYSLOG_IDENTIFIER])).toEqual([
      ['d', '7', 'journal-child'],
      ['i', '6', 'journal-child'],
      ['w', '4', 'journal-child'],
      ['Error: boom', '3', 'journal-child'],
    ]);
    expect(entries[1]!.REQUEST_ID).toBe('r-1');
    expect(entries[3]!.EXCEPTION_TEXT).toMatch(/^Error: boom\n {4}at .*journal-child\.mjs/);
    expect(entries[3]!.EXCEPTION_CODE).toBe('EBOOM');
  });

  it('a 3-line message from a child is one datagram', async () => {
    const r = await runChild(['multi'], 'match', sockPath);
    await journald.waitFor(1);
    expect(r.code).toBe(0);
    expect(journald.messages).toHaveLength(1);
    expect(journald.entries()[0]!.MESSAGE).toBe('line one\nline two\nline three');
  });

  it.each(['unset', 'other'] as const)('writes <N> lines to stderr when JOURNAL_STREAM is %s', async (stream) => {
    const r = await runChild(['levels'], stream, sockPath);
    await journald.waitFor(0);
    expect(r.code).toBe(0);
    expect(r.report?.target).toBe('stderr');
    expect(journald.messages).toHaveLength(0);
    const lines = r.stderr.split('\n');
    // The fields on the first line, the stack indented below it (docs/journal.md, "stderr fallback").
    expect(lines.slice(0, 4)).toEqual(['<7>d', '<6>i REQUEST_ID=r-1', '<4>w', '<3>Error: boom EXCEPTION_NAME=Error EXCEPTION_CODE=EBOOM']);
    expect(lines[4]).toMatch(/^<3> {6}at .*journal-child\.mjs/);
  });

  it('falls back to stderr without throwing when the journal socket does not exist (ENOENT)', async () => {
    const r = await runChild(['levels'], 'match', path.join(dir.dir, 'missing.sock'));
    expect(r.code).toBe(0);
    expect(r.report?.target).toBe('journal');
    expect(r.report?.stats.stderr).toBe(4);
    expect(r.stderr.split('\n').slice(0, 3)).toEqual(['<7>d', '<6>i REQUEST_ID=r-1', '<4>w']);
  });

  it('loses nothing on a normal exit: 1000 entries logged then process.exit(0), all 1000 arrive in order', async () => {
    const r = await runChild(['many', '1000'], 'match', sockPath);
    await journald.waitFor(1000);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const entries = journald.entries();
    expect(entries).toHaveLength(1000);
    expect(entries.map((e) => e.MESSAGE)).toEqual(Array.from({ length: 1000 }, (_, i) => `entry ${i}`));
    // With net.unix.max_dgram_qlen at 10 here most of them waited in the queue when exit() was called.
    expect(r.report!.stats.queued).toBeGreaterThan(0);
  });

  it('at exit, what journald does not take within exitTimeoutMs goes to stderr synchronously: nothing lost', async () => {
    // A socket nobody reads: it takes net.unix.max_dgram_qlen datagrams, then refuses.
    const stuckPath = path.join(dir.dir, 'stuck.sock');
    const stuck = native().bindDgram(stuckPath, false);
    try {
      const r = await runChild(['many', '100'], 'match', stuckPath, { SDH_JOURNAL_EXIT_MS: '200' });
      expect(r.code).toBe(0);
      const got: string[] = [];
      for (;;) {
        const d = await native().recvDatagram(stuck, 65536, 0, 100);
        if (!d) break;
        got.push(d.data.toString().split('\n')[0]!.slice('MESSAGE='.length));
      }
      const lines = r.stderr.split('\n').filter(Boolean);
      expect(got.length).toBeGreaterThan(0);
      expect(lines.length).toBeGreaterThan(0);
      // Each stderr line carries the entry's field (N=i) after the message.
      expect([...got, ...lines.map((l) => l.replace(/^<6>/, '').replace(/ N=\d+$/, ''))]).toEqual(Array.from({ length: 100 }, (_, i) => `entry ${i}`));
    } finally {
      native().close(stuck);
    }
  });

  it('pino end to end: a real pino logger writing through sd-handoff/pino', async () => {
    const r = await runChild(['pino'], 'match', sockPath);
    await journald.waitFor(5);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const e = journald.entries();
    expect(e.map((x) => [x.MESSAGE, x.PRIORITY])).toEqual([
      ['t', '7'],
      ['hello world', '6'],
      ['slow', '4'],
      ['request failed', '3'],
      ['down', '2'],
    ]);
    expect(e[1]).toMatchObject({ REQID: 'abc', USER: '{"name":"ann"}', SYSLOG_IDENTIFIER: 'journal-child' });
    expect(e[1]!.TIME).toBeUndefined();
    expect(e[1]!.PID).toBeUndefined();
    expect(e[1]!.HOSTNAME).toBeUndefined();
    expect(e[2]!.COMPONENT).toBe('db');
    expect(e[3]!.EXCEPTION_TEXT).toMatch(/^Error: broken\n {4}at /);
    expect(e[3]!.EXCEPTION_NAME).toBe('Error');
    expect(JSON.parse(e[3]!.ERR!)).toMatchObject({ type: 'Error', message: 'broken' });
  });
});
