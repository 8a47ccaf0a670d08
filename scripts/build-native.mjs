#!/usr/bin/env node
// `npm run build:native`: builds the N-API addon from source with node-gyp into build/Release (contributors; the
// package's install script uses the same helpers when no prebuild loads). On an OS other than Linux there is
// nothing to build: the package still installs and imports, and every systemd feature reports "not supported".
// Shipped in the package (scripts/install.mjs imports it), so it uses nothing outside Node and npm.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

/** The package root (this file is in scripts/). */
export const packageRoot = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/**
 * How to run node-gyp: npm tells lifecycle scripts where its own node-gyp is (npm_config_node_gyp); run by hand,
 * use npm's bundled one next to this node, else a node-gyp on PATH. Returns [command, leading args].
 */
export function nodeGypCommand(env = process.env) {
  const prefix = path.dirname(path.dirname(process.execPath));
  const bundled = path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
  const gyp = env.npm_config_node_gyp ?? (existsSync(bundled) ? bundled : undefined);
  return gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
}

/**
 * The environment for node-gyp: the headers installed with this node (include/node) when npm did not already say
 * where they are (npm_config_nodedir), so node-gyp never tries to download them (hosts often have no internet).
 */
export function nodeGypEnv(env = process.env) {
  const prefix = path.dirname(path.dirname(process.execPath));
  if (env.npm_config_nodedir || !existsSync(path.join(prefix, 'include/node/node_api.h'))) return { ...env };
  return { ...env, npm_config_nodedir: prefix };
}

/** Runs `node-gyp rebuild` in `cwd`; `stdio` as for spawnSync. Returns spawnSync's result. */
export function runNodeGyp(cwd, { stdio = 'inherit', env = process.env, args = [] } = {}) {
  const [cmd, lead] = nodeGypCommand(env);
  return spawnSync(cmd, [...lead, 'rebuild', ...args], { cwd, stdio, env: nodeGypEnv(env), encoding: 'utf8' });
}

/** The contributor build: node-gyp's output shown, its exit status returned. */
export function buildNative() {
  if (process.platform !== 'linux') {
    console.log(`sd-handoff: ${process.platform} is not Linux; skipping the native addon (systemd features will report "not supported").`);
    return 0;
  }
  const r = runNodeGyp(packageRoot);
  if (r.error) {
    console.error(`sd-handoff: could not run node-gyp: ${r.error.message}`);
    return 1;
  }
  if (r.status === 0 && existsSync(path.join(packageRoot, 'prebuilds'))) {
    // The loader prefers a matching prebuild: a contributor changing native/ must not test the old binary.
    console.log('sd-handoff: built build/Release/sd_handoff.node; the loader still prefers prebuilds/ '
      + '(run `npm run build:prebuilds` to refresh them, or set SD_HANDOFF_NATIVE=build/Release/sd_handoff.node).');
  }
  return r.status ?? 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) process.exit(buildNative());
