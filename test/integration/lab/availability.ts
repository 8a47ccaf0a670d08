/**
 * Whether this host can run the lab at all: root, Linux, the tools, a cgroup hierarchy nspawn can use. Returns the
 * reason it cannot, or undefined.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

import { labHierarchies } from './cgroup.js';

export const REQUIRED_TOOLS = ['debootstrap', 'systemd-nspawn', 'nsenter', 'umount'];

export function findTool(name: string, path = process.env.PATH ?? ''): string | undefined {
  const dirs = [...path.split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const d of dirs) {
    if (!d) continue;
    try {
      accessSync(join(d, name), constants.X_OK);
      return join(d, name);
    } catch {
      /* next */
    }
  }
  return undefined;
}

export function hostUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `the lab needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'the lab needs root (debootstrap, systemd-nspawn, cgroups)';
  const missing = REQUIRED_TOOLS.filter((t) => !findTool(t));
  if (missing.length > 0) return `missing ${missing.join(', ')}`;
  try {
    labHierarchies();
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}

const found = new Map<string, string>();
/** Absolute path of a host tool (PATH, then the sbin directories), or the bare name for spawn to report. */
export function tool(name: string): string {
  let p = found.get(name);
  if (!p) {
    p = findTool(name) ?? name;
    found.set(name, p);
  }
  return p;
}
