/** Worker pools: a primary holding the listeners and N spawned workers accepting on them, replaced one at a time. */
export { WorkerPool, type WorkerPoolOptions, type PoolListener, type WorkerInfo, type WorkerState, type RolloutResult } from './pool.js';
export { Worker, type WorkerConnectOptions, type WorkerListenOptions } from './worker.js';
