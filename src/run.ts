/**
 * `sd-handoff run`: zero-downtime reloads for ANY program (Python, Go, a shell script...) that serves sockets passed
 * the systemd way (`LISTEN_FDS`), with `run` as the service's main process holding the sockets.
 *
 *   run (main pid, holds the listeners, never accepts)
 *    ├─ instance A: LISTEN_FDS=N, fds 3.., LISTEN_FDNAMES, LISTEN_PID = its own pid, NOTIFY_SOCKET = run's proxy
 *    └─ on SIGHUP / `sd-handoff upgrade` (the control socket): instance B with the same sockets
 *         RELOADING=1 + MONOTONIC_USEC ─ start B ─ wait until B is ready (--ready) ─ SIGTERM to A (it drains; SIGKILL
 *         after --drain) ─ READY=1 + STATUS=
 *       B fails (exits, or not ready within --timeout): B is killed, A keeps serving, READY=1 + STATUS=reload failed,
 *       and the control request (ExecReload=) fails.
 *
 * `LISTEN_PID` must be the program's own pid, which Node cannot know before spawning: programs start through
 * `/bin/sh -c 'LISTEN_PID=$$ exec "$0" "$@"' CMD ARGS...`, so the shell's pid, the program's after exec, is set and
 * the arguments pass through untouched (docs/design.md, "Protocol facts": LISTEN_PID).
 *
 * The current instance exiting on its own ends `run` with the same status (the same signal, re-raised, for a
 * signal), so that systemd's `Restart=` decides what happens next, as if the program ran without `run`; with a
 * `.socket` unit the sockets outlive that restart. SIGTERM (and SIGINT) go to the instances; `run` waits for the
 * current one (bounded by --drain, then SIGKILL) and exits with its status.
 *
 * Reads `LISTEN_*` (unset), `NOTIFY_SOCKET` and `WATCHDOG_*` (for itself), `SDH_CONTROL_SOCKET`. The program gets
 * none of systemd's variables meant for `run`: its `NOTIFY_SOCKET` is the proxy's (`--ready notify` only),
 * `SDH_CONTROL_SOCKET` is removed, and `WATCHDOG_*` too unless `--watchdog program`: then each instance gets systemd's
 * `WATCHDOG_USEC` with `WATCHDOG_PID` its own pid (set by the wrapper, as `LISTEN_PID`), `run` does not ping, and the
 * serving instance's `WATCHDOG=1` is passed on, so systemd's watchdog sees a hung program (WatchdogSec= is armed once
 * the start-up is complete, so a starting instance need not ping; systemd.service(5)).
 */
import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { unlinkSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { listenFds } from './activation.js';
import { SdHandoffError, sdError } from './errors.js';
import { native, type NativeAddon } from './native.js';
import { defaultNotifier, type Notifier } from './notify.js';
import { ControlServer } from './upgrade/control.js';
import { describeSocket, openSockets, type HeldSocket } from './run/listen.js';
import { interpretNotify, NotifyProxy, ownerOf, type ProxyMessage } from './run/notify-proxy.js';
import type { RunOptions } from './run/options.js';
import { probeHost, waitAccepted } from './run/ready-port.js';
import { reapOrphans } from './upgrade/pid1.js';

export { checkRunOptions, parseRunListen, splitCommand, type RunOptions } from './run/options.js';

/** The shell line that sets LISTEN_PID to the program's own pid and execs it with its arguments untouched. */
export const LISTEN_PID_WRAPPER = 'LISTEN_PID=$$ exec "$0" "$@"';
/** The same with WATCHDOG_PID (`--watchdog program`): sd_watchdog_enabled(3) checks it against the caller's pid. */
export const WATCHDOG_PID_WRAPPER = 'LISTEN_PID=$$ WATCHDOG_PID=$$ exec "$0" "$@"';

/** How a process ended. */
export interface Ending {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The world `run` acts on; tests inject fakes, the defaults are the real process. */
export interface RunWorld {
  env: NodeJS.ProcessEnv;
  pid: number;
  addon: NativeAddon;
  notifier: Notifier;
  spawn: (command: string, args: string[], options: SpawnOptions) => ChildProcess;
  log: (line: string) => void;
  /** Installs a signal handler; returns its removal. */
  onSignal: (signal: NodeJS.Signals, fn: () => void) => () => void;
}

function defaultWorld(): RunWorld {
  return {
    env: process.env,
    pid: process.pid,
    addon: native(),
    notifier: defaultNotifier,
    spawn: nodeSpawn,
    log: (line) => process.stderr.write(`sd-handoff run: ${line}\n`),
    onSignal: (signal, fn) => {
      process.on(signal, fn);
      return () => process.off(signal, fn);
    },
  };
}

/** One started instance of the program. */
class Instance {
  readonly pid: number;
  ending: Ending | undefined;
  readonly ended: Promise<Ending>;
  /** Set by the notify proxy on READY=1. */
  notifyReady: (() => void) | undefined;
  mainPidWarned = false;
  constructor(readonly proc: ChildProcess) {
    this.pid = proc.pid!;
    this.ended = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        this.ending = { code, signal };
        resolve(this.ending);
      }),
    );
  }
  get alive(): boolean {
    return this.ending === undefined;
  }
  kill(signal: NodeJS.Signals): void {
    if (this.alive) this.proc.kill(signal);
  }
}

