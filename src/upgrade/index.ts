/** The Upgrader (tableflip's model, under systemd) and its control socket client. */
export { Upgrader, State, CONTROL_LISTENER, type UpgraderOptions, type UpgradeResult, type ListenOptions, type UpgradeLogEntry, type StateName } from './upgrader.js';
export { controlRequest, type ControlRequestOptions } from './control.js';
export type { StreamAddress, PacketAddress } from './listeners.js';
