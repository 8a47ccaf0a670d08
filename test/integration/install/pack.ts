/**
 * The package as users get it: `npm pack` of the repository (its lifecycle scripts included, so `prepare` and
 * `prepack` build what they build), the tarball extracted beside it, and what a user would find wrong in it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

import { PROJECT_ROOT, scaled } from '../lab/config.js';
import { run } from '../lab/run.js';

export interface Packed {
  /** The .tgz npm wrote. */
  tgz: string;
  /** The extracted `package/` directory. */
  dir: string;
  /** Every file of the tarball, relative to `package/`, sorted. */
  files: string[];
  packedBytes: number;
  unpackedBytes: number;
  manifest: Manifest;
}

export interface Manifest {
  name: string;
  version: string;
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  bin?: string | Record<string, string>;
}

function walk(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(root, p));
    else out.push(p);
  }
  return out;
}

/**
 * `npm pack` of the repository into `outDir` (which must be empty), then `tar -x`. npm prints the lifecycle
 * scripts' output on stdout too, so the tarball is found in `outDir`, not parsed from npm's output.
 */
export async function packRepository(outDir: string): Promise<Packed> {
  const npm = await run(['/bin/sh', '-c', 'cd "$0" && exec npm pack --pack-destination "$1"', PROJECT_ROOT, outDir], {
    env: { ...process.env, npm_config_update_notifier: 'false' },
    timeoutMs: scaled(600_000),
  });
  const tgzName = readdirSync(outDir).find((f) => f.endsWith('.tgz'));
  if (npm.code !== 0 || !tgzName) {
    const tail = `${npm.stdout}\n${npm.stderr}`.trim().split('\n').slice(-30).join('\n');
    throw new Error(`npm pack in ${PROJECT_ROOT} ${npm.timedOut ? 'timed out' : `exited ${npm.code}`} (package problem: the prepare/prepack scripts):\n${tail}`);
  }
  const tgz = path.join(outDir, tgzName);
  await run(['tar', '-xzf', tgz, '-C', outDir], { check: true, timeoutMs: scaled(60_000) });
  const dir = path.join(outDir, 'package');
  const files = walk(dir).sort();
  const unpackedBytes = files.reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);
  const manifest = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as Manifest;
  return { tgz, dir, files, packedBytes: statSync(tgz).size, unpackedBytes, manifest };
}

/** `170.3 kB packed, 576.3 kB unpacked, 76 files` (kB = 1000 bytes, as npm prints them). */
export function sizeLine(p: Packed): string {
  const kb = (n: number) => `${(n / 1000).toFixed(1)} kB`;
  return `${path.basename(p.tgz)}: ${kb(p.packedBytes)} packed, ${kb(p.unpackedBytes)} unpacked, ${p.files.length} files`;
}

const TEST_FILE = /(^|\/)(test|tests|__tests__|fixtures|bench|vagrant|\.ci)\/|\.(test|spec)\.[cm]?[jt]sx?$|(^|\/)vitest\.config\./;

/** ELF e_machine of the prebuilt addons: what `file` would say, without needing `file`. */
const ELF_MACHINE: Record<string, number> = { 'linux-x64': 62, 'linux-arm64': 183 };

function prebuildProblems(p: Packed): string[] {
  const problems: string[] = [];
  for (const [platform, machine] of Object.entries(ELF_MACHINE)) {
    const addons = p.files.filter((f) => f.startsWith(`prebuilds/${platform}/`) && f.endsWith('.node'));
    if (addons.length === 0) {
      problems.push(`no prebuilt addon for ${platform} (prebuilds/${platform}/*.node): users without a compiler cannot load it`);
      continue;
    }
    for (const f of addons) {
      const head = readFileSync(path.join(p.dir, f)).subarray(0, 20);
      const isElf = head.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
      const got = isElf ? head.readUInt16LE(18) : -1;
      if (got !== machine) problems.push(`${f} is not an ELF file for ${platform} (e_machine ${got}, expected ${machine})`);
    }
  }
  return problems;
}

