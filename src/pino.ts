/**
 * `sd-handoff/pino`: a pino destination that writes each log line as one journal entry (see `journal.ts`).
 *
 * pino writes one JSON line per log call to its destination's `write()`, synchronously; this module parses the line
 * and maps it: `msg` -> MESSAGE, `level` -> PRIORITY (trace 10 and debug 20 -> 7, info 30 -> 6, warn 40 -> 4,
 * error 50 -> 3, fatal 60 -> 2; levels in between go to the next standard one above), `err` -> EXCEPTION_TEXT /
 * EXCEPTION_NAME / EXCEPTION_CODE / ERRNO plus ERR (the serialized error without its stack, as JSON), every other key
 * uppercased with characters outside `[A-Z0-9_]` replaced by `_` (nested objects as JSON). `time`, `pid` and
 * `hostname` are dropped by default: journald stamps every entry with the time it was received and with `_PID` and
 * `_HOSTNAME` from the kernel.
 *
 * pino is a peer dependency: nothing here imports it, so using sd-handoff without pino costs nothing.
 *
 * ```js
 * import pino from 'pino';
 * import { journalDestination } from 'sd-handoff/pino';
 * const log = pino({ level: 'debug' }, journalDestination());
 * ```
 *
 * @module sd-handoff/pino
 */
import { createJournal, FIELD_NAME_MAX, Priority, type Fields, type Journal, type JournalOptions } from './journal.js';

/** Options of {@link journalDestination}. */
export interface PinoDestinationOptions {
  /** pino's `messageKey` (default 'msg'). */
  messageKey?: string;
  /** pino's `errorKey` (default 'err'). */
  errorKey?: string;
  /** Keys left out of the entry (default ['time', 'pid', 'hostname']). */
  omit?: readonly string[];
}

/** What pino needs of a destination: `write(line)`, and `flush(cb)` for `logger.flush()`. */
export interface PinoJournalDestination {
  /** Writes one pino line (a JSON object) as one journal entry; never blocks on journald. */
  write(line: string): boolean;
  /** Calls `cb` once every entry written so far has reached journald (or stderr), or with the error. */
  flush(cb?: (err?: Error | null) => void): void;
  /** The journal entries go through. */
  readonly journal: Journal;
}

const LEVEL_NAMES: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** pino level (number, or label when `formatters.level` prints labels) -> journal priority. */
export function pinoPriority(level: unknown): number {
  const n = typeof level === 'number' ? level : typeof level === 'string' ? (LEVEL_NAMES[level] ?? Number(level)) : NaN;
  if (Number.isNaN(n)) return Priority.INFO;
  if (n <= 20) return Priority.DEBUG;
  if (n <= 30) return Priority.INFO;
  if (n <= 40) return Priority.WARNING;
  if (n <= 50) return Priority.ERR;
  return Priority.CRIT;
}

const nameCache = new Map<string, string>();

/**
 * A pino key as a valid journal field name: uppercased, characters outside `[A-Z0-9_]` replaced by `_`, an `X`
 * in front when it would start with `_` or a digit (journald refuses those), cut to 64 characters.
 */
export function journalFieldName(key: string): string {
  const cached = nameCache.get(key);
  if (cached !== undefined) return cached;
  let name = key.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
  if (name === '' || name[0] === '_' || (name[0]! >= '0' && name[0]! <= '9')) name = `X${name}`;
  name = name.slice(0, FIELD_NAME_MAX);
  if (nameCache.size < 4096) nameCache.set(key, name);
  return name;
}

/** The fields of one pino JSON object (already parsed). */
export function pinoFields(obj: Record<string, unknown>, options: PinoDestinationOptions = {}): Fields {
  const messageKey = options.messageKey ?? 'msg';
  const errorKey = options.errorKey ?? 'err';
  const omit = new Set(options.omit ?? ['time', 'pid', 'hostname']);
  const out: Fields = {};
  const err = obj[errorKey];
  let message = obj[messageKey];
  out.PRIORITY = pinoPriority(obj.level);
  if (err && typeof err === 'object') {
    const { stack, type, message: errMessage, code, errno, ...rest } = err as Record<string, unknown>;
    if (typeof stack === 'string') out.EXCEPTION_TEXT = stack;
    if (typeof type === 'string') out.EXCEPTION_NAME = type;
    if (typeof code === 'string' || typeof code === 'number') out.EXCEPTION_CODE = String(code);
    if (typeof errno === 'number' && Number.isInteger(errno) && errno !== 0) out.ERRNO = Math.abs(errno);
    out.ERR = { type, message: errMessage, code, errno, ...rest };
    // pino logs `log.error(err)` with the error's message as msg; when it did not, the error still names the entry.
    if (message === undefined && typeof errMessage === 'string') message = errMessage;
  }
  out.MESSAGE = typeof message === 'string' ? message : message === undefined ? '' : JSON.stringify(message);
  for (const key of Object.keys(obj)) {
    if (key === messageKey || key === errorKey || key === 'level' || omit.has(key)) continue;
    const name = journalFieldName(key);
    if (name === 'MESSAGE' || name === 'PRIORITY' || name in out) continue;
    out[name] = obj[key] as Fields[string];
  }
  return out;
}

/**
 * A pino destination writing to `journal` (or to a journal created from `journal` as options; default: a journal
 * with the default options). Lines that are not JSON objects are logged as they are, at priority 6.
 */
export function journalDestination(journal?: Journal | JournalOptions, options: PinoDestinationOptions = {}): PinoJournalDestination {
  const j: Journal = journal && typeof (journal as Journal).send === 'function' ? (journal as Journal) : createJournal(journal as JournalOptions | undefined);
  return {
    journal: j,
    write(line: string): boolean {
      const text = line.endsWith('\n') ? line.slice(0, -1) : line;
      let obj: unknown;
      try {
        obj = JSON.parse(text);
      } catch {
        obj = undefined;
      }
      if (obj && typeof obj === 'object' && !Array.isArray(obj)) j.send(pinoFields(obj as Record<string, unknown>, options));
      else j.send({ MESSAGE: text, PRIORITY: Priority.INFO });
      return true;
    },
    flush(cb?: (err?: Error | null) => void): void {
      j.flush().then(
        () => cb?.(null),
        (err: Error) => cb?.(err),
      );
    },
  };
}
