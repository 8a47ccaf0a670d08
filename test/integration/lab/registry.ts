/**
 * Everything this process started for the lab (debootstrap runs, containers), so that it can all be stopped
 * synchronously when the process exits for any reason: `process.on('exit')` runs no asynchronous code, so this
 * path SIGKILLs by cgroup / process group, waits with a blocking sleep, and removes what is left. The graceful
 * path (poweroff, wait, rmdir) is Container.stop(); this is the guarantee behind it.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

import { cgroupPids, killCgroup, removeCgroup, removeNspawnLeftovers } from './cgroup.js';
import { sleepSync } from './run.js';

interface Child {
  what: string;
  /** A directory to unmount and remove if the child is killed (a half-built rootfs). */
  dir?: string;
}

const children = new Map<number, Child>();
const containers = new Map<string, { nspawnPid: number }>();

/** `pid` was started detached, so it leads its own process group and the whole group can be killed. */
export function trackChild(pid: number, what: string, dir?: string): void {
  if (pid > 0) children.set(pid, dir === undefined ? { what } : { what, dir });
  installExitHook();
}

export function forgetChild(pid: number): void {
  children.delete(pid);
}

export function trackContainer(cgroup: string, nspawnPid: number): void {
  containers.set(cgroup, { nspawnPid });
  installExitHook();
}

export function forgetContainer(cgroup: string): void {
  containers.delete(cgroup);
}

export function trackedContainers(): string[] {
  return [...containers.keys()];
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p && (p === dir || p.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
}

/**
 * Stops everything still tracked and removes its cgroups and directories; returns what it had to stop. With
 * `gracefulMs`, containers first get SIGTERM (nspawn halts the container) and that long to end before SIGKILL.
 */
export function cleanupSync(gracefulMs = 0): string[] {
  const stopped: string[] = [];
  if (gracefulMs > 0 && containers.size > 0) {
    for (const { nspawnPid } of containers.values()) {
      try {
        process.kill(nspawnPid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    const until = Date.now() + gracefulMs;
    while (Date.now() < until && [...containers.keys()].some((c) => cgroupPids(c).length > 0)) sleepSync(50);
  }
  for (const [pid, child] of children) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    stopped.push(`${child.what} (pid ${pid})`);
  }
  for (const [cgroup, { nspawnPid }] of containers) {
    killCgroup(cgroup);
    stopped.push(`${cgroup} (nspawn pid ${nspawnPid})`);
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && [...containers.keys()].some((c) => cgroupPids(c).length > 0)) sleepSync(50);
  for (const cgroup of containers.keys()) {
    removeCgroup(cgroup);
    removeNspawnLeftovers(cgroup); // the machine is named like its cgroup
  }
  for (const child of children.values()) {
    if (!child.dir) continue;
    sleepSync(200); // let the killed group release the mounts it made
    for (const m of mountsUnder(child.dir)) spawnSync('umount', ['-l', m], { stdio: 'ignore', timeout: 10_000 });
    // Never recurse into a directory that still has something mounted below it.
    if (mountsUnder(child.dir).length === 0) rmSync(child.dir, { recursive: true, force: true });
  }
  children.clear();
  containers.clear();
  return stopped;
}

let hooked = false;
function installExitHook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    const stopped = cleanupSync();
    if (stopped.length > 0) process.stderr.write(`[sdh-lab] exit: killed ${stopped.join(', ')}\n`);
  });
}
