/**
 * The private protocol between a {@link WorkerPool} primary and the worker processes it spawns.
 *
 * Workers are spawned processes, not `node:cluster` workers: cluster ignores inherited fds and makes the primary
 * accept for everyone (or share its own fd), whereas here every worker accepts on the very listening sockets the
 * primary holds (from systemd, the fd store or the upgrading parent). `child_process.spawn` dups the fds given in
 * `stdio` into the child with CLOEXEC cleared:
 *
 *   fd 0        /dev/null
 *   fd 1, 2     the primary's stdout and stderr (the journal stream under systemd; before a new primary took over,
 *               its parent's streams, so nothing a worker prints dies with a pipe to the old primary)
 *   fd 3        Node's IPC channel (`process.send` / `'message'`): ready, health ping/pong, stop
 *   fd 4...     the listeners, in the order of `names`
 *
 * `SDH_WORKER` (JSON, unset by the worker once read) describes the layout; `primary` must equal the worker's parent
 * pid, so a grandchild that inherited the variable by accident ignores it.
 */
import { sdError, show } from '../errors.js';

export const WORKER_ENV = 'SDH_WORKER';
export const WORKER_PROTOCOL_VERSION = 1;
export const WORKER_IPC_FD = 3;
export const FIRST_WORKER_FD = 4;

/** What a worker learns from `SDH_WORKER`. */
export interface WorkerEnv {
  v: number;
  /** The primary's pid. */
  primary: number;
  /** Worker id in the pool (unique per primary, for logs). */
  id: number;
  /** Generation: incremented by every rolling restart (for logs and tests). */
  generation: number;
  /** Listener names, in fd order from {@link FIRST_WORKER_FD}. */
  names: string[];
  drainTimeoutMs: number;
  drainGraceMs: number;
}

/** Primary to worker. */
export type PrimaryMessage = { sdh: 'ping'; seq: number } | { sdh: 'stop' };
/** Worker to primary. */
export type WorkerMessage = { sdh: 'ready' } | { sdh: 'pong'; seq: number } | { sdh: 'draining' };

export function parseWorkerEnv(text: string | undefined, ppid: number): WorkerEnv | undefined {
  if (text === undefined || text === '') return undefined;
  let env: Partial<WorkerEnv>;
  try {
    env = JSON.parse(text) as Partial<WorkerEnv>;
  } catch {
    throw sdError('SDH_INVALID_ENV', `${WORKER_ENV}=${show(text.slice(0, 80))} is not JSON`, { variable: WORKER_ENV, value: text });
  }
  if (
    typeof env !== 'object' ||
    env === null ||
    typeof env.v !== 'number' ||
    typeof env.primary !== 'number' ||
    typeof env.id !== 'number' ||
    !Array.isArray(env.names) ||
    !env.names.every((n) => typeof n === 'string')
  ) {
    throw sdError('SDH_INVALID_ENV', `${WORKER_ENV}=${show(text.slice(0, 80))} is not a worker description`, { variable: WORKER_ENV, value: text });
  }
  if (env.v !== WORKER_PROTOCOL_VERSION) {
    throw sdError('SDH_PROTOCOL', `${WORKER_ENV} speaks protocol ${env.v}; this sd-handoff speaks ${WORKER_PROTOCOL_VERSION}`, { variable: WORKER_ENV });
  }
  // Node's timers take at most 2^31-1 ms; a drain bound outside that (or not a number) would not bound anything.
  for (const key of ['drainTimeoutMs', 'drainGraceMs', 'generation'] as const) {
    const v = env[key];
    const max = key === 'generation' ? Number.MAX_SAFE_INTEGER : 2 ** 31 - 1;
    if (v !== undefined && !(Number.isInteger(v) && v >= (key === 'generation' ? 0 : 1) && v <= max)) {
      throw sdError('SDH_INVALID_ENV', `${WORKER_ENV} has ${key} ${show(v)}; it must be an integer from ${key === 'generation' ? 0 : 1} to ${max}`, { variable: WORKER_ENV, value: text });
    }
  }
  if (env.primary !== ppid) return undefined;
  return { generation: 0, drainTimeoutMs: 30_000, drainGraceMs: 1000, ...env } as WorkerEnv;
}

export function isPrimaryMessage(m: unknown): m is PrimaryMessage {
  return typeof m === 'object' && m !== null && typeof (m as { sdh?: unknown }).sdh === 'string';
}
