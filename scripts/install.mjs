#!/usr/bin/env node
// The package's install script (npm install, npm rebuild). Never fails the install:
//  - off Linux: nothing to build (the package imports; systemd features report "not supported");
//  - a prebuild matching this system loads (prebuilds/linux-x64, linux-arm64, glibc): nothing to do;
//  - otherwise (musl, another arch, glibc older than 2.28, or --build-from-source): build from source with node-gyp,
//    its output in build/sd-handoff-install.log; when that fails, ONE message saying what to install.
// In a git checkout (not under node_modules) it builds from source as `npm run build:native` does and fails when
// that fails: contributors need the toolchain, and their build/Release is what they test.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildNative, packageRoot, runNodeGyp } from './build-native.mjs';

/** Where the build from source writes node-gyp's output (src/native.ts points to it when nothing loads). */
export const INSTALL_LOG = path.join(packageRoot, 'build', 'sd-handoff-install.log');

/** The loader in dist/ (shipped), or undefined when dist/ is not built (a fresh checkout). */
async function loader() {
  const file = path.join(packageRoot, 'dist', 'native.js');
  if (!existsSync(file)) return undefined;
  return import(pathToFileURL(file).href);
}

/** The file the loader takes here, or undefined with the reason. */
function tryLoad(mod) {
  try {
    return { file: mod.loadNative(mod.defaultWorld()).file };
  } catch (err) {
    return { error: err.message };
  }
}

/** node-gyp rebuild, quietly; its output goes to INSTALL_LOG only when it fails (rebuild empties build/ first). */
function buildFromSource() {
  const r = runNodeGyp(packageRoot, { stdio: 'pipe' });
  if (r.status === 0) return true;
  mkdirSync(path.dirname(INSTALL_LOG), { recursive: true });
  const why = r.error ? `could not run node-gyp: ${r.error.message}\n` : '';
  writeFileSync(INSTALL_LOG, `${why}${r.stdout ?? ''}${r.stderr ?? ''}\nexit status: ${r.status ?? r.signal}\n`);
  return false;
}

async function main() {
  if (process.platform !== 'linux') {
    console.log(`sd-handoff: ${process.platform} is not Linux; no native addon (systemd features will report "not supported").`);
    return 0;
  }
  if (!packageRoot.split(path.sep).includes('node_modules')) return buildNative();
  const mod = await loader();
  const fromSource = process.env.npm_config_build_from_source === 'true';
  if (mod && !fromSource && tryLoad(mod).file) return 0;
  const built = buildFromSource();
  const after = mod ? tryLoad(mod) : { file: built ? 'build/Release' : undefined };
  // Asked to build from source, a failure is worth saying even though the prebuild still loads.
  if (after.file && (built || !fromSource)) return 0;
  const libc = mod?.detectLibc() ?? 'glibc';
  const what = fromSource ? 'building the addon from source (--build-from-source) failed' : `no prebuilt addon loads on linux-${process.arch}-${libc} and building it from source failed`;
  console.error(
    `sd-handoff: ${what} (log: ${INSTALL_LOG}).\n`
      + '  Install a compiler and Python: apt-get install build-essential python3 (Alpine: apk add build-base python3),\n'
      + '  then run: npm rebuild sd-handoff\n'
      + (after.file
        ? `  Meanwhile the prebuilt addon is used (${after.file}).`
        : '  Until then sd-handoff installs and imports, but its systemd features are unavailable (SDH_NATIVE_UNAVAILABLE).'),
  );
  return 0;
}

process.exit(await main());
