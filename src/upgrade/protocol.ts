/**
 * The private protocol between an upgrading process and the new process it spawns.
 *
 * The parent passes everything through `child_process.spawn`'s `stdio` array (Node dups each fd into the child
 * with CLOEXEC cleared) and describes the layout in one environment variable, `SDH_UPGRADE`, holding JSON:
 *
 *   fd 0        the parent's stdin
 *   fd 1, 2     pipes to the parent, which forwards them to its own stdout/stderr and keeps the last lines, so a
 *               new version that dies before it is ready is reported with what it printed
 *   fd 3        the channel: a unix stream socket carrying newline-delimited JSON messages
 *   fd 4, 5     the parent's own stdout and stderr (the journal stream under systemd); the child moves them onto
 *               1 and 2 once it is the main process, so nothing it prints is lost when the parent exits
 *   fd 6...     the listeners, in the order of `fds` (each with its name)
 *
 * `parent` must equal the child's parent pid, as `LISTEN_PID` must equal ours for systemd's fds: a grandchild
 * that inherited the variable by accident ignores it. The child unsets the variable once read.
 */
import { sdError, show } from '../errors.js';
import type { NativeAddon } from '../native.js';
import { StringDecoder } from 'node:string_decoder';

/** Name of the environment variable carrying the {@link UpgradeEnv}. */
export const UPGRADE_ENV = 'SDH_UPGRADE';
/** Protocol version; a child refuses any other. */
export const PROTOCOL_VERSION = 1;
/** Fd numbers in the child (see the module comment). */
export const CHANNEL_FD = 3;
export const STDOUT_FD = 4;
export const STDERR_FD = 5;
export const FIRST_LISTENER_FD = 6;

/** What the child learns from `SDH_UPGRADE`. */
export interface UpgradeEnv {
  v: number;
  /** The parent's pid. */
  parent: number;
  /** Listener names, in fd order from {@link FIRST_LISTENER_FD}. */
  names: string[];
  /** The upgrade's id (for logs). */
  id: string;
  /** The parent's nice value: the child returns to it at the handover (it may start at a lower priority). */
  nice?: number;
}

/**
 * Messages on the channel. Besides readiness, the new process may send requests to the old one before the handover
 * (`request` / `reply`, matched by `id`): a worker pool uses them to have the old primary retire a worker each time
 * the new primary has started one, so the two sets never run in full at once.
 */
export type ChildMessage =
  | { t: 'ready'; pid: number }
  | { t: 'failed'; reason: string }
  | { t: 'request'; id: number; body: unknown };
export type ParentMessage =
  | { t: 'handover'; lastUpgrade?: { ok: boolean; at: string; pid?: number; durationMs?: number; error?: string } }
  | { t: 'abort'; reason: string }
  | { t: 'reply'; id: number; ok: true; body: unknown }
  | { t: 'reply'; id: number; ok: false; error: string; code?: string };

/**
 * Parses and checks `SDH_UPGRADE`; undefined when unset or meant for another process. A parent that no longer
 * exists (`parentAlive` false: it died after spawning us, and we were reparented) still makes us its new version:
 * the channel's end then tells the Upgrader the parent is gone.
 */
export function parseUpgradeEnv(text: string | undefined, ppid: number, parentAlive: (pid: number) => boolean = () => true): UpgradeEnv | undefined {
  if (text === undefined || text === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw sdError('SDH_INVALID_ENV', `${UPGRADE_ENV}=${show(text.slice(0, 80))} is not JSON`, { variable: UPGRADE_ENV, value: text });
  }
  const env = value as Partial<UpgradeEnv>;
  if (
    typeof env !== 'object' ||
    env === null ||
    typeof env.v !== 'number' ||
    typeof env.parent !== 'number' ||
    !Array.isArray(env.names) ||
    !env.names.every((n) => typeof n === 'string') ||
    typeof env.id !== 'string'
  ) {
    throw sdError('SDH_INVALID_ENV', `${UPGRADE_ENV}=${show(text.slice(0, 80))} is not an upgrade description`, { variable: UPGRADE_ENV, value: text });
  }
  if (!Number.isInteger(env.parent) || env.parent <= 0) {
    throw sdError('SDH_INVALID_ENV', `${UPGRADE_ENV} names parent ${show(env.parent)}, not a pid`, { variable: UPGRADE_ENV, value: text });
  }
  if (env.nice !== undefined && !(Number.isInteger(env.nice) && env.nice >= -20 && env.nice <= 19)) {
    throw sdError('SDH_INVALID_ENV', `${UPGRADE_ENV} has nice ${show(env.nice)}; a nice value is an integer from -20 to 19`, { variable: UPGRADE_ENV, value: text });
  }
  if (env.v !== PROTOCOL_VERSION) {
    throw sdError('SDH_PROTOCOL', `${UPGRADE_ENV} speaks protocol ${env.v}; this sd-handoff speaks ${PROTOCOL_VERSION}`, { variable: UPGRADE_ENV });
  }
  if (env.parent !== ppid && parentAlive(env.parent)) return undefined;
  return env as UpgradeEnv;
}

