#!/usr/bin/env node
// `npm run build:prebuilds` (and `prepack`): the N-API prebuilds shipped in the package, made with prebuildify
// (--napi, stripped, libc-tagged) into prebuilds/linux-<arch>/sd-handoff.glibc.node:
//   linux-x64    with the host g++ (or x86_64-linux-gnu-g++ on another host)
//   linux-arm64  with aarch64-linux-gnu-g++ (Debian: g++-aarch64-linux-gnu)
// The glibc tag keeps a musl system from ever picking them. Each must need glibc <= 2.28 (binding.gyp says why):
// checked here with objdump, so a pack never ships a binary that fails to load on an older distribution.
// node-gyp runs in a temporary copy of binding.gyp + native/, so a contributor's build/ is left alone.
//
//   node scripts/prebuild.mjs              both arches
//   node scripts/prebuild.mjs arm64        only the ones named
//   node scripts/prebuild.mjs --if-changed skips an arch whose prebuild was made from these very sources (`prepack`:
//                                          a second `npm pack` takes seconds, not the two builds' minute)
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { nodeGypCommand, nodeGypEnv, packageRoot } from './build-native.mjs';
import { ensureTools, TOOLS } from './ensure-tools.mjs';

/** Newest glibc symbol version a prebuild may need (Debian buster, RHEL 8, Ubuntu 18.10). */
export const MAX_GLIBC = '2.28';

/** Target arches: the GNU triplet of each, and the Debian package carrying its cross compiler. */
export const ARCHES = {
  x64: { triplet: 'x86_64-linux-gnu', debian: 'g++-x86-64-linux-gnu' },
  arm64: { triplet: 'aarch64-linux-gnu', debian: 'g++-aarch64-linux-gnu' },
};

/** The file prebuildify writes for `arch` (the name node-gyp-build and src/native.ts look for). */
export function prebuildPath(arch, root = packageRoot) {
  return path.join(root, 'prebuilds', `linux-${arch}`, 'sd-handoff.glibc.node');
}

/** The binutils/compiler prefix for `arch`: '' for the host's own arch. */
function toolPrefix(arch) {
  return arch === os.arch() ? '' : `${ARCHES[arch].triplet}-`;
}

