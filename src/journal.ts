/**
 * journald's native protocol: structured entries as datagrams to `/run/systemd/journal/socket`, with a stderr
 * fallback that journald's stream reader (`SyslogLevelPrefix=`) still files at the right priority.
 *
 * Wire format (systemd.journal-fields(7), sd_journal_sendv(3), "Native Journal Protocol" in systemd's docs): one
 * datagram per entry holding `KEY=VALUE\n` lines; a value holding a newline goes as `KEY\n` + its length as a
 * little-endian u64 + the value + `\n`, so a multi-line message stays ONE entry. An entry too large for a datagram
 * (`EMSGSIZE`/`ENOBUFS`), or at least `memfdThreshold` bytes, goes as an empty datagram carrying one sealed memfd
 * (SCM_RIGHTS) holding the same bytes: journald reads it, as it does for sd-journal.
 *
 * Where entries go: natively only when `JOURNAL_STREAM=<dev>:<ino>` matches fstat of fd 2 or fd 1, i.e. systemd
 * started us with our output connected to the journal. Otherwise, and when journald's socket is missing
 * (`ENOENT`/`ECONNREFUSED`), each entry goes to stderr as lines prefixed `<N>` (N = priority). Native datagrams carry
 * the sender's credentials on every message, so lines are attributed to the right pid even after an upgrade in which
 * the process that owned the stream has exited (the stream form had systemd#13708 before v244).
 *
 * The Upgrader's new process starts with pipes on stdout/stderr and gets the inherited journal stream by dup2 at
 * handover: detection is cached, so call {@link redetectJournals} (or `journal.redetect()`) after such a dup2. As a
 * safety net a journal whose `JOURNAL_STREAM` is set but does not match re-checks at most every `recheckMs`.
 *
 * Never blocks the event loop noticeably: one persistent CLOEXEC datagram socket (SO_SNDBUF 8 MiB as sd-journal),
 * sends with MSG_DONTWAIT; on EAGAIN entries wait in a bounded in-memory queue (overflow is counted and reported
 * once the queue drains) retried on a short unref'd timer. On process `'exit'` the queue is sent synchronously
 * (bounded by `exitTimeoutMs`; what is left then goes to stderr), so a normal exit loses no line.
 *
 * Reads `JOURNAL_STREAM`; never unsets it (children and the next version of the service need it).
 *
 * Spec: https://systemd.io/JOURNAL_NATIVE_PROTOCOL/ and https://www.freedesktop.org/software/systemd/man/latest/systemd.journal-fields.html
 */
import { writeSync } from 'node:fs';
import path from 'node:path';
import { format, inspect } from 'node:util';
import { sdError, show } from './errors.js';
import { fallbackLines } from './journal-fallback.js';
import { native, type NativeAddon } from './native.js';

/** journald's native socket. */
export const JOURNAL_SOCKET = '/run/systemd/journal/socket';
/** journald's limit on field names (journal_field_valid: "Don't allow names longer than 64 chars"). */
export const FIELD_NAME_MAX = 64;
/** sd-journal raises SO_SNDBUF of its socket to this (SNDBUF_SIZE): large entries then fit in one datagram. */
export const JOURNAL_SNDBUF = 8 * 1024 * 1024;
/** Default size from which an entry skips the datagram and goes in a memfd (see {@link JournalOptions.memfdThreshold}). */
export const MEMFD_THRESHOLD = 256 * 1024;

/** syslog(3) priorities, the values of `PRIORITY=`. */
export const Priority = {
  /** 0: the system is unusable. */
  EMERG: 0,
  /** 1: action must be taken immediately. */
  ALERT: 1,
  /** 2: critical condition (pino's `fatal`). */
  CRIT: 2,
  /** 3: error (pino's `error`). */
  ERR: 3,
  /** 4: warning. */
  WARNING: 4,
  /** 5: normal but significant. */
  NOTICE: 5,
  /** 6: informational (the default). */
  INFO: 6,
  /** 7: debug (pino's `debug` and `trace`). */
  DEBUG: 7,
} as const;
export type PriorityLevel = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7;

/**
 * A field value. Strings and Buffers go as they are (binary form when they hold a newline), numbers, booleans and
 * bigints as their decimal text, Dates as ISO 8601, Errors as `Name: message` (and fill the EXCEPTION_* fields),
 * other objects as JSON. `undefined` and `null` leave the field out.
 */
export type FieldValue = string | number | boolean | bigint | Buffer | Uint8Array | Error | Date | object | null | undefined;
/** Journal fields by name: uppercase ASCII letters, digits and `_`, not starting with `_` or a digit, at most 64. */
export type Fields = Record<string, FieldValue>;

/** Where a journal's entries currently go. */
export type JournalTarget = 'journal' | 'stderr';

/** What a {@link Journal} did so far. */
export interface JournalStats {
  /** Entries sent to journald as datagrams (including the memfd ones). */
  sent: number;
  /** Of those, entries sent in a memfd. */
  memfd: number;
  /** Entries written to stderr (fallback). */
  stderr: number;
  /** Entries waiting in memory for journald's socket to accept more. */
  queued: number;
  /** Entries dropped because the queue was full. */
  dropped: number;
  /** Entries discarded because their priority is above `maxPriority`. */
  filtered: number;
}

