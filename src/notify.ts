/**
 * sd_notify(3): tells systemd about the service's state, one datagram per message to `$NOTIFY_SOCKET`.
 *
 * `NOTIFY_SOCKET` is a filesystem path or, when it starts with `@`, an abstract socket name (sent by the addon
 * with the exact address length: Node's own abstract-socket support cannot do it). Not running under systemd
 * (no `NOTIFY_SOCKET`) is the normal case: every function returns `false` and does nothing. Success returns
 * `true`; a real failure (the socket is gone, bad input) throws {@link SdHandoffError}.
 *
 * Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; never unsets them (children started by the
 * Upgrader need them to report after a `MAINPID=` handover).
 *
 * Spec: https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html
 */
import { sdError, show } from './errors.js';
import { native, type NativeAddon } from './native.js';

/** The kernel's limit of fds in one message (SCM_MAX_FD); larger sets are sent in several messages. */
export const MAX_FDS_PER_MESSAGE = 253;
/** systemd's limit on fd names (FDNAME_MAX). */
export const FDNAME_MAX = 255;

/** Injected world of a {@link Notifier}: tests pass fakes, the default uses the real process. */
export interface NotifierOptions {
  /** Where `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` are read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** This process's pid, compared with `WATCHDOG_PID` (default `process.pid`). */
  pid?: number;
  /** CLOCK_MONOTONIC in microseconds (default: `process.hrtime.bigint()`, which libuv reads from CLOCK_MONOTONIC). */
  monotonicUsec?: () => bigint;
  /** @internal Test seam: returns the addon (default: the loaded one; only called when NOTIFY_SOCKET is set). */
  addon?: () => NativeAddon;
}

/** Options of {@link Notifier.fdStore}. */
export interface FdStoreOptions {
  /**
   * Let systemd poll the fds and drop one that reports POLLHUP/POLLERR (default true). Pass `false` (FDPOLL=0,
   * systemd >= 254) for fds that may legitimately hang up.
   */
  poll?: boolean;
}

/**
 * Checks an fd name as systemd does (fdname_is_valid): 1..255 printable ASCII characters, no ':'.
 * Throws SDH_INVALID_NAME naming the value.
 */
export function checkFdName(name: unknown, what = 'FDNAME'): string {
  if (typeof name !== 'string') throw sdError('SDH_INVALID_NAME', `${what} must be a string, got ${show(name)}`, { name });
  if (name.length === 0) throw sdError('SDH_INVALID_NAME', `${what} must not be empty`, { name });
  if (name.length > FDNAME_MAX) {
    throw sdError('SDH_INVALID_NAME', `${what} ${show(name.slice(0, 40) + '...')} is ${name.length} characters; at most ${FDNAME_MAX}`, { name });
  }
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) {
      throw sdError('SDH_INVALID_NAME', `${what} ${show(name)} holds a control or non-ASCII character at index ${i}`, { name });
    }
    if (c === 0x3a) throw sdError('SDH_INVALID_NAME', `${what} ${show(name)} holds ":" (LISTEN_FDNAMES separates names with it)`, { name });
  }
  return name;
}

function checkLine(what: string, value: unknown): string {
  if (typeof value !== 'string') throw sdError('SDH_INVALID_OPTION', `${what} must be a string, got ${show(value)}`, { option: what, value });
  if (/[\n\0]/.test(value)) throw sdError('SDH_INVALID_OPTION', `${what} ${show(value)} must not hold a newline or NUL`, { option: what, value });
  return value;
}

function checkInt(what: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw sdError('SDH_INVALID_OPTION', `${what} must be an integer >= ${min}, got ${show(value)}`, { option: what, value });
  }
  return value;
}

/** The longest delay Node's timers accept (2^31-1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Sends sd_notify messages. Use the module-level functions; build your own only to inject a fake world. */
export class Notifier {
  readonly #env: NodeJS.ProcessEnv;
  readonly #pid: number;
  readonly #monotonicUsec: () => bigint;
  readonly #addon: () => NativeAddon;
  #watchdogTimer: NodeJS.Timeout | undefined;

