/**
 * The prebuilds the tests need, made by scripts/prebuild.mjs when they are missing or older than what they are built
 * from (a fresh clone has none: prebuilds/ is not committed). Test files run in parallel workers: one of them builds
 * (a lock directory), the others wait for it.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ARCHES = ['x64', 'arm64'] as const;
export type Arch = (typeof ARCHES)[number];

/** The prebuild of `arch`, as scripts/prebuild.mjs names it (the loader reads the libc tag). */
export function prebuildFile(arch: Arch, root = ROOT): string {
  return path.join(root, 'prebuilds', `linux-${arch}`, 'sd-handoff.glibc.node');
}

/** Newest modification time of what a prebuild is made from. */
function sourcesMtime(): number {
  const files = ['binding.gyp', 'scripts/prebuild.mjs', 'scripts/build-native.mjs', ...fs.readdirSync(path.join(ROOT, 'native')).map((f) => `native/${f}`)];
  return Math.max(...files.map((f) => fs.statSync(path.join(ROOT, f)).mtimeMs));
}

function stale(arches: readonly Arch[]): Arch[] {
  const newest = sourcesMtime();
  return arches.filter((arch) => {
    try {
      return fs.statSync(prebuildFile(arch)).mtimeMs < newest;
    } catch {
      return true;
    }
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Makes the stale prebuilds among `arches` (a few tens of seconds; arm64 needs the cross compiler) and returns the
 * paths of both.
 */
export async function ensurePrebuilds(arches: readonly Arch[] = ARCHES): Promise<Record<Arch, string>> {
  // Outside prebuilds/, which the package ships whole.
  const lock = path.join(os.tmpdir(), `sdh-prebuild-${createHash('sha256').update(ROOT).digest('hex').slice(0, 12)}.lock`);
  for (;;) {
    if (stale(arches).length === 0) break;
    try {
      fs.mkdirSync(lock);
    } catch {
      // Another worker builds; a lock older than 10 minutes is left over by a killed run.
      if (Date.now() - fs.statSync(lock).mtimeMs > 600_000) fs.rmSync(lock, { recursive: true, force: true });
      await sleep(1000);
      continue;
    }
    try {
      const todo = stale(arches);
      if (todo.length === 0) break;
      const r = spawnSync(process.execPath, ['scripts/prebuild.mjs', ...todo], { cwd: ROOT, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`scripts/prebuild.mjs ${todo.join(' ')} failed (${r.status}):\n${r.stderr.slice(-3000)}`);
    } finally {
      fs.rmSync(lock, { recursive: true, force: true });
    }
  }
  return { x64: prebuildFile('x64'), arm64: prebuildFile('arm64') };
}
