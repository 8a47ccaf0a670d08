/**
 * vitest globalSetup of the `integration` project: makes sure each selected suite has a rootfs (building the
 * missing ones), boots one shared container per suite, and hands their pids to test files as `inject('sdhLab')`
 * (read it through `lab()` / `describeEachSuite()` in ./index.ts). Teardown powers them off and removes their
 * cgroups.
 *
 * A host that cannot run the lab (not root, no debootstrap/systemd-nspawn, rootfs build failed, e.g. no network)
 * makes the integration tests skip with the reason and how to enable them; with CI=true it fails the run instead.
 * Ctrl-C / SIGTERM: vitest exits right after its own signal handler, so the lab's handler stops the containers
 * synchronously (SIGTERM to nspawn, bounded wait, SIGKILL to their cgroups); an exit hook does the same for any
 * other way out, and containers of a run that was SIGKILLed are swept by the next one.
 */
import type { TestProject } from 'vitest/node';

import { hostUnavailableReason } from './availability.js';
import { sweepOrphans } from './cgroup.js';
import { ENABLE_HINT, type Suite, isCI, selectedSuites } from './config.js';
import { type Container, bootContainer, containerNode } from './container.js';
import { hostSetup, labTarget } from './host.js';
import { cleanupSync } from './registry.js';
import { type Rootfs, aptMirror, ensureRootfs } from './rootfs.js';
import type { LabState } from './state.js';

const log = (line: string) => process.stderr.write(`[sdh-lab] ${line}\n`);

/** Runs `fn` over `items` with at most `jobs` at once. */
async function pool<T, R>(items: readonly T[], jobs: number, fn: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) {
      try {
        results[i] = { status: 'fulfilled', value: await fn(items[i] as T) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));
  return results;
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const suites = selectedSuites();
  const state: LabState = { suites: {} };
  const containers: Container[] = [];

  const unavailable = (suite: Suite, reason: string, hint = ENABLE_HINT) => {
    if (isCI()) throw new Error(`integration lab unavailable for ${suite} with CI=true: ${reason}`);
    state.suites[suite] = { status: 'unavailable', reason, hint };
  };

  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: stopping lab containers`);
    const stopped = cleanupSync(5000);
    if (stopped.length > 0) log(`stopped ${stopped.join(', ')}`);
  };
  const teardown = async () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const t0 = Date.now();
    const results = await Promise.allSettled(containers.map((c) => c.stop()));
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => errorText(r.reason));
    if (containers.length > 0) log(`stopped ${containers.map((c) => c.suite).join(', ')} in ${Date.now() - t0} ms`);
    if (errors.length > 0) throw new Error(`lab teardown: ${errors.join('; ')}`);
  };

  if (labTarget() === 'host') {
    // Host mode (a Vagrant VM): the systemd under test is this machine's PID 1; no rootfs, no container.
    if (process.env.SDH_LAB_NODE?.trim()) {
      throw new Error(`SDH_LAB_NODE=${JSON.stringify(process.env.SDH_LAB_NODE)} has no effect with SDH_LAB_TARGET=host: the units run the machine's /usr/local/bin/node`);
    }
    const host = await hostSetup(log);
    for (const s of suites) state.suites[s] = { status: 'unavailable', reason: 'SDH_LAB_TARGET=host runs no containers', hint: 'unset SDH_LAB_TARGET' };
    project.provide('sdhLab', { ...state, host });
    return teardown;
  }

  // A bad SDH_LAB_NODE stops the run here, before any build, with the variable and its value.
  const node = containerNode();
  if (node.fromEnv) log(`containers run node ${node.version} (SDH_LAB_NODE=${node.path})`);

  const reason = hostUnavailableReason();
  if (reason) {
    for (const s of suites) unavailable(s, reason);
    log(`integration tests skipped: ${reason}; to run them: ${ENABLE_HINT}`);
    project.provide('sdhLab', state);
    return teardown;
  }
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const swept = sweepOrphans();
  if (swept.length > 0) log(`removed containers left by earlier runs: ${swept.join(', ')}`);

  let mirror: string;
  try {
    mirror = aptMirror();
  } catch (e) {
    for (const s of suites) unavailable(s, errorText(e));
    project.provide('sdhLab', state);
    return teardown;
  }

  // Builds: debootstrap is mostly waiting on the network and dpkg; see the lab README for parallel vs serial.
  const jobs = Number(process.env.SDH_LAB_BUILD_JOBS) || suites.length;
  const t0 = Date.now();
  const built = await pool(suites, jobs, (s) => ensureRootfs(s, { mirror, log }));
  const rootfs = new Map<Suite, Rootfs>();
  built.forEach((r, i) => {
    const s = suites[i] as Suite;
    if (r.status === 'fulfilled') rootfs.set(s, r.value);
    else {
      log(`rootfs ${s} could not be built: ${errorText(r.reason)}`);
      unavailable(
        s,
        `rootfs build failed: ${errorText(r.reason).split('\n')[0]}`,
        `network access to ${mirror} (or SDH_LAB_MIRROR=<a Debian mirror>), then \`npm test\``,
      );
    }
  });
  if ([...rootfs.values()].some((r) => r.built)) log(`rootfs builds took ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const t1 = Date.now();
  const booted = await pool([...rootfs.keys()], rootfs.size, (s) => bootContainer(s, { rootfs: rootfs.get(s) as Rootfs, log }));
  [...rootfs.keys()].forEach((s, i) => {
    const r = booted[i];
    const fs = rootfs.get(s) as Rootfs;
    if (r?.status === 'fulfilled') {
      containers.push(r.value);
      state.suites[s] = { status: 'ready', container: r.value.info(), buildMs: fs.buildMs, built: fs.built };
    } else {
      state.suites[s] = { status: 'failed', error: errorText(r?.reason) };
      log(`container ${s} failed to boot: ${errorText(r?.reason)}`);
    }
  });
  log(
    `booted ${containers.map((c) => `${c.suite} (systemd ${c.systemdVersion}, ${c.state}, ${c.bootMs} ms)`).join(', ') || 'nothing'} in ${Date.now() - t1} ms`,
  );
  project.provide('sdhLab', state);
  return teardown;
}