  constructor(options: NotifierOptions = {}) {
    this.#env = options.env ?? process.env;
    this.#pid = options.pid ?? process.pid;
    this.#monotonicUsec = options.monotonicUsec ?? (() => process.hrtime.bigint() / 1000n);
    this.#addon = options.addon ?? native;
  }

  /** The notify socket address, or undefined when not under systemd. Throws for a malformed value. */
  socketPath(): string | undefined {
    const path = this.#env.NOTIFY_SOCKET;
    if (path === undefined || path === '') return undefined;
    if (path[0] !== '/' && path[0] !== '@') {
      throw sdError('SDH_NOTIFY_SOCKET', `NOTIFY_SOCKET=${show(path)} is neither an absolute path nor an @abstract name`, {
        variable: 'NOTIFY_SOCKET',
        value: path,
      });
    }
    if (path.length < 2) throw sdError('SDH_NOTIFY_SOCKET', `NOTIFY_SOCKET=${show(path)} names no socket`, { variable: 'NOTIFY_SOCKET', value: path });
    return path;
  }

  /** True when NOTIFY_SOCKET is set (a notification would be sent). */
  get enabled(): boolean {
    return this.socketPath() !== undefined;
  }

  /**
   * Sends `state` (newline-separated `KEY=VALUE` assignments) with `fds` attached. More than 253 fds go in several
   * messages, each carrying the same state. Returns false when not under systemd.
   */
  send(state: string, fds: readonly number[] = []): boolean {
    const path = this.socketPath();
    if (path === undefined) return false;
    if (typeof state !== 'string' || state.length === 0) throw sdError('SDH_INVALID_OPTION', `state must be a non-empty string, got ${show(state)}`);
    const addon = this.#addon();
    const data = Buffer.from(state, 'utf8');
    if (fds.length <= MAX_FDS_PER_MESSAGE) {
      addon.sendDatagram(path, data, [...fds]);
      return true;
    }
    for (let i = 0; i < fds.length; i += MAX_FDS_PER_MESSAGE) addon.sendDatagram(path, data, fds.slice(i, i + MAX_FDS_PER_MESSAGE));
    return true;
  }

  /** `READY=1` (+ `STATUS=`). Also starts the automatic watchdog keep-alive when systemd asked for one. */
  ready(status?: string): boolean {
    const sent = this.send(status === undefined ? 'READY=1' : `READY=1\nSTATUS=${checkLine('status', status)}`);
    if (sent) this.startWatchdog();
    return sent;
  }

  /** `RELOADING=1` with `MONOTONIC_USEC=` (a `Type=notify-reload` unit hangs without it). Send `ready()` after. */
  reloading(status?: string): boolean {
    const usec = this.#monotonicUsec();
    return this.send(`RELOADING=1\nMONOTONIC_USEC=${usec}${status === undefined ? '' : `\nSTATUS=${checkLine('status', status)}`}`);
  }

  /** `STOPPING=1` (+ `STATUS=`). */
  stopping(status?: string): boolean {
    return this.send(status === undefined ? 'STOPPING=1' : `STOPPING=1\nSTATUS=${checkLine('status', status)}`);
  }

  /** `STATUS=text`: free-form, shown by `systemctl status`. */
  status(text: string): boolean {
    return this.send(`STATUS=${checkLine('status', text)}`);
  }

  /**
   * `MAINPID=pid`: the service's main process is now `pid`. With the default `NotifyAccess=main`, systemd accepts
   * nothing more from this process once it has processed this message, so anything else to say (READY=1, STATUS=)
   * must travel in the same datagram: pass it in `also`.
   */
  mainPid(pid: number, also: { ready?: boolean; status?: string } = {}): boolean {
    let state = `MAINPID=${checkInt('pid', pid, 1)}`;
    if (also.ready) state += '\nREADY=1';
    if (also.status !== undefined) state += `\nSTATUS=${checkLine('status', also.status)}`;
    return this.send(state);
  }