/** Every source map shipped, and every `sourceMappingURL`, must point at files that are in the tarball. */
function sourceMapProblems(p: Packed): string[] {
  const problems: string[] = [];
  const shipped = new Set(p.files);
  for (const f of p.files) {
    if (/\.[cm]?js$|\.d\.[cm]?ts$/.test(f)) {
      const url = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(path.join(p.dir, f), 'utf8'))?.[1];
      if (url && !url.startsWith('data:') && !shipped.has(path.posix.join(path.posix.dirname(f), url))) {
        problems.push(`${f} points at the source map ${url}, which is not in the tarball`);
      }
    }
    if (!f.endsWith('.map')) continue;
    const map = JSON.parse(readFileSync(path.join(p.dir, f), 'utf8')) as { sources?: string[]; sourceRoot?: string; sourcesContent?: unknown[] };
    const missing = (map.sources ?? []).filter((s, i) => {
      if (map.sourcesContent?.[i] != null) return false; // the source travels inside the map
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), map.sourceRoot ?? '', s));
      return !shipped.has(target);
    });
    if (missing.length > 0) problems.push(`${f} maps to ${missing.join(', ')}, not in the tarball`);
  }
  return problems;
}

/**
 * What the install lifecycle runs must be shipped: a `node FILE` script needs FILE in the tarball, any other
 * command must be a bin of a dependency; a script that can compile needs binding.gyp and the sources it lists.
 */
function installScriptProblems(p: Packed): string[] {
  const problems: string[] = [];
  const shipped = new Set(p.files);
  const deps = { ...p.manifest.dependencies, ...p.manifest.optionalDependencies };
  for (const phase of ['preinstall', 'install', 'postinstall']) {
    const script = p.manifest.scripts?.[phase];
    if (!script) continue;
    for (const command of script.split(/&&|\|\||;/).map((c) => c.trim().split(/\s+/))) {
      const [cmd, ...args] = command;
      if (!cmd) continue;
      const files = cmd === 'node' ? args.filter((a) => !a.startsWith('-')).slice(0, 1) : [];
      for (const f of files) {
        if (!shipped.has(path.posix.normalize(f))) problems.push(`the ${phase} script (${script}) runs ${f}, which is not in the tarball`);
      }
      if (cmd !== 'node' && !binOfDependency(cmd, deps)) {
        problems.push(`the ${phase} script (${script}) runs ${cmd}, which is no bin of the package's dependencies (${Object.keys(deps).join(', ') || 'none'})`);
      }
    }
    if (/node-gyp|build-native/.test(script)) problems.push(...gypSourceProblems(shipped));
  }
  return problems;
}

function binOfDependency(cmd: string, deps: Record<string, string>): boolean {
  return Object.keys(deps).some((dep) => {
    try {
      const m = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'node_modules', dep, 'package.json'), 'utf8')) as Manifest;
      return typeof m.bin === 'string' ? dep === cmd : Object.keys(m.bin ?? {}).includes(cmd);
    } catch {
      return false;
    }
  });
}

function gypSourceProblems(shipped: Set<string>): string[] {
  if (!shipped.has('binding.gyp')) return ['the install script can build the addon, but binding.gyp is not in the tarball'];
  const gyp = readFileSync(path.join(PROJECT_ROOT, 'binding.gyp'), 'utf8');
  const sources = [...gyp.matchAll(/'([\w./-]+\.(?:cc|c|cpp|h))'/g)].map((m) => m[1] ?? '');
  return sources.filter((s) => !shipped.has(s)).map((s) => `binding.gyp compiles ${s}, which is not in the tarball`);
}

/** Everything a user would find wrong with the tarball; empty when it is complete. */
export function tarballProblems(p: Packed): string[] {
  const problems: string[] = [];
  const tests = p.files.filter((f) => TEST_FILE.test(f));
  if (tests.length > 0) problems.push(`test files shipped: ${tests.join(', ')}`);
  for (const f of ['LICENSE', 'README.md', 'package.json']) {
    if (!p.files.includes(f)) problems.push(`${f} is not in the tarball`);
  }
  for (const d of ['units/', 'docs/', 'dist/']) {
    if (!p.files.some((f) => f.startsWith(d))) problems.push(`${d} is not in the tarball`);
  }
  const bins = typeof p.manifest.bin === 'string' ? [p.manifest.bin] : Object.values(p.manifest.bin ?? {});
  for (const b of bins) {
    if (!p.files.includes(path.posix.normalize(b))) problems.push(`the bin ${b} is not in the tarball`);
  }
  return [...problems, ...prebuildProblems(p), ...sourceMapProblems(p), ...installScriptProblems(p)];
}
