/**
 * The worker side of a {@link WorkerPool}: what a worker script calls.
 *
 *   const worker = await Worker.connect();
 *   await worker.listen('http', { server: http.createServer(app) });
 *   await worker.ready();
 *
 * `listen(name)` serves the listener the primary passed under that name (every worker accepts on the same socket);
 * `ready()` tells the primary. The worker answers the primary's health pings on the IPC channel and, when told to
 * stop (a rolling restart or an upgrade retiring it, the pool stopping, `SIGTERM`, or the primary gone), stops
 * accepting and drains every connection without a reset (src/drain.ts), then exits 0: the other workers keep
 * accepting on the shared socket, so nothing queued is lost.
 *
 * Reads and unsets `SDH_WORKER` (see ./protocol.ts).
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { checkStreamListener, serverFromFd } from '../activation.js';
import { drainServer, trackConnections } from '../drain.js';
import { sdError, show } from '../errors.js';
import type { WorkerEvents } from '../events.js';
import { native, type NativeAddon } from '../native.js';
import { FIRST_WORKER_FD, isPrimaryMessage, parseWorkerEnv, WORKER_ENV, type WorkerEnv, type WorkerMessage } from './protocol.js';

/** Options of {@link Worker.connect}. */
export interface WorkerConnectOptions {
  /** Exit the process (status 0) once drained (default true). */
  exitWhenDrained?: boolean;
  /** Signals that make the worker drain and exit (default `['SIGTERM']`). */
  stopSignals?: NodeJS.Signals[];
  /** @internal */
  env?: NodeJS.ProcessEnv;
  /** @internal */
  addon?: NativeAddon;
  /** @internal */
  exit?: (code: number) => void;
}

/** Options of {@link Worker.listen}. */
export interface WorkerListenOptions<S extends net.Server> {
  /** The server to serve the listener with (an `http.Server`...); default a new `net.Server`. */
  server?: S;
  /** listen(2) backlog to keep (default: the kernel's SOMAXCONN). */
  backlog?: number;
}

/**
 * A worker process of a pool. Events: `'exiting'` (told to stop: drain is starting), `'drained'`
 * ({@link WorkerEvents}).
 */
export class Worker extends EventEmitter<WorkerEvents> {
  readonly #env: WorkerEnv;
  readonly #addon: NativeAddon;
  readonly #exit: (code: number) => void;
  readonly #exitWhenDrained: boolean;
  readonly #servers: net.Server[] = [];
  readonly #claimed = new Set<string>();
  #readySent = false;
  #stopPromise: Promise<void> | undefined;
  #exitingResolve!: () => void;
  /** Resolves when this worker must go (told to stop). */
  readonly exiting: Promise<void>;

  private constructor(env: WorkerEnv, options: WorkerConnectOptions) {
    super();
    this.#env = env;
    this.#addon = options.addon ?? native();
    this.#exit = options.exit ?? ((code) => process.exit(code));
    this.#exitWhenDrained = options.exitWhenDrained ?? true;
    this.exiting = new Promise<void>((r) => (this.#exitingResolve = r));
  }

  /** True when this process was started by a WorkerPool (`SDH_WORKER` is set for it). */
  static isWorker(env: NodeJS.ProcessEnv = process.env): boolean {
    return typeof env[WORKER_ENV] === 'string' && env[WORKER_ENV] !== '';
  }

  /**
   * Connects to the primary: reads `SDH_WORKER`, takes the listener fds, starts answering health pings. Throws
   * SDH_INVALID_ENV in a process a pool did not start.
   */
  static async connect(options: WorkerConnectOptions = {}): Promise<Worker> {
    const envs = options.env ?? process.env;
    const text = envs[WORKER_ENV];
    delete envs[WORKER_ENV];
    const env = parseWorkerEnv(text, process.ppid);
    if (!env || typeof process.send !== 'function') {
      throw sdError('SDH_INVALID_ENV', `${WORKER_ENV} is not set for this process (or no IPC channel): it was not started by a WorkerPool`, { variable: WORKER_ENV });
    }
    const w = new Worker(env, options);
    for (let i = 0; i < env.names.length; i++) w.#addon.setCloexec(FIRST_WORKER_FD + i, true);
    process.on('message', (m: unknown) => {
      if (!isPrimaryMessage(m)) return;
      if (m.sdh === 'ping') w.#send({ sdh: 'pong', seq: m.seq });
      else if (m.sdh === 'stop') void w.stop();
    });
    // The primary is gone (crashed or killed): nobody supervises us any more; drain and go rather than linger.
    process.once('disconnect', () => void w.stop());
    for (const sig of options.stopSignals ?? ['SIGTERM']) process.on(sig, () => void w.stop());
    return w;
  }

  /** This worker's id in its pool. */
  get id(): number {
    return this.#env.id;
  }

  /** The pool generation that started it. */
  get generation(): number {
    return this.#env.generation;
  }

  /** Names of the listeners the primary passed. */
  get listenerNames(): readonly string[] {
    return this.#env.names;
  }

  /** Serves the listener `name` with `options.server` (tracked for a drain without resets). */
  async listen<S extends net.Server = net.Server>(name: string, options: WorkerListenOptions<S> = {}): Promise<S> {
    if (this.#stopPromise) throw sdError('SDH_STOPPED', `listen(${show(name)}) called while the worker is stopping`);
    const i = this.#env.names.indexOf(name);
    if (i < 0) {
      throw sdError('SDH_NO_SUCH_LISTENER', `the primary passed no listener named ${show(name)} (it passed ${this.#env.names.map((n) => show(n)).join(', ') || 'none'})`, { name });
    }
    if (this.#claimed.has(name)) throw sdError('SDH_INVALID_OPTION', `listener ${show(name)} is already served by this worker`, { name });
    const fd = FIRST_WORKER_FD + i;
    checkStreamListener(fd, this.#addon);
    const server = trackConnections((options.server ?? (await import('node:net')).createServer()) as S);
    await serverFromFd(fd, { server, addon: this.#addon, ...(options.backlog === undefined ? {} : { backlog: options.backlog }) });
    this.#claimed.add(name);
    this.#servers.push(server);
    return server;
  }

  /** Tells the primary this worker serves. Runs once. */
  async ready(): Promise<void> {
    if (this.#readySent) return;
    this.#readySent = true;
    this.#send({ sdh: 'ready' });
  }

  /** Stops accepting, drains every connection without resets, then exits 0 (unless exitWhenDrained is false). Idempotent. */
  stop(): Promise<void> {
    this.#stopPromise ??= this.#stop();
    return this.#stopPromise;
  }

  async #stop(): Promise<void> {
    this.#exitingResolve();
    this.emit('exiting');
    this.#send({ sdh: 'draining' });
    const { drainTimeoutMs, drainGraceMs } = this.#env;
    const reports = await Promise.all(
      this.#servers.map((s) => drainServer(s, { timeoutMs: drainTimeoutMs, graceMs: drainGraceMs })),
    );
    this.emit('drained', reports);
    if (process.connected) process.disconnect();
    if (this.#exitWhenDrained) this.#exit(0);
  }

  #send(m: WorkerMessage): void {
    if (!process.connected) return;
    try {
      process.send!(m, undefined, undefined, () => {});
    } catch {
      /* the primary is gone */
    }
  }
}
