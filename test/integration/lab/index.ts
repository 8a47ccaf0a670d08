/**
 * The lab as integration tests see it.
 *
 *   import { describeEachSuite } from './lab/index.js';
 *   describeEachSuite('socket activation', (c) => {
 *     it('hands the listener over', async () => {
 *       await c.installUnit('echo.socket', '...');
 *       expect((await c.show('echo.socket', ['ActiveState'])).ActiveState).toBe('active');
 *     });
 *   });
 *
 * Each suite's container is booted once by global setup and shared by every test file (files run one after
 * another): use unit names of your own and remove what you install. A test that needs a container to itself
 * (reboots, breaks PID 1) calls bootContainer() and stop()s it in afterAll.
 */
import { describe, inject, it } from 'vitest';

import { type Suite, EXPECTED_SYSTEMD, selectedSuites } from './config.js';
import { Container } from './container.js';
import { HostMachine } from './host.js';
import type { LabState, SuiteState } from './state.js';

export { ALL_SUITES, CONTAINER_PATH, EXPECTED_SYSTEMD, type Suite, TIME_FACTOR, pause, scaled } from './config.js';
export { Container, bootContainer, type BootOptions, type ContainerInfo, type ExecOptions, type JournalEntry, type JournalOptions } from './container.js';
export { HOST_NODE, HOST_PROJECT, HostMachine, type HostInfo, type LabTarget, labTarget } from './host.js';
export { CommandError, type ExecResult, type Running, waitFor } from './run.js';

/** The suites this run uses (SDH_LAB_SUITES, default bullseye, bookworm, trixie). */
export const SUITES: readonly Suite[] = selectedSuites();

export function labState(): LabState {
  const state = inject('sdhLab');
  if (!state) throw new Error('no lab state: run this file in the vitest `integration` project (its globalSetup boots the lab)');
  return state;
}

export function suiteState(suite: Suite): SuiteState {
  return labState().suites[suite] ?? { status: 'unavailable', reason: `${suite} is not in SDH_LAB_SUITES`, hint: '' };
}

const shared = new Map<Suite, Container>();

/** The shared running container of `suite`; throws when it is not running (see suiteState for why). */
export function lab(suite: Suite): Container {
  let c = shared.get(suite);
  if (c) return c;
  const s = suiteState(suite);
  if (s.status === 'unavailable') throw new Error(`lab ${suite} unavailable: ${s.reason}`);
  if (s.status === 'failed') throw new Error(`lab ${suite} failed to boot: ${s.error}`);
  c = new Container(s.container);
  shared.set(suite, c);
  return c;
}

/**
 * A describe block per selected suite, named `NAME · SUITE (systemd N)` so every result says which systemd it ran
 * on. A suite the host cannot run is one skipped test that says why and how to enable it; a suite whose container
 * failed to boot is one failing test with the boot error.
 */
export function describeEachSuite(name: string, fn: (c: Container, suite: Suite) => void): void {
  const host = labState().host;
  if (host) {
    describeOnHost(name, host, fn);
    return;
  }
  for (const suite of SUITES) {
    const s = suiteState(suite);
    if (s.status === 'ready') {
      const c = lab(suite);
      describe(`${name} · ${c.label}`, () => fn(c, suite));
    } else if (s.status === 'unavailable') {
      describe(`${name} · ${suite} (systemd ${EXPECTED_SYSTEMD[suite]})`, () => {
        it.skip(`skipped: ${s.reason}${s.hint ? `; to run: ${s.hint}` : ''}`, () => {});
      });
    } else {
      describe(`${name} · ${suite} (systemd ${EXPECTED_SYSTEMD[suite]})`, () => {
        it('container boots', () => {
          throw new Error(s.error);
        });
      });
    }
  }
}

let hostMachine: HostMachine | undefined;

/**
 * Host mode (SDH_LAB_TARGET=host, see host.ts): one describe, `NAME · DISTRO (systemd N)`, on this machine; a host
 * that does not qualify is one failing test with the reason.
 */
function describeOnHost(name: string, host: NonNullable<LabState['host']>, fn: (c: Container, suite: Suite) => void): void {
  if (host.status === 'ready') {
    hostMachine ??= new HostMachine(host.info);
    const c = hostMachine;
    describe(`${name} · ${c.label}`, () => fn(c, c.suite));
  } else {
    describe(`${name} · host`, () => {
      it('host is usable as the lab (SDH_LAB_TARGET=host)', () => {
        throw new Error(host.error);
      });
    });
  }
}
