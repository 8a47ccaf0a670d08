/**
 * The Upgrader: zero-downtime upgrades of a running service, the way Cloudflare's tableflip does them, told to
 * systemd as it happens.
 *
 * An upgrade spawns the next version of the program with every listener (by name), waits until it reports ready,
 * hands the main-process role over to it, then lets the old process drain its connections and exit:
 *
 *   old (main)                                      new
 *   RELOADING=1 + MONOTONIC_USEC  ─ spawn ─────────▶ Upgrader.create(): takes the listeners by name
 *                                                   listen() ... serve
 *                                                   ready(): writes the PID file (atomically), then says "ready"
 *   MAINPID=<new> + READY=1 ◀──── "ready" ───────── (waits)
 *   "handover" ──────────────────────────────────▶  moves stdout/stderr to the journal stream; is now main
 *   drain (Connection: close, idle grace) and exit
 *
 * Every notification is sent by the process that is main at that moment, so it works with the default
 * `NotifyAccess=main`. A new version that exits, crashes or does not become ready within `upgradeTimeoutMs` is
 * reported (exit code or signal and the last lines it printed); the old process keeps serving and still sends
 * `READY=1` (with a `STATUS=` saying what failed), because `RELOADING=1` never followed by `READY=1` leaves a
 * systemd reload job stuck for good.
 *
 * Triggers: the upgrade signals (default SIGHUP: `ExecReload=kill -HUP $MAINPID`, or `Type=notify-reload`), the
 * control socket (`sd-handoff upgrade`, which waits for the result and exits non-zero on failure), or a call to
 * {@link Upgrader.upgrade}.
 *
 * Reads `SDH_UPGRADE` (unset once read), `SDH_CONTROL_SOCKET`, and through the helpers it uses `LISTEN_*`,
 * `NOTIFY_SOCKET` and `WATCHDOG_*`.
 */
import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { closeSync, writeSync } from 'node:fs';
import os from 'node:os';
import { listenFds } from '../activation.js';
import { createJournal, defaultIdentifier, redetectJournals, type Journal } from '../journal.js';
import { drainServer, trackConnections } from '../drain.js';
import { SdHandoffError, sdError, show } from '../errors.js';
import type { UpgraderEvents } from '../events.js';
import { native, type NativeAddon } from '../native.js';
import { Notifier, defaultNotifier } from '../notify.js';
import { checkPidFilePath, removePidFile, writePidFile } from '../pidfile.js';
import { ControlServer, KEEP, type ControlContext } from './control.js';
import { offerListeners, sendLine, TakeoverClient } from './takeover.js';
import { setProcessNice } from './priority.js';
import { ContainerGuard } from './pid1.js';
import {
  bindPacket,
  bindStream,
  checkStreamAddress,
  ListenerSet,
  servePacket,
  serveStream,
  type HeldFd,
  type PacketAddress,
  type StreamAddress,
} from './listeners.js';
import {
  CHANNEL_FD,
  checkUpgradeFds,
  FIRST_LISTENER_FD,
  lineReader,
  parseUpgradeEnv,
  PROTOCOL_VERSION,
  STDERR_FD,
  STDOUT_FD,
  TailBuffer,
  UPGRADE_ENV,
  type ChildMessage,
  type ParentMessage,
  type UpgradeEnv,
} from './protocol.js';

/** True while a process with this pid exists (EPERM: it exists, and is not ours to signal). */
function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The Upgrader's states. */
export const State = {
  /** Created, not yet ready (a new process waiting to take over, or the first process starting). */
  STARTING: 'starting',
  /** The main process, serving. */
  READY: 'ready',
  /** Spawned a new version and waits for it. */
  UPGRADING: 'upgrading',
  /** Handed over to the new version; draining and about to exit. */
  DRAINING: 'draining',
  /** Stopping for good (SIGTERM, stop()). */
  STOPPING: 'stopping',
  /** Stopped. */
  STOPPED: 'stopped',
} as const;
/** One of the {@link State} values: what {@link Upgrader.state} returns. */
export type StateName = (typeof State)[keyof typeof State];

/** Reserved listener name of the control socket. */
export const CONTROL_LISTENER = 'sdh-control';

/**
 * A structured log entry of the Upgrader. Written to the journal as `SDH_EVENT`, `SDH_UPGRADE`, `SDH_NEW_PID`,
 * `SDH_OLD_PID`, `SDH_DURATION_MS` (stable names: docs/journal.md), so `journalctl -u UNIT SDH_EVENT=upgrade-failed`
 * finds them.
 */
export interface UpgradeLogEntry {
  /** syslog priority: 3 error, 4 warning, 5 notice, 6 info, 7 debug. */
  priority: number;
  /** `MESSAGE`: one line saying what happened, with the pids. */
  message: string;
  /** `SDH_EVENT`: upgrade-started, upgrade-ready, upgrade-failed, upgrade-took-over, draining, drained, exited, stopping... */
  event: string;
  /** `SDH_UPGRADE`: the upgrade's id, the same in the old and the new process. */
  upgrade?: string;
  /** `SDH_NEW_PID`. */
  newPid?: number;
  /** `SDH_OLD_PID`. */
  oldPid?: number;
  /** `SDH_DURATION_MS`. */
  durationMs?: number;
  /** Other facts (connections, forced, code...), written as `SDH_<NAME>`. */
  [field: string]: unknown;
}