/** "exited with status 3" / "was killed by SIGKILL". */
export function describeEnding(e: Ending): string {
  return e.signal ? `was killed by ${e.signal}` : `exited with status ${e.code}`;
}

/** The last reload's outcome (for `status` on the control socket). */
export interface ReloadOutcome {
  ok: boolean;
  at: string;
  pid?: number;
  oldPid?: number;
  durationMs?: number;
  error?: string;
}

/** Supervises the program for `sd-handoff run`. */
export class Runner {
  readonly #o: RunOptions;
  readonly #w: RunWorld;
  #sockets: HeldSocket[] = [];
  #current: Instance | undefined;
  #starting: { inst: Instance; abort: AbortController } | undefined;
  readonly #draining = new Set<Instance>();
  #proxy: NotifyProxy | undefined;
  #control: ControlServer | undefined;
  #reloading: Promise<ReloadOutcome> | undefined;
  #stopping = false;
  #finish!: (e: Ending | number) => void;
  readonly #finished: Promise<Ending | number>;
  readonly #offSignals: Array<() => void> = [];
  /** `--watchdog program` under a watchdog: systemd's WATCHDOG_USEC, passed to the program; else 0. */
  #watchdogUsec = 0;
  lastReload: ReloadOutcome | undefined;

  constructor(options: RunOptions, world: Partial<RunWorld> = {}) {
    this.#o = options;
    this.#w = { ...defaultWorld(), ...world } as RunWorld;
    this.#finished = new Promise((resolve) => (this.#finish = resolve));
  }

  /** The serving instance's pid. */
  get pid(): number | undefined {
    return this.#current?.pid;
  }