/** Something to write fallback lines to (default: `process.stderr`). */
export interface LineWriter {
  /** Writes `chunk` (whole lines); `callback` once it is written, as a Node stream's `write()`. */
  write(chunk: string, callback?: (err?: Error | null) => void): boolean;
}

/** Options of {@link createJournal}; everything after `fields` is the injected world, for tests. */
export interface JournalOptions {
  /** `SYSLOG_IDENTIFIER=`; default: basename of `process.argv[1]` without extension (`server` for `server.mjs`). */
  identifier?: string;
  /** Fields added to every entry (per-call fields with the same name win). */
  fields?: Fields;
  /**
   * Capture `CODE_FILE`, `CODE_LINE` and `CODE_FUNC` of the caller of each log call (default false: it costs a
   * stack capture per entry, about 2-5 µs).
   */
  codeLocation?: boolean;
  /** Discard entries of a lower importance (a higher number) than this; default 7 (keep everything). */
  maxPriority?: number;
  /** Force the target instead of detecting it from `JOURNAL_STREAM` (default 'auto'). */
  target?: JournalTarget | 'auto';
  /** Prefix fallback lines with `<N>` (default true; what journald's `SyslogLevelPrefix=` reads). */
  levelPrefix?: boolean;
  /** journald's socket (default {@link JOURNAL_SOCKET}). */
  socketPath?: string;
  /** SO_SNDBUF to ask for (default 8 MiB). */
  sndbuf?: number;
  /**
   * Entries of at least this many bytes go in a sealed memfd without trying a datagram first (default 256 KiB).
   * The largest datagram the kernel takes depends on SO_SNDBUF and privileges (about 208 KiB with the default
   * buffer, 416 KiB when raised without privilege, 4 MiB as root here); a fixed threshold keeps the behaviour the
   * same on every host and keeps large entries from filling the send buffer small ones need. Larger entries that
   * still fail with EMSGSIZE/ENOBUFS go in a memfd too.
   */
  memfdThreshold?: number;
  /** Bound of the in-memory queue used while journald's socket is full (default 8 MiB of serialized entries). */
  maxQueueBytes?: number;
  /** Delay between retries of a full socket (default 5 ms; the timer is unref'd). */
  retryMs?: number;
  /** How often a journal whose JOURNAL_STREAM is set but does not match re-checks (default 1000 ms; 0 = never). */
  recheckMs?: number;
  /** Longest time the synchronous send at process exit waits for journald (default 2000 ms). */
  exitTimeoutMs?: number;
  /** Where `JOURNAL_STREAM` is read to tell whether stderr is the journal (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** The command line the default `identifier` is derived from (default `process.argv`). */
  argv?: readonly string[];
  /** @internal Test seam: returns the addon (default: the loaded one). */
  addon?: () => NativeAddon;
  /** Where fallback lines go (default `process.stderr`). */
  stderr?: LineWriter;
  /** @internal Test seam: milliseconds clock (default `performance.now`). */
  now?: () => number;
  /**
   * @internal Test seam: runs `fn` after `ms`; returns a cancel function. The timer is unref'd unless `keepAlive` (a pending flush():
   * whoever awaits it wants the process to live until it resolves or times out).
   */
  schedule?: (fn: () => void, ms: number, keepAlive?: boolean) => () => void;
  /** @internal Test seam: blocks for `ms` (default Atomics.wait); only used by the synchronous send at exit. */
  sleepSync?: (ms: number) => void;
  /** @internal Test seam: registers the synchronous drain to run on process exit; returns an unregister function. */
  onExit?: (fn: () => void) => () => void;
}