/** Journal fields of an entry: the stable SDH_* names. */
export function upgradeLogFields(entry: UpgradeLogEntry): Record<string, string | number> {
  const fields: Record<string, string | number> = {};
  for (const [key, value] of Object.entries(entry)) {
    if (key === 'priority' || key === 'message' || value === undefined || value === null) continue;
    const name = `SDH_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
    fields[name] = typeof value === 'number' ? value : String(value);
  }
  return fields;
}

/** Options of {@link Upgrader.create}. Every option is checked at creation. */
export interface UpgraderOptions {
  /** PID file to write (atomically) before readiness, as `PIDFile=` reads it. */
  pidFile?: string;
  /** How long a new version may take to become ready (default 60 000 ms). */
  upgradeTimeoutMs?: number;
  /** How long the old process may drain before remaining connections are closed (default 30 000 ms). */
  drainTimeoutMs?: number;
  /** How long an idle keep-alive connection is kept open while draining (default 1 000 ms). */
  drainGraceMs?: number;
  /** Program to start as the new version (default: this Node binary). */
  command?: string;
  /** Its arguments (default: this process's `execArgv` and `argv`, so the same script starts again). */
  args?: string[];
  /** Working directory of the new version (default: this process's, read at upgrade time). */
  cwd?: string;
  /**
   * Signals that start an upgrade (default `['SIGHUP', 'SIGQUIT']`: SIGHUP as tableflip and systemd's
   * `ReloadSignal=` default, SIGQUIT as Pingora, for operators used to it; `[]` for none).
   */
  upgradeSignals?: NodeJS.Signals[];
  /**
   * Signals that stop gracefully (default `['SIGTERM']`, what `systemctl stop` and `restart` send): `STOPPING=1`, stop
   * accepting, drain (keep-alive connections told `Connection: close`, idle ones closed after the grace), keep systemd
   * from killing the drain with `EXTEND_TIMEOUT_USEC` while connections remain, exit 0. The same signal again ends
   * the drain at once. `[]` for none.
   */
  stopSignals?: NodeJS.Signals[];
  /**
   * How much lower (nice value) the new version's CPU priority is until it took over (default 10; 0 for none), for
   * every thread of it. Applied only when running as root, the only case where the new version can raise itself back.
   * A new version not ready after half of `upgradeTimeoutMs` gets the serving priority back (journal event
   * `startup-nice-lifted`): a machine busy enough to starve its start-up must not fail the upgrade for it.
   */
  startupNice?: number;
  /** How long a graceful stop may drain before the remaining connections are closed (default: `drainTimeoutMs`). */
  stopTimeoutMs?: number;
  /** Signals that stop fast: close the listeners, exit 0 without draining (default `['SIGINT']`; `[]` for none). */
  fastStopSignals?: NodeJS.Signals[];
  /** Path of the control socket (unix, mode 0600) that `sd-handoff upgrade` talks to (default `$SDH_CONTROL_SOCKET`). */
  controlSocket?: string;
  /**
   * Take the listeners over from an instance already running, through its control socket at this path (Pingora's
   * model: a process started by someone else replaces the running one). Default `$SDH_TAKEOVER`. The running
   * instance lets go only once this process is ready. See docs/takeover in the README.
   */
  takeover?: string;
  /** Keep every listener in systemd's fd store too, so it survives `systemctl restart` and crashes (default false). */
  fdStore?: boolean;
  /** Exit the process (status 0) once the old version has drained (default true). */
  exitWhenDrained?: boolean;
  /**
   * Receives the structured log entries (default: the journal, each field of the entry as `SDH_<NAME>`, so that
   * `journalctl SDH_EVENT=upgrade-failed` finds them).
   */
  log?: (entry: UpgradeLogEntry) => void;

  /** @internal Injected world, for tests. */
  env?: NodeJS.ProcessEnv;
  /** @internal */
  pid?: number;
  /** @internal */
  ppid?: number;
  /** @internal */
  notifier?: Notifier;
  /** @internal */
  addon?: NativeAddon;
  /** @internal */
  spawn?: (command: string, args: string[], options: SpawnOptions) => ChildProcess;
  /** @internal */
  exit?: (code: number) => void;
}

/** What a successful upgrade returns. */
export interface UpgradeResult {
  /** The new main pid. */
  pid: number;
  /** This (old) process's pid. */
  oldPid: number;
  /** From the trigger to the new version reporting ready. */
  durationMs: number;
}

/** Options of {@link Upgrader.listen}. */
export interface ListenOptions<S extends net.Server> {
  /** listen(2) backlog (default: the kernel's SOMAXCONN, systemd's default). */
  backlog?: number;
  /** The server to serve the listener with (an `http.Server`...); default a new `net.Server`. */
  server?: S;
  /** File mode of a unix path socket bound fresh (default: from the umask). */
  mode?: number;
}

/** One upgrade under way. */
interface UpgradeRun {
  promise: Promise<UpgradeResult>;
  child?: ChildProcess;
  /** Kills the new version and rejects the upgrade with `err` (used by stop()). */
  abort?: (err: Error) => void;
  /** Set by stop() before `abort` exists (during the beforeUpgrade hooks): the upgrade must not go on. */
  stopped?: Error;
}

interface Served {
  held: HeldFd;
  server?: net.Server;
  socket?: dgram.Socket;
}

const DEFAULTS = { upgradeTimeoutMs: 60_000, drainTimeoutMs: 30_000, drainGraceMs: 1000 };

function checkMs(options: Record<string, unknown>, name: string, fallback: number): number {
  const v = options[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw sdError('SDH_INVALID_OPTION', `${name} must be a positive number of milliseconds, got ${show(v)}`, { option: name, value: v });
  }
  return v;
}

function checkSignals(options: Record<string, unknown>, name: string, fallback: NodeJS.Signals[]): NodeJS.Signals[] {
  const v = options[name];
  if (v === undefined) return fallback;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && /^SIG[A-Z0-9]+$/.test(s))) {
    throw sdError('SDH_INVALID_OPTION', `${name} must be an array of signal names like "SIGHUP", got ${show(v)}`, { option: name, value: v });
  }
  return v as NodeJS.Signals[];
}

function checkOptions(options: UpgraderOptions): void {
  const known = new Set([
    'pidFile', 'upgradeTimeoutMs', 'drainTimeoutMs', 'drainGraceMs', 'command', 'args', 'cwd', 'upgradeSignals', 'stopSignals',
    'fastStopSignals', 'stopTimeoutMs', 'startupNice', 'controlSocket', 'takeover', 'fdStore', 'exitWhenDrained', 'log', 'env', 'pid', 'ppid', 'notifier', 'addon', 'spawn', 'exit',
  ]);
  if (typeof options !== 'object' || options === null) throw sdError('SDH_INVALID_OPTION', `options must be an object, got ${show(options)}`);
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw sdError('SDH_INVALID_OPTION', `unknown option ${show(key)}`, { option: key });
  }
  if (options.pidFile !== undefined) checkPidFilePath(options.pidFile);
  if (options.controlSocket !== undefined) checkPidFilePath(options.controlSocket, 'controlSocket');
  if (options.takeover !== undefined) checkPidFilePath(options.takeover, 'takeover');
  if (options.command !== undefined && (typeof options.command !== 'string' || options.command === '')) {
    throw sdError('SDH_INVALID_OPTION', `command must be a non-empty string, got ${show(options.command)}`, { option: 'command' });
  }
  if (options.args !== undefined && (!Array.isArray(options.args) || !options.args.every((a) => typeof a === 'string'))) {
    throw sdError('SDH_INVALID_OPTION', `args must be an array of strings, got ${show(options.args)}`, { option: 'args' });
  }
  if (options.cwd !== undefined && typeof options.cwd !== 'string') {
    throw sdError('SDH_INVALID_OPTION', `cwd must be a string, got ${show(options.cwd)}`, { option: 'cwd' });
  }
  for (const b of ['fdStore', 'exitWhenDrained'] as const) {
    if (options[b] !== undefined && typeof options[b] !== 'boolean') {
      throw sdError('SDH_INVALID_OPTION', `${b} must be a boolean, got ${show(options[b])}`, { option: b });
    }
  }
  for (const [name, fallback] of [['upgradeSignals', ['SIGHUP', 'SIGQUIT']], ['stopSignals', ['SIGTERM']], ['fastStopSignals', ['SIGINT']]] as const) {
    checkSignals(options as Record<string, unknown>, name, [...fallback]);
  }
  for (const name of ['upgradeTimeoutMs', 'drainTimeoutMs', 'drainGraceMs', 'stopTimeoutMs']) checkMs(options as Record<string, unknown>, name, 1);
  if (options.startupNice !== undefined && (!Number.isInteger(options.startupNice) || options.startupNice < 0 || options.startupNice > 19)) {
    throw sdError('SDH_INVALID_OPTION', `startupNice must be an integer from 0 to 19, got ${show(options.startupNice)}`, { option: 'startupNice', value: options.startupNice });
  }
  if (options.log !== undefined && typeof options.log !== 'function') {
    throw sdError('SDH_INVALID_OPTION', `log must be a function, got ${show(typeof options.log)}`, { option: 'log' });
  }
}

/** Default log sink: the journal (natively when stderr is the journal stream, else `<N>`-prefixed stderr lines). */
let defaultJournal: Journal | undefined;
function journalLog(entry: UpgradeLogEntry): void {
  defaultJournal ??= createJournal({ identifier: defaultIdentifier() });
  defaultJournal.log(entry.priority, entry.message, upgradeLogFields(entry));
}

/**
 * Upgrades a running service without dropping a connection. Create one per process with {@link Upgrader.create},
 * take every listener through {@link Upgrader.listen} / {@link Upgrader.listenPacket}, then call
 * {@link Upgrader.ready}. Events: `'upgrade'` (started), `'upgraded'` ({@link UpgradeResult}), `'upgrade-failed'`
 * (error), `'exiting'` (this old process must stop), `'drained'`; their arguments: {@link UpgraderEvents}.
 */
export class Upgrader extends EventEmitter<UpgraderEvents> {
  #state: StateName = State.STARTING;
  readonly #o: Required<Pick<UpgraderOptions, 'upgradeTimeoutMs' | 'drainTimeoutMs' | 'drainGraceMs' | 'fdStore' | 'exitWhenDrained' | 'startupNice'>> &
    UpgraderOptions;
  readonly #env: NodeJS.ProcessEnv;
  readonly #pid: number;
  readonly #addon: NativeAddon;
  readonly #notifier: Notifier;
  readonly #listeners: ListenerSet;
  readonly #served: Served[] = [];
  readonly #log: (entry: UpgradeLogEntry) => void;
  readonly #exit: (code: number) => void;
  readonly #upgradeEnv: UpgradeEnv | undefined;
  /** In a process taking over from a running instance (until it took over). */
  #takeover: { client: TakeoverClient; oldPid: number; path: string } | undefined;
  readonly #takeoverPath: string | undefined;
  readonly #takeoverReportFd: number | undefined;
  readonly #container: ContainerGuard;
  #channel: net.Socket | undefined;
  #control: ControlServer | undefined;
  #readyPromise: Promise<void> | undefined;
  #currentUpgrade: UpgradeRun | undefined;
  #handoverWaiter: ((msg: ParentMessage) => void) | undefined;
  /** New version only: the upgrading parent went away (channel closed) without handing over or aborting. */
  #parentGone = false;
  #parentAborted = false;
  readonly #requests = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #requestId = 0;
  #requestHandler: ((body: unknown) => unknown) | undefined;
  readonly #beforeUpgrade: Array<() => Promise<void>> = [];
  #stopPromise: Promise<void> | undefined;
  #exitingResolve!: () => void;
  readonly #signalHandlers: Array<[NodeJS.Signals, () => void]> = [];
  readonly #drainHooks: Array<() => unknown> = [];
  /**
   * The last upgrade's outcome, for status reports (`sd-handoff status` shows it); undefined before the first one. A
   * new version receives its parent's, so it survives the handover.
   */
  lastUpgrade:
    | {
        /** Whether the new version took over. */
        ok: boolean;
        /** When it ended, as an ISO 8601 date. */
        at: string;
        /** The new version's pid (when ok). */
        pid?: number;
        /** From the trigger to the handover, in ms (when ok). */
        durationMs?: number;
        /** Why it failed (when not ok). */
        error?: string;
      }
    | undefined;

  /** Resolves when this process must go: it handed over to a new version, or it is stopping. */
  readonly exiting: Promise<void>;

  private constructor(options: UpgraderOptions) {
    super();
    this.#o = {
      ...options,
      upgradeTimeoutMs: checkMs(options as Record<string, unknown>, 'upgradeTimeoutMs', DEFAULTS.upgradeTimeoutMs),
      drainTimeoutMs: checkMs(options as Record<string, unknown>, 'drainTimeoutMs', DEFAULTS.drainTimeoutMs),
      drainGraceMs: checkMs(options as Record<string, unknown>, 'drainGraceMs', DEFAULTS.drainGraceMs),
      fdStore: options.fdStore ?? false,
      startupNice: options.startupNice ?? 10,
      exitWhenDrained: options.exitWhenDrained ?? true,
    };
    this.#env = options.env ?? process.env;
    this.#pid = options.pid ?? process.pid;
    this.#addon = options.addon ?? native();
    this.#notifier = options.notifier ?? (options.env ? new Notifier({ env: options.env, pid: this.#pid }) : defaultNotifier);
    this.#listeners = new ListenerSet(this.#addon);
    this.#log = options.log ?? journalLog;
    this.#exit = options.exit ?? ((code) => process.exit(code));
    this.exiting = new Promise<void>((resolve) => (this.#exitingResolve = resolve));

    const upgradeText = this.#env[UPGRADE_ENV];
    delete this.#env[UPGRADE_ENV];
    this.#upgradeEnv = parseUpgradeEnv(upgradeText, options.ppid ?? process.ppid, pidExists);
    // Read once and unset, so a process this one starts later does not try a takeover of its own.
    const takeoverEnv = this.#env.SDH_TAKEOVER;
    const reportEnv = this.#env.SDH_TAKEOVER_REPORT_FD;
    delete this.#env.SDH_TAKEOVER;
    delete this.#env.SDH_TAKEOVER_REPORT_FD;
    this.#takeoverPath = this.#upgradeEnv ? undefined : options.takeover ?? (takeoverEnv || undefined);
    this.#takeoverReportFd = reportEnv && /^\d+$/.test(reportEnv) ? Number(reportEnv) : undefined;
    this.#container = new ContainerGuard({ pid: this.#pid, ppid: options.ppid ?? process.ppid, env: this.#env, addon: this.#addon, log: (e) => this.#emitLog(e), upgradeChild: this.#upgradeEnv !== undefined || this.#takeoverPath !== undefined });
  }

  /**
   * Creates the process's Upgrader: in a process started by an upgrade it takes the parent's listeners and
   * channel; otherwise it takes systemd's fds (`LISTEN_FDS`). Binds the control socket when one is configured.
   * Installs the signal handlers.
   */
  static async create(options: UpgraderOptions = {}): Promise<Upgrader> {
    checkOptions(options);
    const upg = new Upgrader(options);
    if (upg.#takeoverPath) await upg.#connectTakeover(upg.#takeoverPath);
    else upg.#adoptFds();
    await upg.#startControl();
    upg.#installSignals();
    return upg;
  }

  /** The current state (see {@link State}). */
  get state(): StateName {
    return this.#state;
  }

  /**
   * The nice value the service serves at, when this process runs at another one until it takes over (a new version
   * started at a lower priority); undefined otherwise. Processes it starts to serve (workers) should get this one.
   */
  get servingNice(): number | undefined {
    const nice = this.#upgradeEnv?.nice;
    return nice !== undefined && os.getPriority() !== nice ? nice : undefined;
  }

  /** True in a process started by an upgrade (until it took over). */
  get isUpgradeChild(): boolean {
    return this.#upgradeEnv !== undefined;
  }

  #adoptFds(): void {
    const up = this.#upgradeEnv;
    if (up) {
      checkUpgradeFds(this.#addon, up);
      for (const fd of [CHANNEL_FD, STDOUT_FD, STDERR_FD]) this.#addon.setCloexec(fd, true);
      this.#listeners.adopt(
        up.names.map((name, i) => {
          const fd = FIRST_LISTENER_FD + i;
          this.#addon.setCloexec(fd, true);
          return { name, fd, info: this.#addon.describe(fd), origin: 'parent' as const };
        }),
      );
      const channel = new net.Socket({ fd: CHANNEL_FD, readable: true, writable: true });
      channel.on('error', () => {});
      channel.on('data', lineReader((msg) => this.#onParentMessage(msg as ParentMessage), (line) => this.#onParentMessage({ t: 'abort', reason: `unexpected message ${show(line)}` })));
      const gone = (): void => {
        if (this.#parentGone || this.#channel !== channel) return;
        this.#parentGone = !this.#parentAborted;
        if (this.#parentGone) this.#orphaned();
        this.#onParentMessage({ t: 'abort', reason: 'the upgrading parent closed the channel before handing over' });
      };
      channel.once('end', gone);
      channel.once('close', gone);
      this.#channel = channel;
      return;
    }
    const fds = listenFds({ env: this.#env, pid: this.#pid, addon: this.#addon });
    this.#listeners.adopt(fds.map((f) => ({ name: f.name, fd: f.fd, info: f.info, origin: 'systemd' as const })));
  }

  /** New side of a takeover: receive the running instance's listeners, by name. */
  async #connectTakeover(path: string): Promise<void> {
    try {
      const { client, oldPid, listeners, env } = await TakeoverClient.connect(path, this.#addon, this.#o.upgradeTimeoutMs);
      this.#takeover = { client, oldPid, path };
      // What systemd told the main process and not us (started from ExecReload=, we are a control process).
      for (const key of ['NOTIFY_SOCKET', 'WATCHDOG_USEC'] as const) {
        if (this.#env[key] === undefined && typeof env[key] === 'string') this.#env[key] = env[key];
      }
      this.#listeners.adopt(listeners.map((l) => ({ name: l.name, fd: l.fd, info: this.#addon.describe(l.fd), origin: 'parent' as const })));
      this.#emitLog({ priority: 6, event: 'takeover-offered', message: `pid ${oldPid} offered ${listeners.length} listener(s) for takeover`, oldPid, newPid: this.#pid });
    } catch (err) {
      this.#report(`failed: ${(err as Error).message}`);
      throw err;
    }
  }

  /** Tells `sd-handoff takeover` (which started us with SDH_TAKEOVER_REPORT_FD) how the takeover ended. */
  #report(line: string): void {
    const fd = this.#takeoverReportFd;
    if (fd === undefined) return;
    try {
      writeSync(fd, `${line.split('\n')[0]}\n`);
      closeSync(fd);
    } catch {
      /* the launcher is gone */
    }
  }

  /** New side: the takeover cannot go on; tell the running instance why (it keeps serving) and the launcher. */
  async #failTakeover(error: SdHandoffError): Promise<never> {
    const t = this.#takeover;
    this.#takeover = undefined;
    if (t) {
      await t.client.send({ t: 'failed', reason: error.message }).catch(() => {});
      t.client.close();
    }
    this.#report(`failed: ${error.message}`);
    throw error;
  }

  async #startControl(): Promise<void> {
    const path = this.#o.controlSocket ?? this.#env.SDH_CONTROL_SOCKET ?? this.#takeoverPath;
    if (!path) return;
    checkPidFilePath(path, 'controlSocket');
    let held = this.#listeners.claim(CONTROL_LISTENER, 'stream', { path });
    if (!held) {
      const fd = this.#addon.listenUnix(path, 16, 0o600);
      held = this.#listeners.addFresh(CONTROL_LISTENER, fd, this.#addon.describe(fd));
    }
    this.#control = new ControlServer({
      fd: held.fd,
      addon: this.#addon,
      allowedUid: process.getuid?.() ?? 0,
      handlers: {
        upgrade: async () => {
          const r = await this.upgrade();
          return { ...r };
        },
        status: async () => ({ pid: this.#pid, state: this.#state, lastUpgrade: this.lastUpgrade ?? null }),
        takeover: (ctx) => this.#offerTakeover(ctx),
      },
      log: (message) => this.#emitLog({ priority: 4, event: 'control', message }),
    });
    this.#served.push({ held });
    // A new version shares the control socket with the process it replaces, but must not answer on it before it
    // is the main process (it would refuse upgrades as "starting"): it starts serving at the handover.
    if (!this.#upgradeEnv && !this.#takeover) await this.#control.start();
  }

  #installSignals(): void {
    const on = (sig: NodeJS.Signals, fn: () => void): void => {
      process.on(sig, fn);
      this.#signalHandlers.push([sig, fn]);
    };
    for (const sig of checkSignals(this.#o as unknown as Record<string, unknown>, 'upgradeSignals', ['SIGHUP', 'SIGQUIT'])) {
      on(sig, () => {
        this.upgrade().catch((err: SdHandoffError) => {
          // upgrade() logs the failures of an upgrade it ran; a request it refused at once is logged here.
          if (err.code === 'SDH_UPGRADE_IN_PROGRESS' || err.code === 'SDH_NOT_UPGRADING' || err.code === 'SDH_STOPPED') {
            this.#emitLog({ priority: 4, event: 'upgrade-refused', message: `${sig} ignored: ${err.message}`, code: err.code });
          }
        });
      });
    }
    for (const sig of checkSignals(this.#o as unknown as Record<string, unknown>, 'stopSignals', ['SIGTERM'])) {
      on(sig, () => {
        if (this.#state === State.DRAINING) return; // already on its way out; the drain is bounded
        if (this.#stopPromise) {
          this.#emitLog({ priority: 4, event: 'stop-forced', message: `${sig} again: stopping now` });
          this.#exit(0);
          return;
        }
        this.stop().then(
          () => this.#exit(0),
          () => this.#exit(1),
        );
      });
    }
    for (const sig of checkSignals(this.#o as unknown as Record<string, unknown>, 'fastStopSignals', ['SIGINT'])) {
      on(sig, () => {
        this.#emitLog({ priority: 5, event: 'stop-fast', message: `${sig}: fast stop` });
        if (this.#isMain()) this.#notifier.stopping(`fast stop (${sig})`);
        for (const s of this.#served) {
          s.server?.close();
          s.socket?.close();
        }
        if (this.#o.pidFile) removePidFile(this.#o.pidFile, this.#pid);
        this.#exit(0);
      });
    }
  }

  #removeSignals(): void {
    for (const [sig, fn] of this.#signalHandlers.splice(0)) process.off(sig, fn);
  }

  #emitLog(entry: UpgradeLogEntry): void {
    try {
      this.#log({ pid: this.#pid, ...entry });
    } catch {
      /* a broken log sink must not break an upgrade */
    }
  }

  /**
   * Returns a listening server for `name`: the parent's listener of that name during an upgrade, else systemd's
   * (socket activation or fd store, matched by name, or by address when exactly one unnamed fd has it), else one
   * bound fresh at `address`. Pass your `http.Server` as `options.server` so it is drained without resets.
   */
  async listen<S extends net.Server = net.Server>(name: string, address: StreamAddress, options: ListenOptions<S> = {}): Promise<S> {
    this.#checkOpen('listen');
    const addr = checkStreamAddress(address);
    if (name === CONTROL_LISTENER) throw sdError('SDH_INVALID_NAME', `listener name ${show(name)} is reserved`, { name });
    if (options.backlog !== undefined && (!Number.isInteger(options.backlog) || options.backlog < 1)) {
      throw sdError('SDH_INVALID_OPTION', `backlog must be a positive integer, got ${show(options.backlog)}`, { option: 'backlog', value: options.backlog });
    }
    if (options.server !== undefined && !(options.server instanceof net.Server)) {
      throw sdError('SDH_INVALID_OPTION', `server must be a net.Server (or http.Server), got ${show(typeof options.server)}`, { option: 'server' });
    }
    let held = this.#listeners.claim(name, 'stream', addr);
    if (!held && this.#takeover) await this.#failTakeover(this.#notOffered(name));
    if (!held) {
      const fd = await bindStream(addr, options.backlog ?? 511, this.#addon, options.mode);
      held = this.#listeners.addFresh(name, fd, this.#addon.describe(fd));
    }
    const server = (options.server ?? net.createServer()) as S;
    trackConnections(server);
    await serveStream(held.fd, options.backlog, server, this.#addon);
    this.#served.push({ held, server });
    return server;
  }

  /** Like {@link listen}, for UDP: returns a bound `dgram.Socket`. */
  async listenPacket(name: string, address: PacketAddress): Promise<dgram.Socket> {
    this.#checkOpen('listenPacket');
    const a = address as Partial<PacketAddress> | null;
    if (typeof a !== 'object' || a === null || typeof a.port !== 'number' || !Number.isInteger(a.port) || a.port < 0 || a.port > 65535) {
      throw sdError('SDH_INVALID_OPTION', `address must be { port, host?, type? } with port 0..65535, got ${show(address)}`, { option: 'address' });
    }
    let held = this.#listeners.claim(name, 'packet', address);
    if (!held && this.#takeover) await this.#failTakeover(this.#notOffered(name));
    if (!held) {
      const fd = await bindPacket(address, this.#addon);
      held = this.#listeners.addFresh(name, fd, this.#addon.describe(fd));
    }
    const socket = await servePacket(held.fd, held.info);
    this.#served.push({ held, socket });
    return socket;
  }

  /**
   * Takes the listener `name` as {@link listen} does (the parent's, systemd's by name or by address, else bound fresh
   * at `address`) without serving it: returns its fd, which this Upgrader keeps, hands to the next version and never
   * closes. For a process that serves the fd some other way: a worker pool's primary passes it to its workers,
   * sd-handoff/auto serves it with the application's own server (and drains it with an {@link onDrain} hook).
   */
  async holdListener(
    name: string,
    address: StreamAddress,
    options: {
      /** listen(2) backlog of a socket bound here (default 511, as Node's). */
      backlog?: number;
      /** File mode of a unix socket bound here. */
      mode?: number;
    } = {},
  ): Promise<{
    /** The listener's name. */
    name: string;
    /** Its fd, held by this Upgrader. */
    fd: number;
    /** Where it came from: `parent` (the upgrading parent), `systemd` or `fresh` (bound here). */
    origin: string;
  }> {
    this.#checkOpen('holdListener');
    const addr = checkStreamAddress(address);
    if (name === CONTROL_LISTENER) throw sdError('SDH_INVALID_NAME', `listener name ${show(name)} is reserved`, { name });
    let held = this.#listeners.claim(name, 'stream', addr);
    if (!held) {
      const fd = await bindStream(addr, options.backlog ?? 511, this.#addon, options.mode);
      held = this.#listeners.addFresh(name, fd, this.#addon.describe(fd));
    }
    this.#served.push({ held });
    return { name: held.name, fd: held.fd, origin: held.origin };
  }

  /** Inherited listeners nobody has claimed yet (ready() closes them), with what they are bound to. */
  unclaimedListeners(): Array<{
    /** The name it was passed under (LISTEN_FDNAMES, the fd store, or the parent's name for it). */
    name: string;
    /** Its fd. */
    fd: number;
    /** `parent` or `systemd`. */
    origin: string;
    /** `inet`, `inet6`, `unix` or `other`. */
    family?: string;
    /** The local address: IP text, or the unix socket path (`@` for abstract names). */
    address?: string;
    /** The local port, for inet and inet6. */
    port?: number;
  }> {
    return this.#listeners
      .all()
      .filter((h) => !h.claimed)
      .map((h) => ({ name: h.name, fd: h.fd, origin: h.origin, family: h.info.family, address: h.info.address, port: h.info.port }));
  }

  /**
   * Adds work that draining (after a handover, or on stop) waits for before the process exits, run alongside the
   * drains of the served listeners: a worker pool stopping its workers, a server served outside the Upgrader.
   */
  onDrain(hook: () => unknown): void {
    this.#drainHooks.push(hook);
  }

  /** True while this process is the service's main process as far as systemd knows. */
  #isMain(): boolean {
    return !this.#channel && !this.#takeover && this.#state !== State.DRAINING;
  }

  #notOffered(name: string): SdHandoffError {
    const offered = this.#listeners.all().filter((h) => h.origin === 'parent').map((h) => h.name);
    return sdError('SDH_NO_SUCH_LISTENER', `takeover: the running instance offers no listener named ${show(name)} (it offers: ${offered.join(', ') || 'none'})`, { name });
  }

  #checkOpen(what: string): void {
    if (this.#state !== State.STARTING && this.#state !== State.READY) {
      throw sdError('SDH_STOPPED', `${what}() called while the Upgrader is ${this.#state}`, { state: this.#state });
    }
  }

  /**
   * Declares this process ready: closes inherited fds nobody claimed, writes the PID file, and either tells
   * systemd `READY=1` (first process) or tells the upgrading parent, waits until it handed `MAINPID` over, and
   * becomes the main process. Runs once however often it is called.
   */
  ready(status?: string): Promise<void> {
    this.#readyPromise ??= this.#ready(status);
    return this.#readyPromise;
  }

  async #ready(status?: string): Promise<void> {
    if (this.#state !== State.STARTING) throw sdError('SDH_STOPPED', `ready() called while the Upgrader is ${this.#state}`);
    if (this.#takeover) {
      // Every listener offered must be claimed: one left over would be closed, and the service would lose it.
      const unclaimed = this.#listeners.all().filter((h) => !h.claimed && h.origin === 'parent').map((h) => h.name);
      if (unclaimed.length) {
        const claimed = this.#listeners.claimed().map((h) => h.name);
        await this.#failTakeover(
          sdError('SDH_NO_SUCH_LISTENER', `takeover: listener names do not match: the running instance offers ${unclaimed.join(', ')} that this process did not take (it took: ${claimed.join(', ') || 'none'})`, { unclaimed }),
        );
      }
    }
    const closed = this.#listeners.closeUnclaimed();
    if (closed.length) {
      this.#emitLog({ priority: 5, event: 'unclaimed-closed', message: `closed ${closed.length} inherited fd(s) nobody claimed: ${closed.map((c) => c.name).join(', ')}` });
    }
    if (this.#o.pidFile) writePidFile(this.#o.pidFile, this.#pid);
    if (this.#channel) {
      await this.#becomeMain();
      await this.#control?.start();
    } else if (this.#takeover) {
      await this.#completeTakeover();
      await this.#control?.start();
    }
    this.#state = State.READY;
    // The control socket stays out of the fd store: its path lives in RuntimeDirectory=, which systemd empties on
    // restart, so a stored one would come back unreachable. It is bound afresh instead.
    if (this.#o.fdStore) {
      for (const h of this.#listeners.claimed()) if (h.name !== CONTROL_LISTENER) this.#notifier.fdStore(h.name, [h.fd]);
    }
    if (this.#upgradeEnv || this.#takeoverPath) this.#notifier.startWatchdog();
    else this.#notifier.ready(status ?? `serving ${this.#listeners.claimed().length} listener(s)`);
  }

  /** New side of a takeover: report ready, wait until the running instance handed MAINPID over. */
  async #completeTakeover(): Promise<void> {
    const t = this.#takeover!;
    let answer: Record<string, unknown>;
    try {
      await t.client.send({ t: 'ready', pid: this.#pid });
      answer = await t.client.next(this.#o.upgradeTimeoutMs);
    } catch (err) {
      return this.#failTakeover(err instanceof SdHandoffError ? err : sdError('SDH_UPGRADE_FAILED', (err as Error).message, { cause: err }));
    }
    if (answer.t !== 'handover') {
      if (this.#o.pidFile) removePidFile(this.#o.pidFile, this.#pid);
      return this.#failTakeover(sdError('SDH_UPGRADE_FAILED', `takeover: the running instance did not hand over: ${String(answer.reason ?? show(answer))}`));
    }
    t.client.close();
    this.#takeover = undefined;
    this.lastUpgrade = answer.lastUpgrade as Upgrader['lastUpgrade'];
    this.#emitLog({ priority: 6, event: 'upgrade-took-over', message: `pid ${this.#pid} took over from pid ${t.oldPid}`, newPid: this.#pid, oldPid: t.oldPid });
    this.#report(`ok ${this.#pid}`);
  }

  /** Child side: report ready, wait for the handover, then take stdout/stderr over. */
  #onParentMessage(msg: ParentMessage): void {
    if (msg.t === 'reply') {
      const pending = this.#requests.get(msg.id);
      if (!pending) return;
      this.#requests.delete(msg.id);
      if (msg.ok) pending.resolve(msg.body);
      else pending.reject(new SdHandoffError(msg.error, { code: (msg.code as 'SDH_PROTOCOL') ?? 'SDH_PROTOCOL' }));
      return;
    }
    if (msg.t === 'abort') {
      if (!this.#parentGone) this.#parentAborted = true;
      for (const p of this.#requests.values()) p.reject(sdError('SDH_UPGRADE_FAILED', msg.reason));
      this.#requests.clear();
    }
    const waiter = this.#handoverWaiter;
    this.#handoverWaiter = undefined;
    waiter?.(msg);
  }

  /**
   * In a new version, before it is ready: sends `body` to the process it replaces and resolves with that process's
   * answer (see {@link Upgrader.onUpgradeRequest}). Rejects with SDH_NOT_UPGRADING in any other process.
   */
  requestParent(body: unknown, timeoutMs = this.#o.upgradeTimeoutMs): Promise<unknown> {
    const channel = this.#channel;
    if (!channel || this.#state !== State.STARTING) {
      return Promise.reject(sdError('SDH_NOT_UPGRADING', 'requestParent() works only in a new version before it is ready'));
    }
    const id = ++this.#requestId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#requests.delete(id);
        reject(sdError('SDH_TIMEOUT', `the upgrading parent did not answer request ${id} within ${timeoutMs} ms`, { timeoutMs }));
      }, timeoutMs);
      timer.unref();
      this.#requests.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      channel.write(`${JSON.stringify({ t: 'request', id, body } satisfies ChildMessage)}\n`);
    });
  }

  /**
   * In the process being replaced: `fn` runs (and is awaited) at the start of every upgrade, before the new version
   * is spawned; a rejection fails the upgrade. A worker pool retires a worker here, so that the new primary never
   * coexists with a full set of old workers.
   */
  beforeUpgrade(fn: () => Promise<void>): void {
    this.#beforeUpgrade.push(fn);
  }

  /**
   * In the process being replaced: answers the new version's {@link Upgrader.requestParent} calls during an
   * upgrade. The handler's result (or its error's message) goes back to the new version.
   */
  onUpgradeRequest(handler: (body: unknown) => unknown): void {
    this.#requestHandler = handler;
  }

  async #becomeMain(): Promise<void> {
    const channel = this.#channel!;
    let msg: ParentMessage | undefined;
    if (!this.#parentGone) {
      const answer = new Promise<ParentMessage>((resolve) => (this.#handoverWaiter = resolve));
      channel.write(`${JSON.stringify({ t: 'ready', pid: this.#pid })}\n`);
      msg = await answer;
    }
    // The parent died before handing over and no systemd supervises us (see #orphaned): we are ready with every
    // listener, and serving beats leaving the port to a process that will never answer.
    if (msg?.t === 'handover') this.lastUpgrade = msg.lastUpgrade;
    else if (this.#parentGone && !this.#notifier.enabled) this.#emitLog({ priority: 4, event: 'parent-gone', message: `pid ${this.#pid} serves: the upgrading parent (pid ${this.#upgradeEnv?.parent}) exited before handing over`, newPid: this.#pid, oldPid: this.#upgradeEnv?.parent });
    else throw sdError('SDH_UPGRADE_FAILED', `the upgrading parent refused the handover: ${msg?.t === 'abort' ? msg.reason : show(msg)}`);
    // Back to the priority the parent serves at, if the parent lowered ours for the start-up.
    if (this.#upgradeEnv?.nice !== undefined) {
      try {
        setProcessNice(0, this.#upgradeEnv.nice);
      } catch {
        /* not allowed: keep the start-up priority */
      }
    }
    this.#takeOutput();
    channel.end();
    channel.unref();
    this.#channel = undefined;
    // stdout/stderr are the journal stream now: loggers must check JOURNAL_STREAM again to write natively.
    redetectJournals();
    this.#emitLog({
      priority: 6,
      event: 'upgrade-took-over',
      message: `pid ${this.#pid} is now the main process (upgrade ${this.#upgradeEnv?.id})`,
      upgrade: this.#upgradeEnv?.id,
      newPid: this.#pid,
      oldPid: this.#upgradeEnv?.parent,
    });
  }

  /**
   * From now on we are main (or the parent is gone): what we print must go where the parent's output went (the
   * journal stream), not into pipes that die with the parent. Idempotent.
   */
  #takeOutput(): void {
    if (this.#outputTaken) return;
    this.#outputTaken = true;
    this.#addon.dup2(STDOUT_FD, 1);
    this.#addon.dup2(STDERR_FD, 2);
    this.#addon.close(STDOUT_FD);
    this.#addon.close(STDERR_FD);
  }

  #outputTaken = false;

  /**
   * New version whose upgrading parent died (crash, SIGKILL) before handing over. Our stdout/stderr are pipes into it:
   * the next write would die of EPIPE, so they move onto the parent's own (the journal stream) at once. Outside
   * systemd we go on, and take the service over once ready (#becomeMain). Under systemd (NOTIFY_SOCKET) the main
   * process's death has already decided: measured on 252 and 257 the unit fails at once and KillMode=control-group
   * kills us; on 247 the unit stays active with no known main PID and refuses our MAINPID=. Either way only a restart
   * gives systemd a main process it knows, so we exit 1 and let Restart= (with the fd store or socket activation
   * keeping the listener) start the service again.
   */
  #orphaned(): void {
    this.#takeOutput();
    if (!this.#notifier.enabled) return;
    const parent = this.#upgradeEnv?.parent;
    this.#emitLog({
      priority: 3,
      event: 'parent-gone',
      message: `pid ${this.#pid} exits: the upgrading parent (pid ${parent}) exited before handing over, which fails the service under systemd (Restart= starts it again)`,
      upgrade: this.#upgradeEnv?.id,
      newPid: this.#pid,
      oldPid: parent,
    });
    if (this.#o.pidFile) removePidFile(this.#o.pidFile, this.#pid);
    this.#exit(1);
  }

  /**
   * Upgrades: spawns the new version with every listener, waits for it to become ready, hands over and starts
   * draining this process. Resolves with the new pid; rejects (SDH_UPGRADE_FAILED / SDH_UPGRADE_TIMEOUT) when it
   * exits, crashes or times out, in which case this process keeps serving. Only one upgrade runs at a time.
   */
  upgrade(): Promise<UpgradeResult> {
    const refused = this.#container.refusal('upgrade');
    if (refused) return Promise.reject(refused);
    if (this.#currentUpgrade) {
      const pid = this.#currentUpgrade.child?.pid;
      return Promise.reject(sdError('SDH_UPGRADE_IN_PROGRESS', `an upgrade is already in progress${pid ? ` (new pid ${pid})` : ''}`, { pid }));
    }
    if (this.#state !== State.READY) {
      const code = this.#state === State.STARTING ? 'SDH_NOT_UPGRADING' : 'SDH_STOPPED';
      return Promise.reject(sdError(code, `cannot upgrade while the Upgrader is ${this.#state}${this.#state === State.STARTING ? ' (call ready() first)' : ''}`, { state: this.#state }));
    }
    const current = { promise: Promise.resolve() } as unknown as UpgradeRun;
    this.#currentUpgrade = current;
    current.promise = this.#upgrade(current).finally(() => {
      this.#currentUpgrade = undefined;
    });
    return current.promise;
  }

  async #upgrade(current: UpgradeRun): Promise<UpgradeResult> {
    const started = performance.now();
    const id = randomUUID();
    this.#state = State.UPGRADING;
    let child: ChildProcess | undefined;
    try {
      // Inside the try: a RELOADING=1 that cannot be sent fails this upgrade, it must not leave us "upgrading" for good.
      this.#notifier.reloading('upgrading: starting the new version');
      this.#emitLog({ priority: 5, event: 'upgrade-started', message: `upgrade ${id} started by pid ${this.#pid}`, upgrade: id, oldPid: this.#pid });
      this.emit('upgrade', { id });
      for (const fn of this.#beforeUpgrade) await fn();
      // A stop that came during the hooks found no abort to call: spawning now would hand the service to a new
      // version after the stop.
      if (current.stopped) throw current.stopped;
      const held = this.#listeners.claimed();
      const env: NodeJS.ProcessEnv = { ...this.#env };
      env[UPGRADE_ENV] = JSON.stringify({ v: PROTOCOL_VERSION, parent: this.#pid, names: held.map((h) => h.name), id, nice: os.getPriority() } satisfies UpgradeEnv);
      // The new process becomes main only at handover; its watchdog must then be its own.
      delete env.WATCHDOG_PID;
      const stdio: SpawnOptions['stdio'] = ['inherit', 'pipe', 'pipe', 'pipe', 1, 2, ...held.map((h) => h.fd)];
      const spawnFn = this.#o.spawn ?? nodeSpawn;
      const command = this.#o.command ?? process.execPath;
      const args = this.#o.args ?? [...process.execArgv, ...process.argv.slice(1)];
      child = spawnFn(command, args, { cwd: this.#o.cwd ?? process.cwd(), env, stdio });
      current.child = child;
      const cancelLift = this.#niceDuringStartup(child.pid);
      const pid = await this.#waitReady(child, current, id).finally(() => cancelLift?.());
      const durationMs = Math.round(performance.now() - started);
      // Still main: hand over in one datagram, so systemd never sees the new pid without READY=1.
      this.#notifier.mainPid(pid, { ready: true, status: `upgraded: pid ${pid} took over from ${this.#pid} in ${durationMs} ms` });
      await this.#settled();
      this.lastUpgrade = { ok: true, at: new Date().toISOString(), pid, durationMs };
      void this.#control?.stopAccepting();
      (child.stdio[3] as net.Socket).write(`${JSON.stringify({ t: 'handover', lastUpgrade: this.lastUpgrade } satisfies ParentMessage)}\n`);
      return this.#handedOver(id, pid, durationMs, child);
    } catch (err) {
      // Ready but not handed over (MAINPID= could not be sent...): the new version must not wait forever holding
      // the listeners.
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      throw this.#upgradeFailed(err, id, started, current.child?.pid);
    }
  }

  /**
   * Waits until systemd has processed the handover datagram (BARRIER=1, which systemd answers whoever sends it),
   * so that a reload job, `systemctl show` or the new process's first notification never overtakes MAINPID=.
   */
  async #settled(): Promise<void> {
    try {
      await this.#notifier.barrier(5000);
    } catch (err) {
      this.#emitLog({ priority: 4, event: 'barrier-failed', message: `systemd did not confirm the handover: ${(err as Error).message}` });
    }
  }

  /** Old side, after MAINPID= went to `pid`: record, log, and start draining. */
  #handedOver(id: string, pid: number, durationMs: number, child?: ChildProcess): UpgradeResult {
    this.#notifier.stopWatchdog();
    this.#container.handedOver(child);
    const result: UpgradeResult = { pid, oldPid: this.#pid, durationMs };
    this.#emitLog({
      priority: 5,
      event: 'upgrade-ready',
      message: `upgrade ${id}: new pid ${pid} ready in ${durationMs} ms; pid ${this.#pid} drains`,
      upgrade: id,
      newPid: pid,
      oldPid: this.#pid,
      durationMs,
    });
    this.emit('upgraded', result);
    void this.#startDrain('upgraded', child);
    return result;
  }

  /** Runs a step of the failure path; its own failure is logged (as `event`) instead of ending the path early. */
  #tryOrLog(event: string, fn: () => unknown): void {
    try {
      fn();
    } catch (err) {
      this.#emitLog({ priority: 3, event, message: `${event}: ${(err as Error).message}`, code: (err as SdHandoffError).code });
    }
  }

  /** Old side, the new version failed: keep serving, tell systemd (READY=1 always follows RELOADING=1) and log. */
  #upgradeFailed(err: unknown, id: string, started: number, newPid: number | undefined): SdHandoffError {
    // A project code says what failed (SDH_UPGRADE_TIMEOUT, SDH_STOPPED...); an errno (EPIPE from a write to the new
    // version, ECONNREFUSED from the notify socket) is how, not what: the upgrade failed, and the errno is its cause.
    const error =
      err instanceof SdHandoffError && err.code.startsWith('SDH_') ? err : sdError('SDH_UPGRADE_FAILED', `upgrade failed: ${(err as Error).message}`, { cause: err });
    this.#state = this.#stopPromise ? State.STOPPING : State.READY;
    this.lastUpgrade = { ok: false, at: new Date().toISOString(), error: error.message };
    // The new version may have written its pid before it failed: the file must name the process that serves. A PID
    // file that cannot be written (ENOSPC, EROFS...) is logged: it must not keep READY=1 from systemd.
    if (this.#o.pidFile) this.#tryOrLog('pid-file-failed', () => writePidFile(this.#o.pidFile!, this.#pid));
    // Always answer RELOADING=1 with READY=1, or the reload job hangs; STATUS= says what failed.
    const status = `READY=1\nSTATUS=upgrade failed: ${error.message.split('\n')[0]!.slice(0, 200)}`;
    if (!this.#stopPromise) this.#tryOrLog('notify-failed', () => this.#notifier.send(status));
    this.#emitLog({
      priority: 3,
      event: 'upgrade-failed',
      message: `upgrade ${id} failed: ${error.message}`,
      upgrade: id,
      oldPid: this.#pid,
      newPid,
      durationMs: Math.round(performance.now() - started),
      code: error.code,
    });
    this.emit('upgrade-failed', error);
    return error;
  }

  /** Old side of a takeover, on the control connection of the process taking over. */
  async #offerTakeover(ctx: ControlContext): Promise<typeof KEEP> {
    const refused = this.#container.refusal('takeover');
    if (refused) throw refused;
    if (this.#currentUpgrade) {
      const pid = this.#currentUpgrade.child?.pid;
      throw sdError('SDH_UPGRADE_IN_PROGRESS', `an upgrade is already in progress${pid ? ` (new pid ${pid})` : ''}`, { pid });
    }
    if (this.#state !== State.READY) {
      throw sdError(this.#state === State.STARTING ? 'SDH_NOT_UPGRADING' : 'SDH_STOPPED', `cannot hand over while the Upgrader is ${this.#state}`, { state: this.#state });
    }
    const current = { promise: Promise.resolve() } as unknown as UpgradeRun;
    this.#currentUpgrade = current;
    current.promise = this.#runTakeover(ctx, current).finally(() => {
      this.#currentUpgrade = undefined;
    });
    current.promise.catch(() => {
      /* logged by #upgradeFailed */
    });
    return KEEP;
  }

  async #runTakeover(ctx: ControlContext, current: UpgradeRun): Promise<UpgradeResult> {
    const started = performance.now();
    const id = randomUUID();
    const newPid = ctx.cred.pid;
    this.#state = State.UPGRADING;
    try {
      this.#notifier.reloading(`takeover by pid ${newPid}`);
    } catch (err) {
      // Nothing was announced: back to serving, or every later upgrade would be refused as "in progress".
      this.#state = State.READY;
      throw err;
    }
    this.#emitLog({ priority: 5, event: 'upgrade-started', message: `takeover ${id} by pid ${newPid} started`, upgrade: id, oldPid: this.#pid, newPid, kind: 'takeover' });
    this.emit('upgrade', { id, takeover: true });
    // Take the connection's messages from now on: the answer may arrive before our last sendmsg has returned.
    let answered: ((msg: Record<string, unknown>) => void) | undefined;
    const early: Array<Record<string, unknown>> = [];
    // Our own dup of the connection for the raw sendmsg calls: Node closes its fd when the peer goes away, and a
    // number written to after that may already belong to the next connection accepted.
    const fd = this.#addon.dup(ctx.fd);
    const take = (msg: Record<string, unknown>): void => {
      if (answered) answered(msg);
      else early.push(msg);
    };
    ctx.route(take);
    ctx.socket.once('close', () => take({ t: 'closed' }));
    try {
      const env: Record<string, string> = {};
      for (const key of ['NOTIFY_SOCKET', 'WATCHDOG_USEC'] as const) if (this.#env[key]) env[key] = this.#env[key]!;
      await offerListeners(this.#addon, fd, this.#pid, this.#listeners.claimed().map((h) => ({ name: h.name, fd: h.fd })), env);
      const answer = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(sdError('SDH_UPGRADE_TIMEOUT', `the process taking over (pid ${newPid}) did not become ready within ${this.#o.upgradeTimeoutMs} ms`, { pid: newPid })),
          this.#o.upgradeTimeoutMs,
        );
        timer.unref();
        const done = (fn: () => void): void => {
          clearTimeout(timer);
          fn();
        };
        if (early.length > 0) return done(() => resolve(early.shift()!));
        answered = (msg) => done(() => resolve(msg));
        current.abort = (err) => done(() => reject(err));
      });
      if (answer.t === 'closed') {
        throw sdError('SDH_UPGRADE_FAILED', `the process taking over (pid ${newPid}) closed the connection before it was ready`, { pid: newPid });
      }
      if (answer.t === 'failed') {
        throw sdError('SDH_UPGRADE_FAILED', `the process taking over (pid ${newPid}) gave up: ${String(answer.reason)}`, { pid: newPid });
      }
      if (answer.t !== 'ready') throw sdError('SDH_PROTOCOL', `the process taking over sent ${show(answer)}`, { pid: newPid });
      const durationMs = Math.round(performance.now() - started);
      this.#notifier.mainPid(newPid, { ready: true, status: `taken over: pid ${newPid} took over from ${this.#pid} in ${durationMs} ms` });
      await this.#settled();
      this.lastUpgrade = { ok: true, at: new Date().toISOString(), pid: newPid, durationMs };
      void this.#control?.stopAccepting();
      await sendLine(this.#addon, fd, { t: 'handover', lastUpgrade: this.lastUpgrade });
      return this.#handedOver(id, newPid, durationMs);
    } catch (err) {
      const error = this.#upgradeFailed(err, id, started, newPid);
      await sendLine(this.#addon, fd, { t: 'abort', reason: error.message }).catch(() => {});
      ctx.socket.destroy();
      throw error;
    } finally {
      this.#addon.close(fd);
    }
  }

  /**
   * The new version starts at a lower CPU priority, so its start-up (loading code, JIT, filling caches) takes CPU
   * from the version serving requests only when there is some to spare: latency during an upgrade stays near the
   * steady state on a busy machine. It raises itself back at the handover, which needs root (CAP_SYS_NICE), so it is
   * done only when we are root.
   */
  #niceDuringStartup(pid: number | undefined): (() => void) | undefined {
    if (pid === undefined || this.#o.startupNice === 0 || process.getuid?.() !== 0) return undefined;
    const serving = os.getPriority();
    try {
      setProcessNice(pid, Math.min(19, Math.max(serving, 0) + this.#o.startupNice));
    } catch {
      return undefined; /* gone already, or not allowed: it starts at our priority */
    }
    // A machine busy enough to starve a niced start-up must not fail the upgrade for it: half-way through the
    // upgrade timeout the new version gets the serving priority back.
    const afterMs = Math.floor(this.#o.upgradeTimeoutMs / 2);
    const timer = setTimeout(() => {
      try {
        setProcessNice(pid, serving);
        this.#emitLog({ priority: 5, event: 'startup-nice-lifted', message: `new pid ${pid} not ready after ${afterMs} ms at nice +${this.#o.startupNice}: back to the serving priority`, newPid: pid });
      } catch {
        /* gone */
      }
    }, afterMs);
    timer.unref();
    return () => clearTimeout(timer);
  }

  /** Waits for "ready" from the child; rejects on exit, bad message or timeout (killing the child). */
  #waitReady(child: ChildProcess, current: UpgradeRun, id: string): Promise<number> {
    const tail = new TailBuffer();
    // Forward the new version's output to ours until it takes its own over, keeping the last lines for errors.
    child.stdout?.on('data', (chunk: Buffer) => {
      tail.push(chunk);
      process.stdout.write(chunk);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      tail.push(chunk);
      process.stderr.write(chunk);
    });
    const channel = child.stdio[3] as net.Socket;
    return new Promise<number>((resolve, reject) => {
      let settled = false;
      const lastLines = (): string => {
        const lines = tail.lines();
        return lines.length ? `; last lines:\n${lines.map((l) => `  ${l}`).join('\n')}` : '; it printed nothing';
      };
      const fail = (err: SdHandoffError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        this.#kill(child).then(() =>
          reject(
            sdError(
              'SDH_UPGRADE_TIMEOUT',
              `the new version (pid ${child.pid}) did not become ready within ${this.#o.upgradeTimeoutMs} ms and was killed${lastLines()}`,
              { pid: child.pid, upgrade: id, lastLines: tail.lines() },
            ),
          ),
        );
      }, this.#o.upgradeTimeoutMs);
      timer.unref();
      current.abort = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        void this.#kill(child).then(() => reject(err));
      };
      child.once('error', (err) => fail(sdError('SDH_UPGRADE_FAILED', `could not start the new version: ${err.message}`, { cause: err, upgrade: id })));
      child.once('exit', (code, signal) => {
        // Let the pipes deliver what it printed last before reporting.
        setTimeout(() => {
          const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
          fail(sdError('SDH_UPGRADE_FAILED', `the new version (pid ${child.pid}) ${how} before it was ready${lastLines()}`, {
            pid: child.pid,
            exitCode: code,
            signal,
            upgrade: id,
            lastLines: tail.lines(),
          }));
        }, 50).unref();
      });
      channel.on('error', () => {});
      channel.on(
        'data',
        lineReader(
          (msg) => {
            const m = msg as { t?: string; pid?: number; reason?: string };
            if (m.t === 'ready' && child.pid !== undefined) {
              if (settled) return;
              settled = true;
              clearTimeout(timer);
              resolve(child.pid);
            } else if (m.t === 'request' && typeof (m as { id?: unknown }).id === 'number') {
              void this.#answerChild(channel, m as { id: number; body: unknown });
            } else if (m.t === 'failed') {
              void this.#kill(child);
              fail(sdError('SDH_UPGRADE_FAILED', `the new version (pid ${child.pid}) reported failure: ${m.reason ?? 'no reason'}${lastLines()}`, { pid: child.pid, upgrade: id }));
            }
          },
          (line) => {
            void this.#kill(child);
            fail(sdError('SDH_PROTOCOL', `the new version sent ${show(line)} on the upgrade channel`, { pid: child.pid, upgrade: id }));
          },
        ),
      );
    });
  }

  async #answerChild(channel: net.Socket, req: { id: number; body: unknown }): Promise<void> {
    let reply: ParentMessage;
    try {
      if (!this.#requestHandler) throw sdError('SDH_PROTOCOL', 'this process answers no upgrade requests (no onUpgradeRequest handler)');
      reply = { t: 'reply', id: req.id, ok: true, body: (await this.#requestHandler(req.body)) ?? null };
    } catch (err) {
      reply = { t: 'reply', id: req.id, ok: false, error: (err as Error).message, code: (err as SdHandoffError).code };
    }
    if (channel.writable) channel.write(`${JSON.stringify(reply)}\n`);
  }

  /** SIGTERM, then SIGKILL after 3 s; resolves once the child has exited. */
  #kill(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 3000);
      child.once('exit', () => {
        clearTimeout(killTimer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  /** Old process after a handover, or a stop: stop accepting, drain every connection, then exit. */
  #startDrain(reason: 'upgraded' | 'stopping', child?: ChildProcess): Promise<void> {
    this.#state = reason === 'upgraded' ? State.DRAINING : State.STOPPING;
    this.#exitingResolve();
    this.emit('exiting', { reason });
    this.#emitLog({ priority: 6, event: 'draining', message: `pid ${this.#pid} draining (${reason})`, reason, oldPid: this.#pid, newPid: child?.pid });
    const started = performance.now();
    const timeoutMs = reason === 'stopping' ? (this.#o.stopTimeoutMs ?? this.#o.drainTimeoutMs) : this.#o.drainTimeoutMs;
    // Stopping, we are still the service: keep systemd's stop timeout ahead of the drain (bounded by timeoutMs), so
    // TimeoutStopSec= does not kill it halfway. After a handover the new process is main: nothing to extend.
    let extender: NodeJS.Timeout | undefined;
    if (reason === 'stopping' && this.#isMain()) {
      const extend = (): void => {
        const left = timeoutMs - (performance.now() - started);
        if (left > 0) this.#notifier.extendTimeout(Math.ceil(Math.min(left, 5000) + 2000));
      };
      extend();
      extender = setInterval(extend, 2000);
      extender.unref();
    }
    const work = (async () => {
      await this.#control?.close(timeoutMs);
      const hooks = Promise.all(this.#drainHooks.map(async (hook) => {
        try {
          await hook();
        } catch (err) {
          this.#emitLog({ priority: 4, event: 'drain-hook-failed', message: `a drain hook failed: ${(err as Error).message}` });
        }
      }));
      const reports = await Promise.all(
        this.#served.map(async (s) => {
          if (s.socket) {
            await new Promise<void>((r) => s.socket!.close(() => r()));
            return undefined;
          }
          if (!s.server) return undefined;
          return drainServer(s.server, { timeoutMs, graceMs: this.#o.drainGraceMs });
        }),
      );
      await hooks;
      // The new version's output comes through us until it took its own stdout/stderr: wait for those pipes to end.
      if (child) await waitPipesEnd(child, 2000);
      const connections = reports.reduce((n, r) => n + (r?.connections ?? 0), 0);
      const forced = reports.reduce((n, r) => n + (r?.forced ?? 0), 0);
      const durationMs = Math.round(performance.now() - started);
      this.#emitLog({
        priority: 6,
        event: 'drained',
        message: `pid ${this.#pid} drained ${connections} connection(s) in ${durationMs} ms (${forced} forced)`,
        connections,
        forced,
        durationMs,
        oldPid: this.#pid,
      });
      clearInterval(extender);
      this.emit('drained', { connections, forced, durationMs });
      this.#removeSignals();
      if (reason === 'upgraded' && this.#o.exitWhenDrained) {
        this.#emitLog({ priority: 6, event: 'exited', message: `pid ${this.#pid} exits after its upgrade`, oldPid: this.#pid, newPid: child?.pid });
        // journald looks a sender's unit up in /proc when it reads the datagram: linger a moment after the last
        // entries, or they may arrive without _SYSTEMD_UNIT (seen on 247 under load).
        if (defaultJournal?.target === 'journal') {
          await defaultJournal.flush(1000).catch(() => {});
          await new Promise((r) => setTimeout(r, 200));
        }
        this.#exit(await this.#container.exitStatus());
      }
    })();
    return work;
  }

  /**
   * Stops for good: `STOPPING=1`, stop accepting, drain every connection (bounded by `drainTimeoutMs`), remove
   * the PID file if it is still ours. An upgrade under way is aborted first (it rejects with SDH_STOPPED).
   * Idempotent. Does not exit the process (the stop signal handlers do).
   */
  stop(): Promise<void> {
    this.#stopPromise ??= this.#stop();
    return this.#stopPromise;
  }

  async #stop(): Promise<void> {
    if (this.#state === State.DRAINING) return; // handed over: the new process is the service now
    const current = this.#currentUpgrade;
    this.#state = State.STOPPING;
    this.#emitLog({ priority: 5, event: 'stopping', message: `pid ${this.#pid} stopping${current ? ' (aborting the upgrade under way)' : ''}` });
    if (current) {
      current.stopped = sdError('SDH_STOPPED', 'the upgrade was aborted: the service is stopping');
      current.abort?.(current.stopped);
      await current.promise.catch(() => {});
    }
    // A new version stopped before it took over is not the service: it must not tell systemd anything.
    if (this.#isMain()) this.#notifier.stopping('stopping: draining connections');
    this.#notifier.stopWatchdog();
    await this.#startDrain('stopping');
    if (this.#o.pidFile) removePidFile(this.#o.pidFile, this.#pid);
    this.#state = State.STOPPED;
  }

  /** Fds of the listeners this process holds, by name (for diagnostics and tests). */
  heldListeners(): Array<{
    /** The listener's name. */
    name: string;
    /** Its fd. */
    fd: number;
    /** `parent`, `systemd` or `fresh`. */
    origin: string;
  }> {
    return this.#listeners.claimed().map((h) => ({ name: h.name, fd: h.fd, origin: h.origin }));
  }

}

function waitPipesEnd(child: ChildProcess, timeoutMs: number): Promise<void> {
  const ends = [child.stdout, child.stderr].filter((s): s is NonNullable<typeof s> => s !== null && !s.readableEnded && !s.destroyed);
  if (ends.length === 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    let left = ends.length;
    const timer = setTimeout(resolve, timeoutMs);
    timer.unref();
    for (const s of ends) {
      s.once('close', () => {
        if (--left === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  });
}
