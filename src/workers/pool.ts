/**
 * A pool of worker processes sharing the service's listeners, replaced one worker at a time so that an upgrade
 * never needs the memory of two full sets (Cloudflare's "graceful restarts" of a worker fleet, under systemd).
 *
 * The primary (this module) holds the listeners through the {@link Upgrader} (from systemd, the fd store or the
 * upgrading parent) without accepting on them, and spawns N workers that all accept on the very same sockets
 * (./protocol.ts). It supervises them: readiness over the IPC channel, a crashed worker replaced with bounded
 * exponential backoff (reset once a worker stayed up `backoff.resetAfterMs`), a worker that stops answering its
 * health ping within `healthTimeoutMs` killed and replaced.
 *
 * Two ways to replace the workers, both bounded by `maxSurge` (extra workers allowed above N) and
 * `maxUnavailable` (workers allowed below N):
 *
 * - {@link WorkerPool.rollingRestart}: this primary replaces its own workers (new code on disk, same primary).
 *   `maxSurge: 0, maxUnavailable: 1`: stop one old worker (drained, no resets), then start one new.
 *   `maxSurge: 1, maxUnavailable: 0`: start one new, wait until it is ready, then retire one old.
 * - An upgrade of the primary itself (SIGHUP, `sd-handoff upgrade`): the old primary's Upgrader spawns the new
 *   primary; the new primary ({@link WorkerPool.start} before its `upg.ready()`) brings its workers up in the same
 *   steps, asking the old primary over the upgrade channel (`requestParent` / `onUpgradeRequest`) to retire one of
 *   its workers before (maxSurge 0) or after (maxSurge 1) each of its own, so the two sets never exist in full at
 *   once. Then `upg.ready()` hands over and the old primary, with no workers left, exits.
 *
 * A new worker that fails to become ready stops the rollout: in a primary upgrade the old primary restarts the
 * workers it retired and the new primary drains its own and fails (the Upgrader's failure path keeps the old
 * primary main and tells systemd `READY=1` + `STATUS=`); in a rolling restart the remaining old workers keep
 * serving. Either way the caller's promise rejects and `STATUS=` says what failed.
 */
import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { sdError, SdHandoffError, show } from '../errors.js';
import type { WorkerPoolEvents } from '../events.js';
import { defaultNotifier, type Notifier } from '../notify.js';
import type { StreamAddress } from '../upgrade/listeners.js';
import { STDERR_FD, STDOUT_FD } from '../upgrade/protocol.js';
import { State, type Upgrader, type UpgradeLogEntry } from '../upgrade/upgrader.js';
import { WORKER_ENV, WORKER_PROTOCOL_VERSION, type PrimaryMessage, type WorkerEnv, type WorkerMessage } from './protocol.js';
import { setProcessNice } from '../upgrade/priority.js';

/** A listener the pool holds and passes to every worker. */
export interface PoolListener {
  /** The listener's name (systemd's FileDescriptorName=, and the name a worker listens on). */
  name: string;
  /** Where to bind it when neither systemd nor the upgrading parent passed one of that name. */
  address: StreamAddress;
  /** listen(2) backlog when bound here (default 511). */
  backlog?: number;
}