/** A logger writing journal entries. Every method is synchronous and never blocks on journald. */
export interface Journal {
  /** `PRIORITY=7`. */
  debug(message: string | Error, fields?: Fields): void;
  /** `PRIORITY=6`. */
  info(message: string | Error, fields?: Fields): void;
  /** `PRIORITY=5`. */
  notice(message: string | Error, fields?: Fields): void;
  /** `PRIORITY=4`. */
  warn(message: string | Error, fields?: Fields): void;
  /** `PRIORITY=3`. */
  error(message: string | Error, fields?: Fields): void;
  /** `PRIORITY=2`. */
  crit(message: string | Error, fields?: Fields): void;
  /** Any priority 0..7. */
  log(priority: number, message: string | Error, fields?: Fields): void;
  /**
   * A raw entry: `fields` as given; `MESSAGE` defaults to '' , `PRIORITY` to 6, `SYSLOG_IDENTIFIER` to the
   * journal's identifier.
   */
  send(fields: Fields): void;
  /** A journal sharing this one's socket and queue, adding `fields` to every entry. */
  child(fields: Fields): Journal;
  /**
   * Resolves once every entry logged so far is written (sent to journald's socket or to stderr). Rejects with
   * SDH_TIMEOUT after `timeoutMs` (default 5000) when journald accepts nothing.
   */
  flush(timeoutMs?: number): Promise<void>;
  /** Re-runs the JOURNAL_STREAM check (after stdout/stderr were replaced, e.g. by dup2 at an upgrade handover). */
  redetect(): JournalTarget;
  /** Where entries go now. */
  readonly target: JournalTarget;
  /** The `SYSLOG_IDENTIFIER=` of its entries. */
  readonly identifier: string;
  /** Counters of what was sent, dropped and written to stderr since the journal was created. */
  stats(): JournalStats;
  /** Flushes, closes the socket and unregisters the exit hook. Later entries go to stderr. Idempotent. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Field names and values

const validNames = new Set<string>();

/**
 * Checks a field name as journald does (journal_field_valid): 1..64 of `A-Z`, `0-9`, `_`, not starting with `_`
 * (trusted fields) or a digit. journald silently drops an invalid field; we throw SDH_INVALID_FIELD naming it.
 */
export function checkFieldName(name: string): string {
  if (validNames.has(name)) return name;
  const fail = (why: string) => sdError('SDH_INVALID_FIELD', `journal field name ${show(name)} ${why}`, { field: name });
  if (typeof name !== 'string') throw sdError('SDH_INVALID_FIELD', `journal field name must be a string, got ${show(name)}`, { field: name });
  if (name.length === 0) throw fail('is empty');
  if (name.length > FIELD_NAME_MAX) throw fail(`is ${name.length} characters; journald allows at most ${FIELD_NAME_MAX}`);
  if (name[0] === '_') throw fail('starts with "_" (journald reserves those for the fields it adds itself)');
  if (name.charCodeAt(0) >= 0x30 && name.charCodeAt(0) <= 0x39) throw fail('starts with a digit');
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (!((c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f)) {
      throw fail(`holds ${show(name[i])} at index ${i}; only A-Z, 0-9 and "_" are allowed`);
    }
  }
  // Names come from code, so the set stays small; the bound only guards against names built from data.
  if (validNames.size < 4096) validNames.add(name);
  return name;
}

function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** `Name: message` of an Error, as Node prints its first line. */
function errorLine(err: Error): string {
  return err.message ? `${err.name}: ${err.message}` : err.name;
}

/** The text or bytes a value is sent as, or undefined to leave the field out. */
export function fieldValue(value: FieldValue): string | Uint8Array | undefined {
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
    case 'boolean':
    case 'bigint':
      return String(value);
    case 'undefined':
      return undefined;
    case 'object':
      if (value === null) return undefined;
      if (value instanceof Uint8Array) return value;
      if (value instanceof Error) return errorLine(value);
      if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
      try {
        return JSON.stringify(value, jsonReplacer) ?? String(value);
      } catch {
        // Circular: inspect copes and still says what the object held.
        return inspect(value, { depth: 4, breakLength: Infinity });
      }
    default:
      return String(value);
  }
}

const NL = 0x0a;

/**
 * Serializes one entry in journald's native format. Values holding a newline use the binary form
 * (`KEY\n` + u64 LE length + value + `\n`); everything else `KEY=VALUE\n`. Names must already be valid.
 */
export function serializeEntry(fields: Iterable<readonly [string, string | Uint8Array]>): Buffer {
  let text = '';
  let parts: Buffer[] | undefined;
  for (const [key, value] of fields) {
    const isString = typeof value === 'string';
    const binary = isString ? value.includes('\n') : value.includes(NL);
    if (!binary && isString) {
      text += `${key}=${value}\n`;
      continue;
    }
    parts ??= [];
    if (text) parts.push(Buffer.from(text, 'utf8'));
    text = '';
    if (!binary) {
      parts.push(Buffer.from(`${key}=`, 'utf8'), Buffer.from(value as Uint8Array), Buffer.from('\n'));
      continue;
    }
    const bytes = isString ? Buffer.from(value, 'utf8') : Buffer.from(value as Uint8Array);
    const head = Buffer.alloc(key.length + 1 + 8);
    head.write(key, 0, 'latin1');
    head[key.length] = NL;
    head.writeBigUInt64LE(BigInt(bytes.length), key.length + 1);
    parts.push(head, bytes, Buffer.from('\n'));
  }
  if (!parts) return Buffer.from(text, 'utf8');
  if (text) parts.push(Buffer.from(text, 'utf8'));
  return Buffer.concat(parts);
}

export { fallbackLines } from './journal-fallback.js';

// ---------------------------------------------------------------------------------------------------------------
// JOURNAL_STREAM detection

/** Options of {@link isJournalStream}. */
export interface DetectOptions {
  /** Where `JOURNAL_STREAM` is read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** @internal Test seam: returns the addon (default: the loaded one). */
  addon?: () => NativeAddon;
}

/**
 * True when `JOURNAL_STREAM=<dev>:<ino>` names the file that fd 2 (stderr) or fd 1 (stdout) is, i.e. systemd
 * connected our output to the journal. False when the variable is unset or names another file, or the fds are
 * closed. Throws SDH_INVALID_ENV for a malformed value (a journal treats that as "not connected").
 */