  /**
   * Opens the sockets, starts the first instance and waits until it is ready (READY=1 to systemd), then serves until
   * the end: resolves with the exit status (a number) or the signal that ended the program (to re-raise).
   */
  async run(): Promise<Ending | number> {
    const w = this.#w;
    try {
      this.#sockets = await openSockets(this.#o.listen, listenFds({ env: w.env, pid: w.pid, addon: w.addon }), w.addon);
    } catch (err) {
      w.log(`cannot open the listeners: ${(err as Error).message}`);
      return 1;
    }
    if (this.#sockets.length === 0) w.log('no listeners: neither --listen nor socket activation gave any; the program gets LISTEN_FDS=0');
    if (this.#o.ready === 'port' && !this.#probeTarget()) {
      w.log(`--ready port needs a TCP listener; these are not: ${this.#sockets.map(describeSocket).join(', ') || 'none'}`);
      return 1;
    }
    w.log(`listening: ${this.#sockets.map((s) => `${describeSocket(s)}=${s.name} (${s.origin})`).join(', ') || 'none'}`);
    try {
      const usec = w.notifier.watchdogUsec();
      if (this.#o.watchdog === 'program') {
        this.#watchdogUsec = usec;
        if (usec === 0) w.log('--watchdog program: systemd asked for no watchdog (no WatchdogSec=): nothing to pass on');
        else w.log(`watchdog: the program gets WATCHDOG_USEC=${usec}; its WATCHDOG=1 pings are passed on, run does not ping`);
      } else if (usec > 0) {
        w.log(`watchdog: run pings systemd itself every ${Math.round(usec / 2000)} ms (a hung program goes unnoticed; --watchdog program passes it to the program)`);
      }
    } catch (err) {
      w.log((err as Error).message);
      return 1;
    }
    if (this.#o.ready === 'notify') this.#proxy = new NotifyProxy(w.addon, (m) => this.#onNotify(m), (err) => w.log(`notify proxy: ${(err as Error).message}`), w.pid);
    for (const sig of ['SIGTERM', 'SIGINT'] as const) this.#offSignals.push(w.onSignal(sig, () => void this.stop(sig)));
    // As a container's PID 1, every orphan of the namespace becomes ours to reap.
    if (w.pid === 1) this.#offSignals.push(reapOrphans(w.pid, w.addon, () => [this.#current, this.#starting?.inst, ...this.#draining].flatMap((i) => (i ? [i.pid] : []))));
    this.#offSignals.push(
      w.onSignal('SIGHUP', () =>
        void this.reload().catch((err: SdHandoffError) => {
          // A reload that ran and failed was logged by #reload; a refused one is logged here.
          if (err.code === 'SDH_UPGRADE_IN_PROGRESS' || err.code === 'SDH_NOT_UPGRADING' || err.code === 'SDH_STOPPED') w.log(`SIGHUP ignored: ${err.message}`);
        }),
      ),
    );
    const started = performance.now();
    let first: Instance;
    try {
      first = await this.#startInstance();
    } catch (err) {
      if (this.#stopping) return this.#finished;
      w.log(`the program did not start: ${(err as Error).message}`);
      await this.#cleanup();
      return 1;
    }
    if (this.#stopping) return this.#finished;
    this.#current = first;
    this.#watch(first);
    try {
      if (this.#o.controlSocket) await this.#startControl(this.#o.controlSocket);
    } catch (err) {
      w.log(`cannot open the control socket ${this.#o.controlSocket}: ${(err as Error).message}`);
      void this.stop('SIGTERM');
      return this.#finished;
    }
    const ms = Math.round(performance.now() - started);
    const status = `serving: pid ${first.pid} (${this.#o.command}) ready in ${ms} ms`;
    // ready() would also start run's own keep-alive: not when the program answers the watchdog.
    if (this.#watchdogUsec > 0) w.notifier.send(`READY=1\nSTATUS=${status}`);
    else w.notifier.ready(status);
    w.log(`pid ${first.pid} ready in ${ms} ms (--ready ${this.#o.ready})`);
    return this.#finished;
  }

  #probeTarget(): { host: string; port: number } | undefined {
    const tcp = this.#sockets.find((s) => s.info.type === 'stream' && (s.info.family === 'inet' || s.info.family === 'inet6'));
    return tcp ? { host: probeHost(tcp.info.address, tcp.info.family), port: tcp.info.port! } : undefined;
  }

  /** The program's environment: LISTEN_* for its own pid (set by the wrapper), the proxy's NOTIFY_SOCKET or none. */
  #childEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...this.#w.env };
    for (const k of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES', 'NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'SDH_CONTROL_SOCKET', 'SDH_UPGRADE', 'SDH_TAKEOVER']) delete env[k];
    env.LISTEN_FDS = String(this.#sockets.length);
    env.LISTEN_FDNAMES = this.#sockets.map((s) => s.name).join(':');
    if (this.#proxy) env.NOTIFY_SOCKET = this.#proxy.address;
    if (this.#watchdogUsec > 0) env.WATCHDOG_USEC = String(this.#watchdogUsec);
    return env;
  }

  /** Starts an instance and waits until it is ready; kills it and rejects when it exits first or times out. */
  async #startInstance(): Promise<Instance> {
    const w = this.#w;
    const o = this.#o;
    const proc = w.spawn('/bin/sh', ['-c', this.#watchdogUsec > 0 ? WATCHDOG_PID_WRAPPER : LISTEN_PID_WRAPPER, o.command, ...o.args], {
      env: this.#childEnv(),
      stdio: ['inherit', 'inherit', 'inherit', ...this.#sockets.map((s) => s.fd)],
    });
    const spawnError = new Promise<Error>((resolve) => proc.once('error', resolve));
    if (proc.pid === undefined) throw sdError('SDH_UPGRADE_FAILED', `cannot start ${o.command}: ${(await spawnError).message}`);
    const inst = new Instance(proc);
    const abort = new AbortController();
    this.#starting = { inst, abort };
    w.log(`started pid ${inst.pid}: ${o.command}${o.args.length ? ` ${o.args.join(' ')}` : ''}`);
    let timer: NodeJS.Timeout | undefined;
    try {
      const ready = new Promise<void>((resolve, reject) => {
        if (o.ready === 'delay') {
          setTimeout(resolve, o.delayMs).unref();
        } else if (o.ready === 'notify') {
          inst.notifyReady = resolve;
        } else {
          const t = this.#probeTarget()!;
          waitAccepted({ ...t, pid: inst.pid, signal: abort.signal }).then(() => resolve(), reject);
        }
      });
      const failed = Promise.race([
        inst.ended.then((e) => sdError('SDH_UPGRADE_FAILED', `the program (pid ${inst.pid}) ${describeEnding(e)} before it was ready`, { pid: inst.pid, exitCode: e.code, signal: e.signal })),
        new Promise<SdHandoffError>((resolve) => {
          timer = setTimeout(() => resolve(sdError('SDH_UPGRADE_TIMEOUT', `the program (pid ${inst.pid}) was not ready within ${o.timeoutMs} ms (--ready ${o.ready}) and was killed`, { pid: inst.pid })), o.timeoutMs);
          timer.unref();
        }),
        new Promise<SdHandoffError>((resolve) => abort.signal.addEventListener('abort', () => resolve(abort.signal.reason as SdHandoffError), { once: true })),
      ]);
      const outcome = await Promise.race([ready.then(() => undefined), failed]);
      if (outcome) throw outcome;
      // A program that reported ready and died at once is not ready.
      if (!inst.alive) throw sdError('SDH_UPGRADE_FAILED', `the program (pid ${inst.pid}) ${describeEnding(inst.ending!)} right after it was ready`, { pid: inst.pid });
      return inst;
    } catch (err) {
      abort.abort(err);
      await this.#terminate(inst, 3000);
      throw err;
    } finally {
      clearTimeout(timer);
      if (this.#starting?.inst === inst) this.#starting = undefined;
    }
  }

  /** SIGTERM, SIGKILL after `graceMs`; resolves once it has exited. */
  async #terminate(inst: Instance, graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<Ending> {
    if (!inst.alive) return inst.ending!;
    inst.kill(signal);
    const timer = setTimeout(() => {
      if (inst.alive) this.#w.log(`pid ${inst.pid} still running ${graceMs} ms after ${signal}: SIGKILL`);
      inst.kill('SIGKILL');
    }, graceMs);
    timer.unref();
    const e = await inst.ended;
    clearTimeout(timer);
    return e;
  }

  #onNotify(m: ProxyMessage): void {
    const candidates = [this.#starting?.inst, this.#current].filter((i): i is Instance => i !== undefined);
    const root = ownerOf(m.pid, candidates.map((i) => i.pid));
    const inst = candidates.find((i) => i.pid === root);
    if (!inst) return; // an old instance, or a stranger: not ours to hear
    const meaning = interpretNotify(m.text);
    if (meaning.status !== undefined) {
      try {
        this.#w.notifier.status(meaning.status.slice(0, 1000));
      } catch {
        /* systemd went away */
      }
    }
    if (meaning.ignored.some((l) => l.startsWith('MAINPID=')) && !inst.mainPidWarned) {
      inst.mainPidWarned = true;
      this.#w.log(`pid ${inst.pid} sent MAINPID=: ignored, sd-handoff run stays the main process`);
    }
    if (meaning.ready && inst === this.#starting?.inst) inst.notifyReady?.();
    // Only the serving instance keeps the service alive: a new one starting cannot cover for a hung one.
    if (meaning.watchdog && this.#watchdogUsec > 0 && inst === this.#current && !this.#stopping) {
      try {
        this.#w.notifier.send(`WATCHDOG=${meaning.watchdog}`);
      } catch {
        /* systemd went away */
      }
    }
  }

  /** The current instance exiting on its own ends `run` (unless a reload is about to replace it). */
  #watch(inst: Instance): void {
    void inst.ended.then(async (e) => {
      if (this.#stopping || this.#current !== inst) return;
      if (this.#reloading) {
        this.#w.log(`pid ${inst.pid} ${describeEnding(e)} during a reload; waiting for the new instance`);
        await this.#reloading.catch(() => undefined);
        if (this.#current !== inst) return;
      }
      this.#w.log(`pid ${inst.pid} ${describeEnding(e)} on its own: sd-handoff run exits with its status (systemd's Restart= decides what follows)`);
      this.#stopping = true;
      try {
        this.#w.notifier.stopping(`the program (pid ${inst.pid}) ${describeEnding(e)}`);
      } catch {
        /* no systemd */
      }
      await this.#cleanup();
      this.#finish(e);
    });
  }

  /**
   * Reloads: starts a new instance with the same sockets, waits until it is ready, then stops the old one (it
   * drains; SIGKILL after --drain). Resolves with the outcome; rejects (SDH_UPGRADE_FAILED / SDH_UPGRADE_TIMEOUT)
   * when the new instance failed, the old one then still serving. One reload at a time.
   */
  reload(): Promise<ReloadOutcome> {
    if (this.#stopping) return Promise.reject(sdError('SDH_STOPPED', 'sd-handoff run is stopping'));
    if (!this.#current) return Promise.reject(sdError('SDH_NOT_UPGRADING', 'the program is not ready yet: nothing to reload'));
    if (this.#reloading) return Promise.reject(sdError('SDH_UPGRADE_IN_PROGRESS', `a reload is already in progress${this.#starting ? ` (new pid ${this.#starting.inst.pid})` : ''}`));
    this.#reloading = this.#reload().finally(() => (this.#reloading = undefined));
    return this.#reloading;
  }

  async #reload(): Promise<ReloadOutcome> {
    const w = this.#w;
    const old = this.#current!;
    const started = performance.now();
    w.notifier.reloading(`reloading: starting a new instance; pid ${old.pid} serves`);
    w.log(`reload: starting a new instance; pid ${old.pid} serves`);
    let inst: Instance;
    try {
      inst = await this.#startInstance();
    } catch (err) {
      const e = err as SdHandoffError;
      const servingNote = old.alive ? `pid ${old.pid} still serves` : `and pid ${old.pid} is gone`;
      this.lastReload = { ok: false, at: new Date().toISOString(), oldPid: old.pid, error: e.message };
      // READY=1 always follows RELOADING=1, or the reload job hangs (docs/design.md); STATUS= says what failed.
      if (!this.#stopping) w.notifier.send(`READY=1\nSTATUS=reload failed: ${e.message.split('\n')[0]!.slice(0, 200)}; ${servingNote}`);
      w.log(`reload failed: ${e.message}; ${servingNote}`);
      throw e;
    }
    if (this.#stopping) {
      // Stopped while starting: the new instance goes too (stop() signals every instance it knows).
      void this.#terminate(inst, this.#o.drainMs);
      throw sdError('SDH_STOPPED', 'sd-handoff run is stopping');
    }
    const durationMs = Math.round(performance.now() - started);
    this.#current = inst;
    this.#watch(inst);
    this.#retire(old);
    w.notifier.send(`READY=1\nSTATUS=reloaded: pid ${inst.pid} serves (took over from ${old.pid} in ${durationMs} ms)`);
    w.log(`reload: pid ${inst.pid} ready in ${durationMs} ms; pid ${old.pid} stops (SIGTERM, SIGKILL after ${this.#o.drainMs} ms)`);
    this.lastReload = { ok: true, at: new Date().toISOString(), pid: inst.pid, oldPid: old.pid, durationMs };
    return this.lastReload;
  }

  /** SIGTERM to a replaced instance; it drains on its own, SIGKILL after --drain. */
  #retire(inst: Instance): void {
    this.#draining.add(inst);
    void this.#terminate(inst, this.#o.drainMs).then((e) => {
      this.#draining.delete(inst);
      this.#w.log(`old pid ${inst.pid} ${describeEnding(e)}`);
    });
  }

  /**
   * Stops: STOPPING=1, `signal` to every instance, waits for the current one (bounded by --drain, then SIGKILL) and
   * resolves run() with its ending. Idempotent: a second signal is passed on to the instances.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const w = this.#w;
    const everyone = [this.#current, this.#starting?.inst, ...this.#draining].filter((i): i is Instance => i !== undefined);
    if (this.#stopping) {
      for (const i of everyone) i.kill(signal);
      return;
    }
    this.#stopping = true;
    const current = this.#current ?? this.#starting?.inst;
    try {
      w.notifier.stopping(`stopping: ${signal} to pid ${current?.pid ?? 'none'}`);
    } catch {
      /* no systemd */
    }
    w.log(`${signal}: stopping pid ${everyone.map((i) => i.pid).join(', ') || 'none'} (SIGKILL after ${this.#o.drainMs} ms)`);
    this.#starting?.abort.abort(sdError('SDH_STOPPED', 'sd-handoff run is stopping'));
    const endings = await Promise.all(everyone.map((i) => this.#terminate(i, this.#o.drainMs, signal)));
    const mine = current ? endings[everyone.indexOf(current)]! : { code: 0, signal: null };
    await this.#cleanup();
    this.#finish(mine);
  }

  async #startControl(path: string): Promise<void> {
    const w = this.#w;
    const fd = w.addon.listenUnix(path, 16, 0o600);
    this.#control = new ControlServer({
      fd,
      addon: w.addon,
      allowedUid: process.getuid?.() ?? 0,
      handlers: {
        upgrade: async () => {
          const r = await this.reload();
          return { pid: r.pid, oldPid: r.oldPid, durationMs: r.durationMs };
        },
        status: async () => ({ pid: w.pid, child: this.#current?.pid ?? null, state: this.#stopping ? 'stopping' : this.#reloading ? 'reloading' : 'ready', lastUpgrade: this.lastReload ?? null }),
      },
      log: (m) => w.log(m),
    });
    await this.#control.start();
  }

  async #cleanup(): Promise<void> {
    for (const off of this.#offSignals.splice(0)) off();
    await this.#control?.close(1000);
    if (this.#control && this.#o.controlSocket?.startsWith('/')) {
      try {
        unlinkSync(this.#o.controlSocket);
      } catch {
        /* already gone */
      }
    }
    await this.#proxy?.close();
    for (const s of this.#sockets) {
      try {
        this.#w.addon.close(s.fd);
      } catch {
        /* closed */
      }
    }
    this.#sockets = [];
  }
}

/** The exit status `run` reports for an ending: the code, or 128 + the signal's number when it cannot re-raise. */
export function exitStatus(e: Ending | number): number {
  if (typeof e === 'number') return e;
  if (e.signal) return 128 + (os.constants.signals[e.signal] ?? 0);
  return e.code ?? 1;
}

/**
 * Runs `options` as `sd-handoff run` does and resolves with the exit status. An instance killed by a signal is
 * answered by re-raising that signal on this process (so systemd sees the same ending as without `run`: SIGTERM is
 * a clean stop, SIGKILL a failure); 128 + its number is returned if that did not end the process.
 */
export async function runCommand(options: RunOptions, world: Partial<RunWorld> = {}): Promise<number> {
  const ending = await new Runner(options, world).run();
  if (typeof ending !== 'number' && ending.signal && world.onSignal === undefined) {
    process.removeAllListeners(ending.signal);
    process.kill(process.pid, ending.signal);
    await new Promise((r) => setTimeout(r, 100));
  }
  return exitStatus(ending);
}