/** Options of {@link WorkerPool.create}. */
export interface WorkerPoolOptions {
  /** The primary's Upgrader (created, not yet ready). */
  upgrader: Upgrader;
  /** The worker script. */
  script: string;
  /** Its arguments. */
  args?: string[];
  /** Node options of the workers (default none: a worker does not inherit the primary's `execArgv`). */
  execArgv?: string[];
  /** Extra environment of the workers (added to the primary's, minus LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*, SDH_*). */
  env?: NodeJS.ProcessEnv;
  /** Working directory of the workers (default the primary's). */
  cwd?: string;
  /** Number of workers (>= 1). */
  workers: number;
  /** The listeners the primary holds and every worker serves. */
  listeners: PoolListener[];
  /** Workers allowed above `workers` while replacing (default 1). */
  maxSurge?: number;
  /** Workers allowed below `workers` while replacing (default 0). maxSurge + maxUnavailable must be >= 1. */
  maxUnavailable?: number;
  /** How long a new worker may take to report ready (default 30 000 ms). */
  readyTimeoutMs?: number;
  /** Health ping period (default 5000 ms). */
  healthIntervalMs?: number;
  /** A worker that has not answered a ping after this long is killed and replaced (default 3000 ms). */
  healthTimeoutMs?: number;
  /** Drain bounds passed to the workers (defaults 30 000 and 1000 ms). */
  drainTimeoutMs?: number;
  /** How long an idle keep-alive connection of a draining worker is left before it is closed (default 1000 ms). */
  drainGraceMs?: number;
  /** A stopping worker still alive after this long is killed (default drainTimeoutMs + 5000). */
  stopTimeoutMs?: number;
  /** Replacement delay of crashed workers: initialMs * 2^(failures-1), at most maxMs; failures reset once a worker stayed up resetAfterMs. */
  backoff?: {
    /** Delay before replacing the first crashed worker (default 100 ms). */
    initialMs?: number;
    /** Longest delay (default 10 000 ms). */
    maxMs?: number;
    /** How long a worker must stay up for the failure count to reset (default 10 000 ms). */
    resetAfterMs?: number;
  };
  /** Receives structured log entries (default: stderr lines). */
  log?: (entry: UpgradeLogEntry) => void;
  /** @internal */
  notifier?: Notifier;
  /** @internal */
  spawn?: (command: string, args: string[], options: SpawnOptions) => ChildProcess;
}

/** A worker's life: started, reported ready, told to stop (draining), gone. */
export type WorkerState = 'starting' | 'ready' | 'stopping' | 'exited';

/** A worker as {@link WorkerPool.workers} reports it. */
export interface WorkerInfo {
  /** The pool's number for it (1, 2, ...; a replacement gets a new one). */
  id: number;
  /** Its process id. */
  pid: number;
  /** Which rolling restart started it (0 for the workers started with the pool). */
  generation: number;
  /** Where it is in its life. */
  state: WorkerState;
  /** ms since the pool started, when it became ready. */
  readyAt?: number;
}

/** What a rollout did. */
export interface RolloutResult {
  /** Pids of the new workers. */
  started: number[];
  /** Pids of the workers they replaced. */
  retired: number[];
  /** How long the rollout took, in ms. */
  durationMs: number;
}

interface Child {
  id: number;
  generation: number;
  proc: ChildProcess;
  pid: number;
  state: WorkerState;
  /** Stopped on purpose: its exit is not a crash. */
  intentional: boolean;
  spawnedAt: number;
  readyAt?: number;
  ready: Promise<void>;
  exited: Promise<void>;
  pingSeq: number;
  pingSentAt?: number;
  healthTimer?: NodeJS.Timeout;
}

/** Requests on the upgrade channel, namespaced so an application can use the channel for its own too. */
type PoolRequest = { sdhPool: 'query' } | { sdhPool: 'retire'; count: number } | { sdhPool: 'restore' };

function checkInt(o: Record<string, unknown>, name: string, fallback: number, min: number): number {
  const v = o[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw sdError('SDH_INVALID_OPTION', `${name} must be an integer >= ${min}, got ${show(v)}`, { option: name, value: v });
  }
  return v;
}

function stderrLog(entry: UpgradeLogEntry): void {
  process.stderr.write(`<${entry.priority}>sd-handoff pool: ${entry.message}\n`);
}

const DROP_ENV = /^(LISTEN_|WATCHDOG_|NOTIFY_SOCKET$|SDH_UPGRADE$|SDH_CONTROL_SOCKET$|SDH_WORKER$)/;

/**
 * The primary of a worker pool. Create it with {@link WorkerPool.create} after `Upgrader.create()`, call
 * {@link WorkerPool.start}, then `upg.ready()`. Events: `'worker-ready'`, `'worker-exit'`, `'worker-unhealthy'`
 * (each with a {@link WorkerInfo}), `'rollout-failed'` (error): {@link WorkerPoolEvents}.
 */