  /** `ERRNO=n`: the service failed with errno `n`. */
  errno(n: number): boolean {
    return this.send(`ERRNO=${checkInt('errno', n, 0)}`);
  }

  /** `EXTEND_TIMEOUT_USEC=`: the current start/reload/stop needs `ms` more milliseconds from now. */
  extendTimeout(ms: number): boolean {
    checkInt('ms', ms, 0);
    return this.send(`EXTEND_TIMEOUT_USEC=${BigInt(ms) * 1000n}`);
  }

  /** `WATCHDOG=1`: one keep-alive ping. */
  watchdog(): boolean {
    return this.send('WATCHDOG=1');
  }

  /**
   * The watchdog interval systemd asked for, in microseconds, or 0 when none (no `WATCHDOG_USEC`, or
   * `WATCHDOG_PID` names another process), as sd_watchdog_enabled(3).
   */
  watchdogUsec(): number {
    const text = this.#env.WATCHDOG_USEC;
    if (text === undefined || text === '') return 0;
    if (!/^\d+$/.test(text) || Number(text) <= 0 || !Number.isSafeInteger(Number(text))) {
      throw sdError('SDH_INVALID_ENV', `WATCHDOG_USEC=${show(text)} is not a positive integer`, { variable: 'WATCHDOG_USEC', value: text });
    }
    const pidText = this.#env.WATCHDOG_PID;
    if (pidText !== undefined && pidText !== '') {
      if (!/^\d+$/.test(pidText)) {
        throw sdError('SDH_INVALID_ENV', `WATCHDOG_PID=${show(pidText)} is not a process id`, { variable: 'WATCHDOG_PID', value: pidText });
      }
      if (Number(pidText) !== this.#pid) return 0;
    }
    return Number(text);
  }

  /**
   * Starts pinging `WATCHDOG=1` every half interval, on an unref'd timer: a blocked event loop stops the pings
   * and systemd's watchdog fires, which is the point. Returns false when systemd asked for no watchdog.
   * Idempotent.
   */
  startWatchdog(): boolean {
    if (this.#watchdogTimer) return true;
    const usec = this.watchdogUsec();
    if (usec === 0 || !this.enabled) return false;
    // Node's timers take at most 2^31-1 ms; a longer delay runs after 1 ms instead (a WatchdogSec= of 50 days sent
    // about 830 datagrams a second). Pinging every 24.8 days is still more often than half of such an interval.
    const every = Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(usec / 2000)));
    this.#watchdogTimer = setInterval(() => {
      try {
        this.watchdog();
      } catch {
        // The notify socket went away (systemd is stopping us): nothing left to tell.
      }
    }, every);
    this.#watchdogTimer.unref();
    return true;
  }

  /** Stops the automatic keep-alive (for example after handing MAINPID to another process). */
  stopWatchdog(): void {
    if (this.#watchdogTimer) clearInterval(this.#watchdogTimer);
    this.#watchdogTimer = undefined;
  }

  /**
   * `BARRIER=1`: resolves true once systemd has processed every notification sent before it (it closes the fd
   * we pass), or rejects with SDH_TIMEOUT after `timeoutMs`. False when not under systemd.
   */
  async barrier(timeoutMs = 5000): Promise<boolean> {
    checkInt('timeoutMs', timeoutMs, 1);
    if (this.socketPath() === undefined) return false;
    const addon = this.#addon();
    const [ours, theirs] = addon.socketpair();
    let theirsOpen = true;
    try {
      this.send('BARRIER=1', [theirs]);
      addon.close(theirs);
      theirsOpen = false;
      // systemd closes its copy of `theirs` when it reaches the barrier: we then read end-of-file.
      const got = await addon.recvMsg(ours, 1, 0, timeoutMs).catch((err: { code?: string }) => {
        if (err.code === 'ETIMEDOUT') throw sdError('SDH_TIMEOUT', `BARRIER=1 was not answered within ${timeoutMs} ms`, { timeoutMs });
        throw err;
      });
      return got.data.length === 0;
    } finally {
      // Never close a number twice: it may already belong to someone else.
      if (theirsOpen) addon.close(theirs);
      addon.close(ours);
    }
  }

  /**
   * `FDSTORE=1` + `FDNAME=name`: keeps `fds` in systemd's fd store (needs `FileDescriptorStoreMax=` > 0). They come
   * back through `LISTEN_FDS` after a restart or crash. More than 253 fds go in several messages.
   */
  fdStore(name: string, fds: readonly number[], options: FdStoreOptions = {}): boolean {
    checkFdName(name);
    if (!Array.isArray(fds) || fds.length === 0 || !fds.every((fd) => Number.isInteger(fd) && fd >= 0)) {
      throw sdError('SDH_INVALID_OPTION', `fds must be a non-empty array of fd numbers, got ${show(fds)}`, { option: 'fds', value: fds });
    }
    const poll = options.poll ?? true;
    return this.send(`FDSTORE=1\nFDNAME=${name}${poll ? '' : '\nFDPOLL=0'}`, fds);
  }

  /** `FDSTOREREMOVE=1` + `FDNAME=name`: drops every stored fd of that name. */
  fdStoreRemove(name: string): boolean {
    checkFdName(name);
    return this.send(`FDSTOREREMOVE=1\nFDNAME=${name}`);
  }
}