/** The longest line {@link lineReader} buffers by default: a request or a message is far shorter. */
export const MAX_LINE_BYTES = 65_536;

/**
 * Splits a byte stream into newline-delimited JSON objects. Bytes are decoded across chunks (a UTF-8 character
 * split between two reads stays whole); only a line that is not a JSON object goes to `onBad`: an exception thrown by
 * `onMessage` propagates to the caller instead of being reported as a malformed line. A line longer than
 * `maxLength` characters goes to `onBad` (its first 80) and is dropped up to its end.
 */
export function lineReader(onMessage: (msg: unknown) => void, onBad: (line: string) => void, maxLength = MAX_LINE_BYTES): (chunk: Buffer) => void {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let skipping = false;
  return (chunk) => {
    pending += decoder.write(chunk);
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (skipping) {
        skipping = false;
        continue;
      }
      if (line.length > maxLength) onBad(line.slice(0, 80));
      else if (line) parseLine(line, onMessage, onBad);
    }
    if (pending.length > maxLength) {
      if (!skipping) onBad(pending.slice(0, 80));
      skipping = true;
      pending = '';
    }
  };
}

function parseLine(line: string, onMessage: (msg: unknown) => void, onBad: (line: string) => void): void {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch {
    onBad(line);
    return;
  }
  // Every message of these protocols is a JSON object: `null`, `3` or `"x"` would reach handlers reading fields.
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) onBad(line);
  else onMessage(msg);
}

/** Keeps the last lines a process printed, bounded in count and size. */
export class TailBuffer {
  readonly #lines: string[] = [];
  #partial = '';
  constructor(
    readonly maxLines = 20,
    readonly maxLineLength = 500,
  ) {}

  push(chunk: Buffer | string): void {
    const text = this.#partial + chunk.toString();
    const parts = text.split('\n');
    this.#partial = (parts.pop() ?? '').slice(-this.maxLineLength);
    for (const p of parts) {
      this.#lines.push(p.length > this.maxLineLength ? `${p.slice(0, this.maxLineLength)}...` : p);
      if (this.#lines.length > this.maxLines) this.#lines.shift();
    }
  }

  lines(): string[] {
    return this.#partial ? [...this.#lines, this.#partial].slice(-this.maxLines) : [...this.#lines];
  }
}

/**
 * Checks that the fds `SDH_UPGRADE` describes are there: a unix stream socket at {@link CHANNEL_FD}, open fds at
 * {@link STDOUT_FD} and {@link STDERR_FD}, and a socket for each listener. A forged or inherited variable with
 * nothing behind it would otherwise hand Node's own epoll fd at 3 to `net.Socket` (a raw ERR_INVALID_FD_TYPE).
 */
export function checkUpgradeFds(addon: NativeAddon, env: UpgradeEnv): void {
  const what = (fd: number): string => {
    try {
      const info = addon.describe(fd);
      return info.kind === 'socket' ? `a ${info.family} ${info.type} socket` : `a ${info.kind}`;
    } catch {
      return 'not open';
    }
  };
  const bad = (fd: number, role: string, is: string): never => {
    throw sdError('SDH_INVALID_ENV', `${UPGRADE_ENV} is set but fd ${fd} is not ${role} (it is ${is}): this process was not started by an upgrade`, { variable: UPGRADE_ENV, fd });
  };
  const channel = what(CHANNEL_FD);
  if (channel !== 'a unix stream socket') bad(CHANNEL_FD, 'the upgrade channel (a unix stream socket)', channel);
  for (const fd of [STDOUT_FD, STDERR_FD]) if (what(fd) === 'not open') bad(fd, "the parent's output", 'not open');
  env.names.forEach((name, i) => {
    const fd = FIRST_LISTENER_FD + i;
    const is = what(fd);
    if (!is.endsWith(' socket')) bad(fd, `the listener ${show(name)} (a socket)`, is);
  });
}