export class WorkerPool extends EventEmitter<WorkerPoolEvents> {
  readonly #upg: Upgrader;
  readonly #o: WorkerPoolOptions;
  readonly #n: number;
  readonly #maxSurge: number;
  readonly #maxUnavailable: number;
  readonly #readyTimeoutMs: number;
  readonly #healthIntervalMs: number;
  readonly #healthTimeoutMs: number;
  readonly #drainTimeoutMs: number;
  readonly #drainGraceMs: number;
  readonly #stopTimeoutMs: number;
  readonly #backoff: { initialMs: number; maxMs: number; resetAfterMs: number };
  readonly #log: (entry: UpgradeLogEntry) => void;
  readonly #notifier: Notifier;
  readonly #fds: Array<{ name: string; fd: number }> = [];
  readonly #children = new Set<Child>();
  readonly #t0 = performance.now();
  #target: number;
  #nextId = 1;
  #generation = 0;
  #failures = 0;
  #respawnTimer: NodeJS.Timeout | undefined;
  /** A rollout (ours or the new primary's, through requests) is changing the set: supervision only records. */
  #rolling = false;
  /** Old primary: workers retired before the new primary started (reported to it by the query). */
  #retiredAhead = 0;
  #stopping: Promise<void> | undefined;
  #started = false;

