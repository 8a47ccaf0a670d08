/**
 * The events of the classes that are EventEmitters, as maps for Node's typed `EventEmitter<Events>`: each key is an
 * event name and its value the listener's arguments. With them tsc checks `upgrader.on('upgraded', (r) => ...)`:
 * the listener gets the right argument types, and an event name that is never emitted does not compile.
 */
import type { DrainNetReport, DrainReport } from './drain.js';
import type { SdHandoffError } from './errors.js';
import type { Upgrader, UpgradeResult } from './upgrade/upgrader.js';
import type { WorkerInfo, WorkerPool } from './workers/pool.js';
import type { Worker } from './workers/worker.js';

/** The argument of the Upgrader's `'upgrade'` event. */
export interface UpgradeStartedEvent {
  /** The upgrade's id (also in the journal entries of both processes, as `SDH_UPGRADE`). */
  id: string;
  /** Set when another process took over through the control socket, rather than a new version started by this one. */
  takeover?: boolean;
}

/** The argument of the Upgrader's `'exiting'` event. */
export interface ExitingEvent {
  /** `'upgraded'`: a new version took over; `'stopping'`: a stop signal or {@link Upgrader.stop}. */
  reason: 'upgraded' | 'stopping';
}

/** The argument of the Upgrader's `'drained'` event: every listener's connections, summed. */
export interface DrainedEvent {
  /** Connections open when the drain started. */
  connections: number;
  /** Connections destroyed at the drain timeout. */
  forced: number;
  /** From the start of the drain to the last connection closed. */
  durationMs: number;
}

/** Events of an {@link Upgrader}. */
export interface UpgraderEvents {
  /** An upgrade (or a takeover by another process) started in this process, the one being replaced. */
  upgrade: [event: UpgradeStartedEvent];
  /** The new version took over; this process drains next. */
  upgraded: [result: UpgradeResult];
  /** The upgrade failed; this process keeps serving. */
  'upgrade-failed': [error: SdHandoffError];
  /** This process must go (upgraded or stopping): it stops accepting and drains. */
  exiting: [event: ExitingEvent];
  /** Every connection is closed; the process exits next unless `exitWhenDrained` is false. */
  drained: [event: DrainedEvent];
}

/** The argument of the WorkerPool's `'worker-exit'` event. */
export interface WorkerExitEvent extends WorkerInfo {
  /** Exit status, null when killed by a signal. */
  code: number | null;
  /** The signal that ended it, null when it exited. */
  signal: NodeJS.Signals | null;
}

/** Events of a {@link WorkerPool} (the primary). */
export interface WorkerPoolEvents {
  /** A worker reported ready. */
  'worker-ready': [worker: WorkerInfo];
  /** A worker exited (stopped on purpose or crashed). */
  'worker-exit': [worker: WorkerExitEvent];
  /** A worker did not answer its health ping in time and is being killed. */
  'worker-unhealthy': [worker: WorkerInfo];
  /** A rolling restart, or the rollout of a new primary's workers, failed. */
  'rollout-failed': [error: SdHandoffError];
}

/** Events of a {@link Worker} (inside a worker process). */
export interface WorkerEvents {
  /** Told to stop: the drain starts. */
  exiting: [];
  /** Every connection is closed: one report per listener served. */
  drained: [reports: Array<DrainReport | DrainNetReport>];
}
