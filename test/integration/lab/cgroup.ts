/**
 * The cgroups each container runs in. With no systemd on the host, systemd-nspawn (`--keep-unit --register=no`)
 * uses the cgroup it was started in and creates `payload/` (the container) and `supervisor/` (nspawn itself) below
 * it. So every container gets a cgroup of its own, `sdh-lab-<owner pid>-<suite>-<n>`, in the hierarchies nspawn
 * needs: on a hybrid host the named `systemd` hierarchy and the unified (cgroup2) one; on a pure cgroup2 host the
 * root. The v1 controller hierarchies are left alone.
 *
 * Those cgroups are also how the lab cleans up: `cgroup.kill` (cgroup2, Linux >= 5.14) or SIGKILL to every pid
 * stops all that is left, and after nspawn exits the empty cgroups are removed deepest first with rmdir (nspawn
 * leaves `payload/` and `supervisor/` behind, and the next run would find them busy).
 */
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { pidAlive } from './run.js';

const CGROUP_ROOT = '/sys/fs/cgroup';
export const LAB_PREFIX = 'sdh-lab-';

/** Hierarchy roots the lab creates its cgroups in; the first one is where `cgroup.kill` is tried. */
export function labHierarchies(): string[] {
  if (existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) return [CGROUP_ROOT]; // pure cgroup2
  const roots = [join(CGROUP_ROOT, 'unified'), join(CGROUP_ROOT, 'systemd')].filter((p) =>
    existsSync(join(p, 'cgroup.procs')),
  );
  if (roots.length === 0) throw new Error(`no cgroup2 or name=systemd hierarchy under ${CGROUP_ROOT}`);
  return roots;
}

export function cgroupName(suite: string, seq: number, owner = process.pid): string {
  return `${LAB_PREFIX}${owner}-${suite}-${seq}`;
}

/** Creates the cgroup in every lab hierarchy; returns the `cgroup.procs` files a process must be written into. */
export function createCgroup(name: string): string[] {
  return labHierarchies().map((root) => {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    return join(dir, 'cgroup.procs');
  });
}

function subtree(dir: string): string[] {
  // Deepest first, so rmdir can go in order.
  const out: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    try {
      if (statSync(p).isDirectory()) out.push(...subtree(p));
    } catch {
      /* gone meanwhile */
    }
  }
  out.push(dir);
  return out;
}

/** Every pid in the cgroup or below it, in all lab hierarchies. */
export function cgroupPids(name: string): number[] {
  const pids = new Set<number>();
  for (const root of labHierarchies()) {
    for (const dir of subtree(join(root, name))) {
      try {
        for (const line of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n')) {
          const pid = Number(line);
          if (line && Number.isInteger(pid)) pids.add(pid);
        }
      } catch {
        /* removed meanwhile */
      }
    }
  }
  return [...pids];
}

/** SIGKILLs everything in the cgroup: cgroup.kill where the kernel has it, else each pid (repeated until empty). */
export function killCgroup(name: string): void {
  for (const root of labHierarchies()) {
    const killFile = join(root, name, 'cgroup.kill');
    if (existsSync(killFile)) {
      try {
        writeFileSync(killFile, '1');
      } catch {
        /* fall through to per-pid kill */
      }
    }
  }
  for (const pid of cgroupPids(name)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** Removes the cgroup and everything below it, deepest first. Returns directories that could not be removed. */
export function removeCgroup(name: string): string[] {
  const left: string[] = [];
  for (const root of labHierarchies()) {
    const top = join(root, name);
    if (!existsSync(top)) continue;
    for (const dir of subtree(top)) {
      try {
        rmdirSync(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') left.push(dir);
      }
    }
  }
  return left;
}

/** Lab cgroups (any owner) present in the lab hierarchies, with the pid of the process that created them. */
export function listLabCgroups(): { name: string; owner: number }[] {
  const found = new Map<string, number>();
  for (const root of labHierarchies()) {
    let entries: string[] = [];
    try {
      entries = readdirSync(root);
    } catch {
      continue;
    }
    for (const e of entries) {
      const m = /^sdh-lab-(\d+)-/.exec(e);
      if (m) found.set(e, Number(m[1]));
    }
  }
  return [...found].map(([name, owner]) => ({ name, owner }));
}

const NSPAWN_PROPAGATE = '/run/systemd/nspawn/propagate';

/**
 * nspawn keeps a directory per machine in /run/systemd/nspawn/propagate and removes it when it exits normally; a
 * SIGKILLed nspawn leaves it. Remove it (never while anything is mounted below it).
 */
export function removeNspawnLeftovers(machine: string): void {
  const dir = join(NSPAWN_PROPAGATE, machine);
  if (!existsSync(dir)) return;
  const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => {
      const p = l.split(' ')[4];
      return p === dir || p?.startsWith(dir + '/');
    });
  if (!mounted) rmSync(dir, { recursive: true, force: true });
}

/**
 * Containers left behind by a lab run that died without cleaning up (SIGKILL, crash): their owner is gone, so
 * kill what is left in their cgroups and remove them. Returns the names swept.
 */
export function sweepOrphans(): string[] {
  const swept: string[] = [];
  for (const { name, owner } of listLabCgroups()) {
    if (owner === process.pid || pidAlive(owner)) continue;
    killCgroup(name);
    swept.push(name);
  }
  if (swept.length > 0) {
    // Killed processes leave their cgroups asynchronously; give them a moment before rmdir.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && swept.some((n) => cgroupPids(n).length > 0)) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
    for (const n of swept) removeCgroup(n);
  }
  let propagate: string[] = [];
  try {
    propagate = readdirSync(NSPAWN_PROPAGATE);
  } catch {
    /* nspawn never ran here */
  }
  for (const machine of [...swept, ...propagate]) {
    const owner = Number(/^sdh-lab-(\d+)-/.exec(machine)?.[1]);
    if (owner && owner !== process.pid && !pidAlive(owner)) removeNspawnLeftovers(machine);
  }
  return swept;
}
