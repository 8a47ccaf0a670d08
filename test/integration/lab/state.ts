/**
 * What global setup hands to test files (through vitest's provide/inject): per suite, a running shared container,
 * or why there is none.
 */
import type { ContainerInfo } from './container.js';
import type { Suite } from './config.js';
import type { HostState } from './host.js';

export type SuiteState =
  | { status: 'ready'; container: ContainerInfo; buildMs: number; built: boolean }
  /** The lab cannot run here (not root, tools missing, rootfs build failed): tests are skipped, except in CI. */
  | { status: 'unavailable'; reason: string; hint: string }
  /** The rootfs was there but the container did not boot: tests fail with this error. */
  | { status: 'failed'; error: string };

export interface LabState {
  suites: Partial<Record<Suite, SuiteState>>;
  /** Only with SDH_LAB_TARGET=host (see host.ts): this machine's systemd instead of containers. */
  host?: HostState;
}

declare module 'vitest' {
  export interface ProvidedContext {
    sdhLab: LabState;
  }
}
