/**
 * The notify socket `sd-handoff run` gives its programs as `NOTIFY_SOCKET` (`--ready notify`): an abstract unix
 * datagram socket of its own, bound by the addon with SO_PASSCRED, so every message carries the sender's pid.
 *
 * Why a proxy and not systemd's socket: `run` stays the service's main process, so with the default
 * `NotifyAccess=main` systemd would drop the program's messages anyway, and a program's `READY=1` during a reload
 * must mean "this new instance is ready", not "the service is ready". The sender's pid says which instance spoke: the
 * program itself or one of its descendants (a shell script that execs or forks the real server). What is done with
 * each assignment ({@link interpretNotify}):
 *
 *   READY=1                      this instance is ready (only the instance being started cares)
 *   STATUS=...                   forwarded to systemd as is, from the serving or the starting instance
 *   MAINPID=...                  ignored: `run` is and stays the main process (systemd would otherwise supervise
 *                                the program and lose `run`'s reload handling)
 *   RELOADING=1, STOPPING=1      ignored: `run` reports reloads and stops itself
 *   WATCHDOG=1, WATCHDOG=trigger with `--watchdog program`: forwarded from the serving instance (or its descendants)
 *                                only, so a new instance still starting cannot keep a hung one alive; otherwise
 *                                ignored (`--watchdog self`: `run` pings for itself)
 *   FDSTORE=1 (+ fds)            ignored, the fds closed
 *   BARRIER=1 (+ fd)             answered as systemd does: the fd is closed
 *   anything else                ignored (ERRNO=, EXTEND_TIMEOUT_USEC=, ...)
 *
 * Every fd a message carries is closed: nothing sent here is kept. An abstract name (`@sdh-run/PID/RANDOM`) needs no
 * writable directory (`ProtectSystem=strict` without `PrivateTmp=` leaves none) and leaves no file behind; anyone in
 * the network namespace may send to it, which is why only messages from a program's own process tree count.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { NativeAddon } from '../native.js';

/** What one notification from a program asks for. */
export interface NotifyMeaning {
  ready: boolean;
  /** A STATUS= to forward. */
  status?: string;
  /** WATCHDOG=1 or WATCHDOG=trigger. */
  watchdog?: '1' | 'trigger';
  /** Assignments ignored, as `KEY=VALUE` (for the log). */
  ignored: string[];
}

/** Reads a notification (`KEY=VALUE` lines) as {@link NotifyMeaning}. Pure. */
export function interpretNotify(text: string): NotifyMeaning {
  const meaning: NotifyMeaning = { ready: false, ignored: [] };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const eq = line.indexOf('=');
    const key = eq < 0 ? line : line.slice(0, eq);
    const value = eq < 0 ? '' : line.slice(eq + 1);
    if (key === 'READY' && value === '1') meaning.ready = true;
    else if (key === 'STATUS') meaning.status = value;
    else if (key === 'WATCHDOG' && (value === '1' || value === 'trigger')) meaning.watchdog = value;
    else meaning.ignored.push(line);
  }
  return meaning;
}

/** The parent pid of `pid` from /proc, or undefined when it is gone. */
export function procParent(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Which of `roots` the process `pid` is, or descends from (following parent pids at most 64 steps). Undefined when
 * none: a stranger, or a process that was reparented after its parent died.
 */
export function ownerOf(pid: number | undefined, roots: readonly number[], parentOf: (pid: number) => number | undefined = procParent): number | undefined {
  if (pid === undefined) return undefined;
  let p: number | undefined = pid;
  for (let i = 0; i < 64 && p !== undefined && p > 1; i++) {
    if (roots.includes(p)) return p;
    p = parentOf(p);
  }
  return undefined;
}

/** One message received: its text and the sender's pid (SCM_CREDENTIALS). */
export interface ProxyMessage {
  text: string;
  pid?: number;
}

/** The proxy socket and its receive loop. */
export class NotifyProxy {
  readonly address: string;
  readonly #fd: number;
  #open = true;
  readonly #loop: Promise<void>;

  /** Binds `@sdh-run/PID/RANDOM` and starts delivering messages to `onMessage` (fds already closed). */
  constructor(
    private readonly addon: NativeAddon,
    private readonly onMessage: (m: ProxyMessage) => void,
    private readonly onError: (err: unknown) => void,
    pid = process.pid,
  ) {
    this.address = `@sdh-run/${pid}/${randomBytes(6).toString('hex')}`;
    this.#fd = addon.bindDgram(this.address, true);
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    while (this.#open) {
      try {
        // A short poll: the wait holds a thread-pool thread, and close() waits for the loop.
        const r = await this.addon.recvDatagram(this.#fd, 4096, 16, 250);
        if (!r) continue;
        for (const fd of r.fds) this.addon.close(fd);
        this.onMessage({ text: r.data.toString('utf8'), ...(r.cred ? { pid: r.cred.pid } : {}) });
      } catch (err) {
        if (!this.#open) return;
        this.onError(err);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  async close(): Promise<void> {
    if (!this.#open) return;
    this.#open = false;
    await this.#loop;
    this.addon.close(this.#fd);
  }
}