/** Highest GLIBC_x.y symbol version `file` needs, by `objdump -T` (the arch's own objdump), or undefined. */
export function maxGlibc(file, arch) {
  const r = spawnSync(`${toolPrefix(arch)}objdump`, ['-T', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`prebuild: ${toolPrefix(arch)}objdump -T ${file} failed: ${r.error?.message ?? r.stderr}`);
  const versions = [...r.stdout.matchAll(/GLIBC_(\d+(?:\.\d+)+)/g)].map((m) => m[1]);
  return versions.sort(compareVersions).at(-1);
}

/** Numeric comparison of dotted versions ('2.9' < '2.28'). */
export function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The compiler environment for `arch`; throws naming the Debian package when its compiler is missing. */
function compilerEnv(arch) {
  const prefix = toolPrefix(arch);
  const cxx = `${prefix}g++`;
  const found = () => {
    const probe = spawnSync(cxx, ['--version'], { stdio: 'ignore' });
    return !probe.error && probe.status === 0;
  };
  // As root on Debian/Ubuntu (a fresh clone's `npm pack`), install the cross compiler as `npm test` would.
  if (!found() && prefix) ensureTools({ tools: TOOLS.filter((t) => t.pkg === ARCHES[arch].debian), log: (l) => console.error(l) });
  if (!found()) {
    const pkg = prefix ? ARCHES[arch].debian : 'g++ (build-essential)';
    throw new Error(`prebuild: ${cxx} not found, needed for the linux-${arch} prebuild: install Debian's ${pkg} (apt-get install ${pkg.split(' ')[0]})`);
  }
  if (!prefix) return {};
  return { CC: `${prefix}gcc`, CXX: cxx, LINK: cxx, AR: `${prefix}ar`, STRIP: `${prefix}strip` };
}

/** A throw-away directory holding what node-gyp needs: binding.gyp, native/, package.json, node_modules. */
function stage() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sdh-prebuild-'));
  copyFileSync(path.join(packageRoot, 'binding.gyp'), path.join(dir, 'binding.gyp'));
  cpSync(path.join(packageRoot, 'native'), path.join(dir, 'native'), { recursive: true });
  const { name, version } = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8'));
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version }));
  // binding.gyp asks node-addon-api for its include dir: resolved from the build's working directory.
  symlinkSync(path.join(packageRoot, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/**
 * A hash of everything a prebuild is made from: binding.gyp, native/, this script and build-native.mjs, the
 * node-addon-api headers' version and the arch. Content, not mtimes: a fresh clone's files are all new.
 */
export function sourcesHash(arch, root = packageRoot) {
  const h = createHash('sha256').update(arch);
  const files = ['binding.gyp', 'scripts/prebuild.mjs', 'scripts/build-native.mjs', ...readdirSync(path.join(root, 'native')).sort().map((f) => `native/${f}`)];
  for (const f of files) h.update(f).update(readFileSync(path.join(root, f)));
  h.update(createRequire(import.meta.url)('node-addon-api/package.json').version);
  return h.digest('hex');
}

/** Where the hash of a prebuild's sources is kept: under build/, which the package does not ship. */
function stampPath(arch, root = packageRoot) {
  return path.join(root, 'build', `prebuild-linux-${arch}.sha256`);
}

/** True when the prebuild of `arch` exists and was made from the sources as they are now. */
export function upToDate(arch, root = packageRoot) {
  try {
    return existsSync(prebuildPath(arch, root)) && readFileSync(stampPath(arch, root), 'utf8').trim() === sourcesHash(arch, root);
  } catch {
    return false;
  }
}

/** Builds, checks and installs the prebuild for one arch. Returns its path and the glibc it needs. */
export function prebuild(arch) {
  if (!ARCHES[arch]) throw new Error(`prebuild: arch must be one of ${Object.keys(ARCHES).join(', ')}, got ${JSON.stringify(arch)}`);
  const extra = compilerEnv(arch);
  const env = nodeGypEnv({ ...process.env, ...extra });
  const headers = env.npm_config_nodedir ? path.join(env.npm_config_nodedir, 'include/node/node_api.h') : undefined;
  if (!headers || !existsSync(headers)) {
    throw new Error(`prebuild: no Node headers (include/node/node_api.h) next to ${process.execPath} and npm_config_nodedir is ${env.npm_config_nodedir ?? 'unset'}: node-gyp would try to download them`);
  }
  const [gypCmd, gypLead] = nodeGypCommand(env);
  // prebuildify spawns node-gyp without a shell: one executable path. npm's node-gyp.js is one (#!/usr/bin/env node).
  const nodeGyp = gypLead[0] ?? gypCmd;
  const dir = stage();
  try {
    const bin = createRequire(import.meta.url).resolve('prebuildify/bin.js');
    const args = [bin, '--napi', '--strip', '--strip-bin', extra.STRIP ?? 'strip', '--arch', arch, '--platform', 'linux',
      '--tag-libc', '--libc', 'glibc', '--target', `node@${process.versions.node}`, '--node-gyp', nodeGyp, '--cwd', dir];
    // Its output goes to stderr: `npm pack --json` runs this as prepack and must print nothing but its JSON on stdout.
    const r = spawnSync(process.execPath, args, { cwd: dir, env, stdio: ['ignore', 2, 'inherit'] });
    if (r.status !== 0) throw new Error(`prebuild: prebuildify for linux-${arch} failed (status ${r.status ?? r.signal}); its output is above`);
    const built = prebuildPath(arch, dir);
    const glibc = maxGlibc(built, arch) ?? '0';
    if (compareVersions(glibc, MAX_GLIBC) > 0) {
      throw new Error(`prebuild: linux-${arch} needs GLIBC_${glibc}, above ${MAX_GLIBC}: a system call wrapper newer than ${MAX_GLIBC} crept in (see binding.gyp)`);
    }
    const dest = prebuildPath(arch);
    mkdirSync(path.dirname(dest), { recursive: true });
    // Copied beside and renamed, so a concurrent loader never sees half a file.
    copyFileSync(built, `${dest}.tmp-${process.pid}`);
    renameSync(`${dest}.tmp-${process.pid}`, dest);
    mkdirSync(path.dirname(stampPath(arch)), { recursive: true });
    writeFileSync(stampPath(arch), `${sourcesHash(arch)}\n`);
    return { path: dest, glibc };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function main(argv) {
  const ifChanged = argv.includes('--if-changed');
  const named = argv.filter((a) => a !== '--if-changed');
  const arches = named.length ? named : Object.keys(ARCHES);
  try {
    for (const arch of arches) {
      if (ifChanged && ARCHES[arch] && upToDate(arch)) {
        console.error(`prebuild: ${path.relative(packageRoot, prebuildPath(arch))} is up to date with its sources`);
        continue;
      }
      const t0 = Date.now();
      const { path: file, glibc } = prebuild(arch);
      console.error(`prebuild: ${path.relative(packageRoot, file)} (needs GLIBC_${glibc}, ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    }
    return 0;
  } catch (err) {
    console.error(err.message);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) process.exit(main(process.argv.slice(2)));