  private constructor(options: WorkerPoolOptions) {
    super();
    const o = options as unknown as Record<string, unknown>;
    if (!options.upgrader || typeof options.upgrader.holdListener !== 'function') {
      throw sdError('SDH_INVALID_OPTION', 'upgrader must be an Upgrader (from Upgrader.create())', { option: 'upgrader' });
    }
    if (typeof options.script !== 'string' || options.script === '') throw sdError('SDH_INVALID_OPTION', `script must be a path, got ${show(options.script)}`, { option: 'script' });
    if (!Array.isArray(options.listeners) || options.listeners.length === 0) {
      throw sdError('SDH_INVALID_OPTION', `listeners must be a non-empty array of { name, address }, got ${show(options.listeners)}`, { option: 'listeners' });
    }
    this.#upg = options.upgrader;
    this.#o = options;
    this.#n = checkInt(o, 'workers', 0, 1);
    if (options.workers === undefined) throw sdError('SDH_INVALID_OPTION', 'workers (the number of worker processes) is required', { option: 'workers' });
    this.#maxSurge = checkInt(o, 'maxSurge', 1, 0);
    this.#maxUnavailable = checkInt(o, 'maxUnavailable', 0, 0);
    if (this.#maxSurge + this.#maxUnavailable < 1) {
      throw sdError('SDH_INVALID_OPTION', 'maxSurge and maxUnavailable cannot both be 0: no worker could ever be replaced', { option: 'maxSurge' });
    }
    this.#readyTimeoutMs = checkInt(o, 'readyTimeoutMs', 30_000, 1);
    this.#healthIntervalMs = checkInt(o, 'healthIntervalMs', 5000, 1);
    this.#healthTimeoutMs = checkInt(o, 'healthTimeoutMs', 3000, 1);
    this.#drainTimeoutMs = checkInt(o, 'drainTimeoutMs', 30_000, 1);
    this.#drainGraceMs = checkInt(o, 'drainGraceMs', 1000, 0);
    this.#stopTimeoutMs = checkInt(o, 'stopTimeoutMs', this.#drainTimeoutMs + 5000, 1);
    const b = (options.backoff ?? {}) as Record<string, unknown>;
    this.#backoff = {
      initialMs: checkInt(b, 'initialMs', 100, 1),
      maxMs: checkInt(b, 'maxMs', 10_000, 1),
      resetAfterMs: checkInt(b, 'resetAfterMs', 10_000, 1),
    };
    this.#target = this.#n;
    this.#log = options.log ?? stderrLog;
    this.#notifier = options.notifier ?? defaultNotifier;
  }

  /**
   * Takes the listeners through the Upgrader (without accepting on them here), answers a new primary's requests
   * during an upgrade, and stops the workers when the Upgrader drains (after a handover, or on stop).
   */
  static async create(options: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(options);
    for (const l of options.listeners) {
      const held = await pool.#upg.holdListener(l.name, l.address, l.backlog === undefined ? {} : { backlog: l.backlog });
      pool.#fds.push({ name: held.name, fd: held.fd });
    }
    pool.#upg.onUpgradeRequest((body) => pool.#onRequest(body as PoolRequest));
    // With maxUnavailable >= 1, retire the first old workers before the new primary even starts: the new primary
    // (a Node process of its own, ~45 MiB) then never runs beside a full set of old workers. It is told how many
    // were retired ahead and does not retire them again.
    pool.#upg.beforeUpgrade(async () => {
      if (pool.#maxUnavailable < 1 || pool.#stopping || !pool.#started) return;
      const r = (await pool.#onRequest({ sdhPool: 'retire', count: pool.#maxUnavailable })) as { retired: number[] };
      pool.#retiredAhead = r.retired.length;
    });
    pool.#upg.on('upgrade-failed', () => {
      // The new primary failed (perhaps without asking us to restore): bring the set back to full strength.
      if (pool.#rolling && !pool.#stopping) void pool.#restore().catch((err) => pool.#emit(3, 'restore-failed', `could not restore the workers: ${(err as Error).message}`));
    });
    pool.#upg.onDrain(() => pool.stop());
    return pool;
  }

  /** Workers alive, oldest first. */
  workers(): WorkerInfo[] {
    return [...this.#children].filter((c) => c.state !== 'exited').map((c) => this.#info(c));
  }

  /**
   * Starts the workers and resolves once `workers` of them are ready. In a new primary started by an upgrade, takes
   * over from the old primary's workers one step at a time (see the module comment); rejects if a new worker fails,
   * after the old primary restored its workers and this one drained its own.
   */
  async start(): Promise<RolloutResult> {
    if (this.#started) throw sdError('SDH_INVALID_OPTION', 'start() was already called');
    this.#started = true;
    const t = performance.now();
    if (this.#upg.isUpgradeChild && this.#upg.state === State.STARTING) return this.#takeOver(t);
    const kids = Array.from({ length: this.#n }, () => this.#spawn());
    try {
      await Promise.all(kids.map((k) => k.ready));
    } catch (err) {
      await Promise.all(kids.map((k) => this.#stopChild(k)));
      throw err;
    }
    return { started: kids.map((k) => k.pid), retired: [], durationMs: Math.round(performance.now() - t) };
  }

  async #takeOver(t: number): Promise<RolloutResult> {
    let oldLeft: number;
    let retiredAhead = 0;
    try {
      const q = (await this.#upg.requestParent({ sdhPool: 'query' } satisfies PoolRequest)) as { workers: number; retiredAhead?: number };
      oldLeft = q.workers;
      retiredAhead = q.retiredAhead ?? 0;
    } catch (err) {
      // The old version is no pool (or an older one): start all workers at once, memory is then not bounded.
      this.#emit(4, 'takeover', `the old primary answered no pool query (${(err as Error).message}): starting ${this.#n} workers at once`);
      oldLeft = 0;
    }
    this.#emit(6, 'takeover', `taking over from ${oldLeft} old worker(s) with maxSurge ${this.#maxSurge}, maxUnavailable ${this.#maxUnavailable}`);
    const started: Child[] = [];
    const retired: number[] = [];
    try {
      await this.#rollout(
        oldLeft,
        async (k) => {
          const r = (await this.#upg.requestParent({ sdhPool: 'retire', count: k } satisfies PoolRequest)) as { retired: number[] };
          retired.push(...r.retired);
        },
        started,
        retiredAhead,
      );
    } catch (err) {
      const error = err instanceof SdHandoffError ? err : sdError('SDH_UPGRADE_FAILED', (err as Error).message, { cause: err });
      this.#emit(3, 'rollout-failed', `taking over failed: ${error.message}; the old primary restores its workers`);
      // Old workers first, then ours go: the service never runs short of workers because of the rollback.
      if (retired.length > 0 || retiredAhead > 0) await this.#upg.requestParent({ sdhPool: 'restore' } satisfies PoolRequest).catch(() => {});
      await Promise.all(started.map((c) => this.#stopChild(c)));
      this.emit('rollout-failed', error);
      throw error;
    }
    return { started: started.map((c) => c.pid), retired, durationMs: Math.round(performance.now() - t) };
  }

  /**
   * Replaces every worker with a new one, `maxSurge` / `maxUnavailable` at a time. Resolves when all workers are
   * new; rejects when a new worker fails to become ready (the old workers still running keep serving, and the
   * pool returns to full strength with backoff). Only one rollout at a time.
   */
  async rollingRestart(): Promise<RolloutResult> {
    if (this.#rolling) throw sdError('SDH_UPGRADE_IN_PROGRESS', 'a rolling restart (or an upgrade of the primary) is already in progress');
    if (this.#stopping) throw sdError('SDH_STOPPED', 'the pool is stopping');
    const t = performance.now();
    this.#rolling = true;
    this.#generation++;
    const old = [...this.#children].filter((c) => c.state === 'starting' || c.state === 'ready');
    const started: Child[] = [];
    const retired: number[] = [];
    this.#status(`rolling restart: replacing ${old.length} worker(s)`);
    this.#emit(5, 'rollout-started', `rolling restart of ${old.length} worker(s), maxSurge ${this.#maxSurge}, maxUnavailable ${this.#maxUnavailable}`);
    try {
      await this.#rollout(old.length, async (k) => {
        const victims = old.filter((c) => c.state === 'starting' || c.state === 'ready').slice(0, k);
        await Promise.all(victims.map((c) => this.#stopChild(c)));
        retired.push(...victims.map((c) => c.pid));
      }, started);
      const result = { started: started.map((c) => c.pid), retired, durationMs: Math.round(performance.now() - t) };
      this.#status(`rolling restart done: ${started.length} new worker(s) in ${result.durationMs} ms`);
      this.#emit(5, 'rollout-done', `rolling restart done in ${result.durationMs} ms`);
      return result;
    } catch (err) {
      const error = err instanceof SdHandoffError ? err : sdError('SDH_UPGRADE_FAILED', (err as Error).message, { cause: err });
      this.#status(`rolling restart failed: ${error.message.split('\n')[0]!.slice(0, 200)}`);
      this.#emit(3, 'rollout-failed', `rolling restart failed: ${error.message}`);
      this.emit('rollout-failed', error);
      throw error;
    } finally {
      this.#rolling = false;
      this.#reconcile();
    }
  }

  /**
   * The rollout steps: retire up to maxUnavailable old, start up to (that + maxSurge) new and wait until they are
   * ready, retire as many old as were started beyond those retired first.
   */
  async #rollout(oldCount: number, retire: (k: number) => Promise<void>, started: Child[], retiredAhead = 0): Promise<void> {
    let oldLeft = oldCount;
    let toStart = this.#n;
    // Workers the old primary already retired before we started count as this step's "retire first".
    let credit = retiredAhead;
    while (toStart > 0 || oldLeft > 0) {
      if (this.#stopping) throw sdError('SDH_STOPPED', 'the pool is stopping');
      if (toStart === 0) {
        await retire(oldLeft);
        oldLeft = 0;
        break;
      }
      const before = Math.min(this.#maxUnavailable, oldLeft + credit);
      const now = Math.max(0, before - credit);
      credit = 0;
      if (now > 0) await retire(now);
      oldLeft -= now;
      const k = Math.max(1, Math.min(toStart, before + this.#maxSurge));
      const kids = Array.from({ length: k }, () => this.#spawn());
      started.push(...kids);
      toStart -= k;
      await Promise.all(kids.map((c) => c.ready));
      const after = Math.min(oldLeft, Math.max(0, k - before));
      if (after > 0) await retire(after);
      oldLeft -= after;
    }
  }

  /** Old primary: the new primary's requests during an upgrade. */
  async #onRequest(body: PoolRequest): Promise<unknown> {
    if (typeof body !== 'object' || body === null || !('sdhPool' in body)) throw sdError('SDH_PROTOCOL', `not a pool request: ${show(body)}`);
    const live = (): Child[] => [...this.#children].filter((c) => c.state === 'starting' || c.state === 'ready');
    switch (body.sdhPool) {
      case 'query': {
        this.#rolling = true;
        const ahead = this.#retiredAhead;
        this.#retiredAhead = 0;
        return { workers: live().length, retiredAhead: ahead };
      }
      case 'retire': {
        this.#rolling = true;
        const victims = live().slice(0, Math.max(0, body.count));
        this.#target = Math.max(0, this.#target - victims.length);
        await Promise.all(victims.map((c) => this.#stopChild(c)));
        this.#emit(6, 'retired', `retired worker(s) ${victims.map((c) => c.pid).join(', ')} for the new primary; ${live().length} left`);
        return { retired: victims.map((c) => c.pid), left: live().length };
      }
      case 'restore':
        await this.#restore();
        return { workers: live().length };
      default:
        throw sdError('SDH_PROTOCOL', `unknown pool request ${show(body)}`);
    }
  }

  /** Old primary after a failed takeover: back to N workers, the generation it ran. */
  async #restore(): Promise<void> {
    this.#target = this.#n;
    this.#retiredAhead = 0;
    const live = [...this.#children].filter((c) => c.state === 'starting' || c.state === 'ready');
    const kids = Array.from({ length: Math.max(0, this.#n - live.length) }, () => this.#spawn());
    this.#emit(5, 'restored', `restoring ${kids.length} worker(s) after a failed upgrade`);
    try {
      await Promise.all(kids.map((c) => c.ready));
    } finally {
      this.#rolling = false;
      this.#reconcile();
    }
  }

  #spawn(): Child {
    const id = this.#nextId++;
    const names = this.#fds.map((f) => f.name);
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries({ ...process.env, ...this.#o.env })) if (!DROP_ENV.test(k)) env[k] = v;
    env[WORKER_ENV] = JSON.stringify({
      v: WORKER_PROTOCOL_VERSION,
      primary: process.pid,
      id,
      generation: this.#generation,
      names,
      drainTimeoutMs: this.#drainTimeoutMs,
      drainGraceMs: this.#drainGraceMs,
    } satisfies WorkerEnv);
    // A new primary before its handover still writes into pipes to the old one: its workers must get the old
    // primary's own streams (the journal stream), which outlive it.
    const beforeHandover = this.#upg.isUpgradeChild && this.#upg.state === State.STARTING;
    const out = beforeHandover ? STDOUT_FD : 1;
    const err = beforeHandover ? STDERR_FD : 2;
    const stdio: SpawnOptions['stdio'] = ['ignore', out, err, 'ipc', ...this.#fds.map((f) => f.fd)];
    const spawnFn = this.#o.spawn ?? nodeSpawn;
    const proc = spawnFn(process.execPath, [...(this.#o.execArgv ?? []), this.#o.script, ...(this.#o.args ?? [])], {
      cwd: this.#o.cwd ?? process.cwd(),
      env,
      stdio,
      serialization: 'json',
    });
    // A new primary may run at a lower priority until it takes over (the Upgrader's startupNice): its workers serve
    // for good, so they get the priority the service runs at.
    const servingNice = this.#upg.servingNice;
    if (servingNice !== undefined && proc.pid !== undefined) {
      try {
        setProcessNice(proc.pid, servingNice);
      } catch {
        /* not allowed: it keeps ours */
      }
    }
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    const child: Child = {
      id,
      generation: this.#generation,
      proc,
      pid: proc.pid ?? -1,
      state: 'starting',
      intentional: false,
      spawnedAt: performance.now(),
      ready: new Promise<void>((res, rej) => ((readyResolve = res), (readyReject = rej))),
      exited: new Promise<void>((res) => proc.once('exit', () => res())),
      pingSeq: 0,
    };
    child.ready.catch(() => {});
    this.#children.add(child);
    const readyTimer = setTimeout(() => {
      readyReject(sdError('SDH_TIMEOUT', `worker ${id} (pid ${child.pid}) did not become ready within ${this.#readyTimeoutMs} ms and was killed`, { pid: child.pid }));
      child.intentional = true;
      proc.kill('SIGKILL');
    }, this.#readyTimeoutMs);
    readyTimer.unref();
    proc.on('message', (m: WorkerMessage) => {
      if (typeof m !== 'object' || m === null) return;
      if (m.sdh === 'ready' && child.state === 'starting') {
        clearTimeout(readyTimer);
        child.state = 'ready';
        child.readyAt = performance.now();
        this.#startHealth(child);
        this.emit('worker-ready', this.#info(child));
        readyResolve();
      } else if (m.sdh === 'pong' && m.seq === child.pingSeq) {
        child.pingSentAt = undefined;
      }
    });
    proc.on('error', (e) => {
      clearTimeout(readyTimer);
      readyReject(sdError('SDH_UPGRADE_FAILED', `worker ${id} could not be started: ${e.message}`, { cause: e }));
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(readyTimer);
      if (child.healthTimer) clearInterval(child.healthTimer);
      const wasReady = child.state === 'ready' || child.readyAt !== undefined;
      const prev = child.state;
      child.state = 'exited';
      this.#children.delete(child);
      const how = signal ? `killed by ${signal}` : `exited with status ${code}`;
      readyReject(sdError('SDH_UPGRADE_FAILED', `worker ${id} (pid ${child.pid}) ${how} before it was ready`, { pid: child.pid, exitCode: code, signal }));
      this.emit('worker-exit', { ...this.#info(child), code, signal });
      if (child.intentional || this.#stopping) return;
      // A crash. Failures reset once a worker stayed up long enough; the replacement waits out the backoff.
      const upMs = child.readyAt !== undefined ? performance.now() - child.readyAt : 0;
      if (wasReady && upMs >= this.#backoff.resetAfterMs) this.#failures = 0;
      this.#failures++;
      this.#emit(prev === 'starting' ? 3 : 4, 'worker-crashed', `worker ${id} (pid ${child.pid}) ${how}${prev === 'starting' ? ' before it was ready' : ''}`);
      this.#scheduleRespawn();
    });
    return child;
  }

  /** Pings every healthIntervalMs; checked often enough that a missing pong is noticed within healthTimeoutMs. */
  #startHealth(child: Child): void {
    let lastPing = performance.now();
    child.pingSentAt = undefined;
    child.healthTimer = setInterval(() => {
      if (child.state !== 'ready') return;
      const now = performance.now();
      if (child.pingSentAt !== undefined) {
        if (now - child.pingSentAt >= this.#healthTimeoutMs) {
          this.#emit(3, 'worker-unhealthy', `worker ${child.id} (pid ${child.pid}) did not answer its health ping within ${this.#healthTimeoutMs} ms: killed`);
          this.emit('worker-unhealthy', this.#info(child));
          clearInterval(child.healthTimer);
          child.proc.kill('SIGKILL');
        }
        return;
      }
      if (now - lastPing < this.#healthIntervalMs) return;
      lastPing = now;
      child.pingSeq++;
      child.pingSentAt = now;
      this.#send(child, { sdh: 'ping', seq: child.pingSeq });
    }, Math.max(10, Math.min(this.#healthIntervalMs, this.#healthTimeoutMs) / 4));
    child.healthTimer.unref();
  }

  #scheduleRespawn(): void {
    if (this.#respawnTimer || this.#stopping) return;
    const delay = Math.min(this.#backoff.maxMs, this.#backoff.initialMs * 2 ** Math.max(0, this.#failures - 1));
    this.#emit(5, 'respawn-scheduled', `replacing crashed worker(s) in ${delay} ms (failure ${this.#failures})`);
    this.#respawnTimer = setTimeout(() => {
      this.#respawnTimer = undefined;
      this.#reconcile();
    }, delay);
  }

  /** Brings the live count back to the target (outside rollouts). */
  #reconcile(): void {
    if (this.#rolling || this.#stopping || !this.#started) return;
    const live = [...this.#children].filter((c) => c.state === 'starting' || c.state === 'ready').length;
    for (let i = live; i < this.#target; i++) {
      const c = this.#spawn();
      c.ready.then(
        () => this.#status(`${this.workers().length} worker(s) serving`),
        () => {
          /* its exit schedules the next attempt */
        },
      );
    }
  }

  /** Tells a worker to drain and exit; kills it after stopTimeoutMs. Resolves once it exited. */
  #stopChild(child: Child): Promise<void> {
    if (child.state === 'exited') return Promise.resolve();
    child.intentional = true;
    if (child.state !== 'stopping') {
      child.state = 'stopping';
      if (child.healthTimer) clearInterval(child.healthTimer);
      if (child.proc.connected) this.#send(child, { sdh: 'stop' });
      else child.proc.kill('SIGTERM');
      const killTimer = setTimeout(() => child.proc.kill('SIGKILL'), this.#stopTimeoutMs);
      killTimer.unref();
      void child.exited.then(() => clearTimeout(killTimer));
    }
    return child.exited;
  }

  /** Drains and stops every worker (the Upgrader runs this when it drains). Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      if (this.#respawnTimer) clearTimeout(this.#respawnTimer);
      await Promise.all([...this.#children].map((c) => this.#stopChild(c)));
    })();
    return this.#stopping;
  }

  #send(child: Child, m: PrimaryMessage): void {
    if (!child.proc.connected) return;
    try {
      child.proc.send(m, undefined, undefined, () => {});
    } catch {
      /* exiting */
    }
  }

  #info(c: Child): WorkerInfo {
    return { id: c.id, pid: c.pid, generation: c.generation, state: c.state, ...(c.readyAt !== undefined ? { readyAt: Math.round(c.readyAt - this.#t0) } : {}) };
  }

  /** STATUS= only from the main process (NotifyAccess=main). */
  #status(text: string): void {
    if (this.#upg.state === State.READY) this.#notifier.status(text);
  }

  #emit(priority: number, event: string, message: string): void {
    try {
      this.#log({ priority, event, message, pid: process.pid });
    } catch {
      /* a broken sink must not break supervision */
    }
  }
}