/** The process-wide notifier behind the module functions. */
export const defaultNotifier = new Notifier();

/** Sends raw assignments (`KEY=VALUE\n...`) with optional fds. `false` when not under systemd. */
export const send = (state: string, fds?: readonly number[]): boolean => defaultNotifier.send(state, fds);
/** `READY=1` (+ `STATUS=`); starts the automatic watchdog keep-alive when `WatchdogSec=` is set. */
export const ready = (status?: string): boolean => defaultNotifier.ready(status);
/** `RELOADING=1` + `MONOTONIC_USEC=`. Always follow with {@link ready}. */
export const reloading = (status?: string): boolean => defaultNotifier.reloading(status);
/** `STOPPING=1`. */
export const stopping = (status?: string): boolean => defaultNotifier.stopping(status);
/** `STATUS=text`. */
export const status = (text: string): boolean => defaultNotifier.status(text);
/** `MAINPID=pid`, with READY=1 / STATUS= in the same datagram when asked (see {@link Notifier.mainPid}). */
export const mainPid = (pid: number, also?: { ready?: boolean; status?: string }): boolean => defaultNotifier.mainPid(pid, also);
/** `ERRNO=n`. */
export const errno = (n: number): boolean => defaultNotifier.errno(n);
/** `EXTEND_TIMEOUT_USEC=` from milliseconds. */
export const extendTimeout = (ms: number): boolean => defaultNotifier.extendTimeout(ms);
/** `WATCHDOG=1`. */
export const watchdog = (): boolean => defaultNotifier.watchdog();
/** Watchdog interval in µs, 0 when none. */
export const watchdogUsec = (): number => defaultNotifier.watchdogUsec();
/** Starts the automatic keep-alive at half of `WATCHDOG_USEC`. */
export const startWatchdog = (): boolean => defaultNotifier.startWatchdog();
/** Stops the automatic keep-alive. */
export const stopWatchdog = (): void => defaultNotifier.stopWatchdog();
/** `BARRIER=1`: waits until systemd processed all earlier notifications. */
export const barrier = (timeoutMs?: number): Promise<boolean> => defaultNotifier.barrier(timeoutMs);
/** `FDSTORE=1` + `FDNAME=`. */
export const fdStore = (name: string, fds: readonly number[], options?: FdStoreOptions): boolean => defaultNotifier.fdStore(name, fds, options);
/** `FDSTOREREMOVE=1` + `FDNAME=`. */
export const fdStoreRemove = (name: string): boolean => defaultNotifier.fdStoreRemove(name);
