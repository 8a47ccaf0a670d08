/**
 * sd-handoff: zero-downtime upgrades, reloads and restarts for Node.js services under systemd.
 * This module only re-exports the public surface.
 *
 * @module sd-handoff
 */
export { SdHandoffError, ERROR_CODES, type ErrorCode, type ErrorDetails } from './errors.js';
export {
  listenFds,
  serverFromFd,
  socketFromFd,
  LISTEN_FDS_START,
  type ListenFd,
  type ListenFdsOptions,
  type ServerFromFdOptions,
  type SocketFromFdOptions,
} from './activation.js';
export * as notify from './notify.js';
export { nativeAvailable, type FdInfo, type Credentials } from './native.js';
export {
  Upgrader,
  State,
  controlRequest,
  type ControlRequestOptions,
  type StateName,
  type UpgraderOptions,
  type UpgradeResult,
  type ListenOptions,
  type UpgradeLogEntry,
  type StreamAddress,
  type PacketAddress,
} from './upgrade/index.js';
export type {
  UpgraderEvents,
  UpgradeStartedEvent,
  ExitingEvent,
  DrainedEvent,
  WorkerPoolEvents,
  WorkerExitEvent,
  WorkerEvents,
} from './events.js';
export { drain, drainNet, trackConnections, type DrainOptions, type DrainReport, type DrainNetOptions, type DrainNetReport } from './drain.js';
export { writePidFile, readPidFile } from './pidfile.js';
export {
  createJournal,
  captureConsole,
  isJournalStream,
  redetectJournals,
  Priority,
  JOURNAL_SOCKET,
  type Journal,
  type JournalOptions,
  type JournalStats,
  type JournalTarget,
  type LineWriter,
  type DetectOptions as JournalDetectOptions,
  type Fields as JournalFields,
  type FieldValue as JournalFieldValue,
} from './journal.js';
export { WorkerPool, Worker, type WorkerPoolOptions, type PoolListener, type WorkerInfo, type WorkerState, type RolloutResult, type WorkerConnectOptions, type WorkerListenOptions } from './workers/index.js';
export {
  Systemd,
  type ConnectOptions as SystemdConnectOptions,
  type UnitState,
  type ListenAddress,
  type JobOptions,
  type JobResult,
  type PropertiesChange,
} from './dbus.js';
export { renderUnits, parseListen, verifyUnits, verifyRendered, type RenderOptions, type RenderedUnit, type Listener, type VerifyResult, type RunReady } from './units.js';