export function isJournalStream(options: DetectOptions = {}): boolean {
  const env = options.env ?? process.env;
  const text = env.JOURNAL_STREAM;
  if (text === undefined || text === '') return false;
  const m = /^(\d+):(\d+)$/.exec(text);
  if (!m) {
    throw sdError('SDH_INVALID_ENV', `JOURNAL_STREAM=${show(text)} is not <device>:<inode> in decimal`, { variable: 'JOURNAL_STREAM', value: text });
  }
  const dev = BigInt(m[1]!);
  const ino = BigInt(m[2]!);
  const addon = (options.addon ?? native)();
  for (const fd of [2, 1]) {
    try {
      const st = addon.fstat(fd);
      if (st.dev === dev && st.ino === ino) return true;
    } catch {
      // A closed stdout/stderr is simply not the journal.
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------------------
// The transport: one socket, one queue, shared by a journal and its children

interface Entry {
  data: Buffer;
  priority: number;
  message: string;
  exceptionText: string | undefined;
  /** The entry's fields, printed on the stderr form's first line. */
  fields?: ReadonlyMap<string, string | Uint8Array>;
}

type SendResult = 'sent' | 'again' | 'unreachable';

const live = new Set<Transport>();

function defaultSchedule(fn: () => void, ms: number, keepAlive = false): () => void {
  const t = setTimeout(fn, ms);
  if (!keepAlive) t.unref();
  return () => clearTimeout(t);
}

let sleepCell: Int32Array | undefined;
function defaultSleepSync(ms: number): void {
  sleepCell ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.wait(sleepCell, 0, 0, ms);
}

/**
 * Writes to fd 2 synchronously. Node writes to a pipe or socket stderr asynchronously on POSIX (and libuv makes the
 * fd non-blocking), so at exit a full pipe would silently keep the lines: retry EAGAIN while `more()`.
 */
function writeFd2Sync(text: string, more: () => boolean, sleep: (ms: number) => void): void {
  let buf = Buffer.from(text, 'utf8');
  while (buf.length > 0) {
    try {
      buf = buf.subarray(writeSync(2, buf));
    } catch (err) {
      if ((err as { code?: string }).code !== 'EAGAIN' || !more()) return;
      sleep(0.2);
    }
  }
}

function defaultOnExit(fn: () => void): () => void {
  process.on('exit', fn);
  return () => process.off('exit', fn);
}

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

class Transport {
  readonly #env: NodeJS.ProcessEnv;
  readonly #addonFn: () => NativeAddon;
  readonly #stderr: LineWriter;
  readonly #stderrSync: (text: string, more: () => boolean, sleep: (ms: number) => void) => void;
  readonly #now: () => number;
  readonly #schedule: (fn: () => void, ms: number, keepAlive?: boolean) => () => void;
  readonly #sleepSync: (ms: number) => void;
  readonly #forced: JournalTarget | undefined;
  readonly #socketPath: string;
  readonly #sndbuf: number;
  readonly #memfdThreshold: number;
  readonly #maxQueueBytes: number;
  readonly #retryMs: number;
  readonly #recheckMs: number;
  readonly #exitTimeoutMs: number;
  readonly levelPrefix: boolean;

  #target: JournalTarget = 'stderr';
  #detected = false;
  /** JOURNAL_STREAM is set but did not match: worth re-checking later. */
  #mismatch = false;
  #lastCheck = 0;
  #sock = -1;
  #queue: Entry[] = [];
  /** Index of the oldest queued entry in #queue. */
  #head = 0;
  #queueBytes = 0;
  #lastRefusal = -Infinity;
  #droppedSinceReport = 0;
  #cancelRetry: (() => void) | undefined;
  #pendingWrites = 0;
  #waiters: Array<() => void> = [];
  #unregisterExit: (() => void) | undefined;
  #closed = false;
  readonly stats: JournalStats = { sent: 0, memfd: 0, stderr: 0, queued: 0, dropped: 0, filtered: 0 };

  constructor(options: JournalOptions) {
    this.#env = options.env ?? process.env;
    this.#addonFn = options.addon ?? native;
    this.#stderr = options.stderr ?? process.stderr;
    const injected = options.stderr;
    this.#stderrSync = injected ? (text) => void injected.write(text) : writeFd2Sync;
    this.#now = options.now ?? (() => performance.now());
    this.#schedule = options.schedule ?? defaultSchedule;
    this.#sleepSync = options.sleepSync ?? defaultSleepSync;
    const target = options.target ?? 'auto';
    if (target !== 'auto' && target !== 'journal' && target !== 'stderr') {
      throw sdError('SDH_INVALID_OPTION', `target must be 'auto', 'journal' or 'stderr', got ${show(target)}`, { option: 'target', value: target });
    }
    this.#forced = target === 'auto' ? undefined : target;
    this.#socketPath = options.socketPath ?? JOURNAL_SOCKET;
    this.#sndbuf = positiveInt('sndbuf', options.sndbuf, JOURNAL_SNDBUF);
    this.#memfdThreshold = positiveInt('memfdThreshold', options.memfdThreshold, MEMFD_THRESHOLD);
    this.#maxQueueBytes = positiveInt('maxQueueBytes', options.maxQueueBytes, 8 * 1024 * 1024);
    this.#retryMs = positiveInt('retryMs', options.retryMs, 5);
    this.#recheckMs = nonNegativeInt('recheckMs', options.recheckMs, 1000);
    this.#exitTimeoutMs = nonNegativeInt('exitTimeoutMs', options.exitTimeoutMs, 2000);
    this.levelPrefix = options.levelPrefix ?? true;
    this.#unregisterExit = (options.onExit ?? defaultOnExit)(() => this.drainSync());
    live.add(this);
  }

  get target(): JournalTarget {
    if (!this.#detected) this.redetect();
    else if (this.#mismatch && this.#recheckMs > 0 && this.#now() - this.#lastCheck >= this.#recheckMs) this.redetect();
    return this.#target;
  }

  redetect(): JournalTarget {
    this.#detected = true;
    this.#lastCheck = this.#now();
    this.#mismatch = false;
    let target: JournalTarget = 'stderr';
    if (this.#closed) target = 'stderr';
    else if (this.#forced) target = this.#forced;
    else {
      try {
        if (isJournalStream({ env: this.#env, addon: this.#addonFn })) target = 'journal';
        else this.#mismatch = !!this.#env.JOURNAL_STREAM;
      } catch {
        // No addon (not Linux, not built) or a malformed JOURNAL_STREAM: stderr still reaches whoever reads it.
      }
    }
    this.#target = target;
    if (target === 'stderr' && this.#queued > 0) this.#spillQueue();
    return target;
  }

  emit(entry: Entry): void {
    if (this.target === 'stderr') {
      this.#writeStderr(entry);
      return;
    }
    if (this.#queued > 0) {
      // Each refused send costs an exception (about 70 µs here): while the socket is full, try at most once a
      // millisecond from log calls; the retry timer does the rest.
      if (this.#now() - this.#lastRefusal >= 1) this.#drain();
      if (this.#queued > 0) {
        this.#enqueue(entry);
        return;
      }
    }
    const r = this.#send(entry, true);
    if (r === 'again') {
      this.#lastRefusal = this.#now();
      this.#enqueue(entry);
    } else if (r === 'unreachable') this.#writeStderr(entry);
  }

  #socket(): number {
    if (this.#sock < 0) this.#sock = this.#addonFn().dgramSocket(this.#sndbuf);
    return this.#sock;
  }

  /** One attempt to hand `entry` to journald. Errors other than "full" and "absent" also fall back to stderr. */
  #send(entry: Entry, dontwait: boolean): SendResult {
    let addon: NativeAddon;
    let sock: number;
    try {
      addon = this.#addonFn();
      sock = this.#socket();
    } catch {
      return 'unreachable';
    }
    if (entry.data.length < this.#memfdThreshold) {
      try {
        addon.sendTo(sock, this.#socketPath, entry.data, [], dontwait);
        this.stats.sent++;
        return 'sent';
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return 'again';
        // Too large for a datagram with this SO_SNDBUF: the memfd below, as sd-journal does.
        if (code !== 'EMSGSIZE' && code !== 'ENOBUFS') return 'unreachable';
      }
    }
    let memfd = -1;
    try {
      memfd = addon.memfdSealed('journal-entry', entry.data);
      addon.sendTo(sock, this.#socketPath, Buffer.alloc(0), [memfd], dontwait);
      this.stats.sent++;
      this.stats.memfd++;
      return 'sent';
    } catch (err) {
      const code = errnoCode(err);
      return code === 'EAGAIN' || code === 'EWOULDBLOCK' ? 'again' : 'unreachable';
    } finally {
      // journald holds its own reference once the datagram is queued.
      if (memfd >= 0) addon.close(memfd);
    }
  }

  #enqueue(entry: Entry): void {
    if (this.#queueBytes + entry.data.length > this.#maxQueueBytes) {
      this.stats.dropped++;
      this.#droppedSinceReport++;
    } else {
      this.#queue.push(entry);
      this.#queueBytes += entry.data.length;
      this.stats.queued = this.#queued;
    }
    this.#armRetry();
  }

  /** Retries soon (next timer turn) while journald is taking entries, after `retryMs` when it took none. */
  #armRetry(progress = false): void {
    if (this.#cancelRetry || this.#queued === 0) return;
    this.#cancelRetry = this.#schedule(
      () => {
        this.#cancelRetry = undefined;
        this.#armRetry(this.#drain() > 0);
      },
      progress ? 0 : this.#retryMs,
    );
  }

  get #queued(): number {
    return this.#queue.length - this.#head;
  }

  /** Sends queued entries in order until the socket is full again. Returns how many left the queue. */
  #drain(): number {
    const start = this.#head;
    while (this.#head < this.#queue.length) {
      const entry = this.#queue[this.#head]!;
      const r = this.#send(entry, true);
      if (r === 'again') {
        this.#lastRefusal = this.#now();
        break;
      }
      this.#queue[this.#head++] = undefined as unknown as Entry;
      this.#queueBytes -= entry.data.length;
      if (r === 'unreachable') this.#writeStderr(entry);
    }
    const done = this.#head - start;
    // Shift the array only now and then: shift() per entry is quadratic on a long queue.
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    this.stats.queued = this.#queued;
    if (this.#queued === 0) {
      if (this.#droppedSinceReport > 0) this.#reportDrops();
      this.#settle();
    }
    return done;
  }

  /** Tells the journal how many entries the full queue cost, as journald's own "Suppressed N messages". */
  #reportDrops(): void {
    const n = this.#droppedSinceReport;
    this.#droppedSinceReport = 0;
    const message = `sd-handoff journal: ${n} entr${n === 1 ? 'y' : 'ies'} dropped while journald's socket was full`;
    const entry: Entry = {
      data: serializeEntry([
        ['MESSAGE', message],
        ['PRIORITY', String(Priority.WARNING)],
        ['SDH_DROPPED', String(n)],
      ]),
      priority: Priority.WARNING,
      message,
      exceptionText: undefined,
      fields: new Map([['SDH_DROPPED', String(n)]]),
    };
    const r = this.#send(entry, true);
    if (r === 'again') this.#enqueue(entry);
    else if (r === 'unreachable') this.#writeStderr(entry);
  }

  /** Moves the queue to stderr; at exit synchronously, since an asynchronous write would never happen. */
  #spillQueue(atExit = false): void {
    const queued = this.#queue.slice(this.#head);
    this.#queue = [];
    this.#head = 0;
    this.#queueBytes = 0;
    this.stats.queued = 0;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    if (!atExit) {
      for (const e of queued) this.#writeStderr(e);
      return;
    }
    const deadline = this.#now() + this.#exitTimeoutMs;
    for (const e of queued) {
      this.stats.stderr++;
      this.#stderrSync(fallbackLines(e.priority, e.message, e.exceptionText, this.levelPrefix, e.fields), () => this.#now() < deadline, this.#sleepSync);
    }
  }

  #writeStderr(entry: Entry): void {
    this.stats.stderr++;
    this.#pendingWrites++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.#pendingWrites--;
      this.#settle();
    };
    try {
      this.#stderr.write(fallbackLines(entry.priority, entry.message, entry.exceptionText, this.levelPrefix, entry.fields), finish);
    } catch {
      // stderr closed (EPIPE): there is nowhere left to say anything.
      finish();
    }
  }

  #settle(): void {
    if (this.#queued > 0 || this.#pendingWrites > 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  flush(timeoutMs: number): Promise<void> {
    if (this.#queued > 0) this.#drain();
    if (this.#queued === 0 && this.#pendingWrites === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let cancel: (() => void) | undefined;
      const waiter = () => {
        cancel?.();
        resolve();
      };
      this.#waiters.push(waiter);
      cancel = this.#schedule(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(
          sdError('SDH_TIMEOUT', `journal flush: ${this.#queued} entries still queued after ${timeoutMs} ms (journald accepts nothing)`, {
            timeoutMs,
            queued: this.#queued,
          }),
        );
      }, timeoutMs, true);
    });
  }

  /**
   * Process exit: sends the queue synchronously, waiting for journald to make room, for at most `exitTimeoutMs`;
   * whatever is left then goes to stderr (which under systemd is the journal's stream too).
   */
  drainSync(): void {
    if (this.#queued === 0) return;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    const deadline = this.#now() + this.#exitTimeoutMs;
    for (;;) {
      this.#drain();
      if (this.#queued === 0 || this.#now() >= deadline) break;
      this.#sleepSync(0.2);
    }
    if (this.#queued > 0) this.#spillQueue(true);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.flush(this.#exitTimeoutMs || 1);
    } catch {
      this.drainSync();
    }
    this.#closed = true;
    this.#unregisterExit?.();
    this.#unregisterExit = undefined;
    live.delete(this);
    if (this.#sock >= 0) {
      try {
        this.#addonFn().close(this.#sock);
      } catch {
        /* already gone */
      }
      this.#sock = -1;
    }
    this.redetect();
  }
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw sdError('SDH_INVALID_OPTION', `${name} must be a positive integer, got ${show(value)}`, { option: name, value });
  return value;
}

function nonNegativeInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0) throw sdError('SDH_INVALID_OPTION', `${name} must be an integer >= 0, got ${show(value)}`, { option: name, value });
  return value;
}

/**
 * Re-runs the JOURNAL_STREAM check of every open journal of this process. The Upgrader calls it after moving the
 * inherited journal stream onto stdout/stderr with dup2; call it yourself after replacing fd 1 or 2.
 */
export function redetectJournals(): void {
  for (const t of live) t.redetect();
}

// ---------------------------------------------------------------------------------------------------------------
// The front end

/** The default `SYSLOG_IDENTIFIER`: the script's name without extension, as systemd would use the program's name. */
export function defaultIdentifier(argv: readonly string[] = process.argv): string {
  const script = argv[1];
  if (!script) return path.basename(argv[0] ?? 'node') || 'node';
  return path.parse(script).name || 'node';
}

const FRAME = /^\s*at (?:(.+?) \()?(.+?):(\d+):\d+\)?$/;

/**
 * CODE_FILE / CODE_LINE / CODE_FUNC of the caller of `above` (the public method called by the user). Parses the
 * formatted frame rather than V8's CallSites so source maps (`--enable-source-maps`, tsx) apply to it.
 */
function codeLocation(above: (...args: never[]) => unknown): Array<[string, string]> {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  try {
    Error.stackTraceLimit = 1;
    Error.captureStackTrace(holder, above);
  } finally {
    Error.stackTraceLimit = limit;
  }
  const m = FRAME.exec(holder.stack?.split('\n')[1] ?? '');
  if (!m) return [];
  let file = m[2]!;
  if (file.startsWith('file://')) file = decodeURIComponent(new URL(file).pathname);
  const out: Array<[string, string]> = [
    ['CODE_FILE', file],
    ['CODE_LINE', m[3]!],
  ];
  const fn = m[1]?.replace(/^async /, '');
  if (fn && fn !== '<anonymous>') out.push(['CODE_FUNC', fn]);
  return out;
}

/** EXCEPTION_TEXT (what console.error prints), EXCEPTION_NAME, EXCEPTION_CODE and ERRNO of an error. */
export function errorFields(err: Error): Array<[string, string]> {
  const out: Array<[string, string]> = [['EXCEPTION_TEXT', inspect(err, { colors: false, depth: 4 })]];
  out.push(['EXCEPTION_NAME', err.name]);
  const { code, errno } = err as { code?: unknown; errno?: unknown };
  if (typeof code === 'string' || typeof code === 'number') out.push(['EXCEPTION_CODE', String(code)]);
  // Node's system errors carry the negated errno; journald's ERRNO= is the positive number.
  if (typeof errno === 'number' && Number.isInteger(errno) && errno !== 0) out.push(['ERRNO', String(Math.abs(errno))]);
  return out;
}

function checkPriority(value: unknown): number {
  const n = typeof value === 'string' && /^[0-7]$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 7) {
    throw sdError('SDH_INVALID_FIELD', `journal field PRIORITY must be an integer 0..7, got ${show(value)}`, { field: 'PRIORITY', value });
  }
  return n;
}

const logFormatted = Symbol('logFormatted');

class JournalImpl implements Journal {
  readonly #transport: Transport;
  readonly #fields: ReadonlyArray<readonly [string, FieldValue]>;
  readonly #codeLocation: boolean;
  readonly #maxPriority: number;
  readonly identifier: string;

  constructor(transport: Transport, identifier: string, fields: Fields | undefined, codeLoc: boolean, maxPriority: number) {
    this.#transport = transport;
    this.identifier = identifier;
    this.#fields = fields ? Object.entries(fields).map(([k, v]) => [checkFieldName(k), v] as const) : [];
    this.#codeLocation = codeLoc;
    this.#maxPriority = maxPriority;
  }

  readonly debug = (message: string | Error, fields?: Fields): void => this.#log(Priority.DEBUG, message, fields, this.debug);
  readonly info = (message: string | Error, fields?: Fields): void => this.#log(Priority.INFO, message, fields, this.info);
  readonly notice = (message: string | Error, fields?: Fields): void => this.#log(Priority.NOTICE, message, fields, this.notice);
  readonly warn = (message: string | Error, fields?: Fields): void => this.#log(Priority.WARNING, message, fields, this.warn);
  readonly error = (message: string | Error, fields?: Fields): void => this.#log(Priority.ERR, message, fields, this.error);
  readonly crit = (message: string | Error, fields?: Fields): void => this.#log(Priority.CRIT, message, fields, this.crit);
  readonly log = (priority: number, message: string | Error, fields?: Fields): void => this.#log(checkPriority(priority), message, fields, this.log);

  readonly send = (fields: Fields): void => {
    const { MESSAGE, PRIORITY, ...rest } = fields;
    const priority = PRIORITY === undefined || PRIORITY === null ? Priority.INFO : checkPriority(PRIORITY);
    this.#log(priority, MESSAGE instanceof Error ? MESSAGE : (fieldValue(MESSAGE) ?? ''), rest, this.send);
  };

  /** Used by captureConsole: `text` already holds the stack (util.format), `error` only fills the EXCEPTION_* fields. */
  [logFormatted](priority: number, text: string, error: Error | undefined): void {
    this.#log(priority, text, undefined, this[logFormatted], error);
  }

  #log(
    priority: number,
    message: string | Error | Uint8Array,
    fields: Fields | undefined,
    above: (...args: never[]) => unknown,
    formattedError?: Error,
  ): void {
    if (priority > this.#maxPriority) {
      this.#transport.stats.filtered++;
      return;
    }
    // Later sets win: identifier < journal-wide fields < per-call fields < the call's own MESSAGE and PRIORITY.
    const out = new Map<string, string | Uint8Array>();
    let error: Error | undefined;
    let text: string;
    if (message instanceof Error) {
      error = message;
      text = errorLine(message);
    } else text = typeof message === 'string' ? message : Buffer.from(message).toString('utf8');
    out.set('MESSAGE', typeof message === 'string' || message instanceof Error ? text : message);
    out.set('PRIORITY', String(priority));
    out.set('SYSLOG_IDENTIFIER', this.identifier);
    if (this.#codeLocation) for (const [k, v] of codeLocation(above)) out.set(k, v);
    const put = (key: string, value: FieldValue) => {
      if (key === 'MESSAGE' || key === 'PRIORITY') return;
      const v = fieldValue(value);
      if (v === undefined) return;
      if (value instanceof Error) error ??= value;
      out.set(key, v);
    };
    for (const [k, v] of this.#fields) put(k, v);
    if (fields) for (const k of Object.keys(fields)) put(checkFieldName(k), fields[k]);
    let exceptionText: string | undefined;
    if (error) {
      for (const [k, v] of errorFields(error)) if (!out.has(k)) out.set(k, v);
      exceptionText = out.get('EXCEPTION_TEXT') as string;
    } else if (formattedError) {
      for (const [k, v] of errorFields(formattedError)) if (!out.has(k)) out.set(k, v);
    } else if (typeof out.get('EXCEPTION_TEXT') === 'string') {
      // A stack given as a field (sd-handoff/pino maps pino's err.stack to it) is printed on stderr as well.
      exceptionText = out.get('EXCEPTION_TEXT') as string;
    }
    this.#transport.emit({ data: serializeEntry(out), priority, message: text, exceptionText, fields: out });
  }

  child(fields: Fields): Journal {
    const merged: Fields = Object.fromEntries(this.#fields);
    Object.assign(merged, fields);
    return new JournalImpl(this.#transport, this.identifier, merged, this.#codeLocation, this.#maxPriority);
  }

  flush(timeoutMs = 5000): Promise<void> {
    return this.#transport.flush(positiveInt('timeoutMs', timeoutMs, 5000));
  }

  redetect(): JournalTarget {
    return this.#transport.redetect();
  }

  get target(): JournalTarget {
    return this.#transport.target;
  }

  stats(): JournalStats {
    return { ...this.#transport.stats };
  }

  close(): Promise<void> {
    return this.#transport.close();
  }
}

/**
 * Creates a journal logger. Entries go to journald natively when systemd connected our stderr/stdout to the
 * journal (`JOURNAL_STREAM`), else to stderr with `<N>` prefixes. Throws SDH_INVALID_FIELD for a bad name in
 * `fields` and SDH_INVALID_OPTION for a bad option; never throws because journald is absent.
 */
export function createJournal(options: JournalOptions = {}): Journal {
  const identifier = options.identifier ?? defaultIdentifier(options.argv);
  if (typeof identifier !== 'string' || identifier === '' || /[\n\0]/.test(identifier)) {
    throw sdError('SDH_INVALID_OPTION', `identifier must be a non-empty string without newline or NUL, got ${show(identifier)}`, { option: 'identifier', value: identifier });
  }
  const maxPriority = options.maxPriority === undefined ? Priority.DEBUG : checkMaxPriority(options.maxPriority);
  return new JournalImpl(new Transport(options), identifier, options.fields, options.codeLocation ?? false, maxPriority);
}

function checkMaxPriority(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 7) {
    throw sdError('SDH_INVALID_OPTION', `maxPriority must be an integer 0..7, got ${show(value)}`, { option: 'maxPriority', value });
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------------------
// console

const CONSOLE_PRIORITIES = { debug: Priority.DEBUG, log: Priority.INFO, info: Priority.INFO, warn: Priority.WARNING, error: Priority.ERR } as const;

/**
 * Routes console.log/info (6), console.warn (4), console.error (3) and console.debug (7) to `journal`, formatted as
 * console formats them (util.format); an Error among the arguments also fills the EXCEPTION_* fields. Returns a
 * function that puts the original methods back (only those still ours). Opt-in: nothing is captured otherwise.
 */
export function captureConsole(journal: Journal, target: Console = console): () => void {
  const originals = new Map<keyof typeof CONSOLE_PRIORITIES, (...args: unknown[]) => void>();
  const installed = new Map<keyof typeof CONSOLE_PRIORITIES, (...args: unknown[]) => void>();
  for (const name of Object.keys(CONSOLE_PRIORITIES) as Array<keyof typeof CONSOLE_PRIORITIES>) {
    const priority = CONSOLE_PRIORITIES[name];
    originals.set(name, target[name]);
    const replacement = (...args: unknown[]) => {
      const text = format(...args);
      const err = args.find((a): a is Error => a instanceof Error);
      if (journal instanceof JournalImpl) journal[logFormatted](priority, text, err);
      else journal.log(priority, text);
    };
    installed.set(name, replacement);
    target[name] = replacement;
  }
  return () => {
    for (const [name, fn] of originals) if (target[name] === installed.get(name)) target[name] = fn;
  };
}
