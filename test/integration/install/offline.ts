/**
 * npm for a container without network: the host's own npm (bind-mounted where an official Node install keeps it)
 * and an npm cache filled on the host with everything the tarball's dependency tree and the TypeScript project
 * need, so that `npm install --offline` in the container resolves every package from it.
 */
import { existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { PROJECT_ROOT, scaled } from '../lab/config.js';
import type { Manifest } from './pack.js';
import { run } from '../lab/run.js';

export interface HostNpm {
  /** The npm package directory (the one holding bin/npm-cli.js). */
  dir: string;
  version: string;
  /** The registry the host's npm uses: the cache is keyed by its URLs, so the container must name the same one. */
  registry: string;
}

/** The npm that `npm` runs on this host, found through PATH (a symlink to bin/npm-cli.js in every usual layout). */
export async function hostNpm(): Promise<HostNpm> {
  const which = await run(['/bin/sh', '-c', 'command -v npm'], { timeoutMs: scaled(10_000) });
  const bin = which.stdout.trim();
  if (!bin) throw new Error('no npm on PATH: the install test packs and installs with npm');
  const cli = realpathSync(bin);
  const dir = path.dirname(path.dirname(cli));
  const manifest = path.join(dir, 'package.json');
  if (!cli.endsWith('/bin/npm-cli.js') || !existsSync(manifest)) throw new Error(`npm on PATH (${bin} -> ${cli}) is not an npm package's bin/npm-cli.js`);
  const { name, version } = JSON.parse(readFileSync(manifest, 'utf8')) as { name: string; version: string };
  if (name !== 'npm') throw new Error(`${manifest} is the package ${name}, not npm`);
  const registry = (await run(['npm', 'config', 'get', 'registry'], { check: true, timeoutMs: scaled(30_000) })).stdout.trim();
  return { dir, version, registry };
}

export interface OfficialNode {
  major: number;
  /** The host directory of the official release (bin/node, include/node), from scripts/node-binaries.mjs's cache. */
  dir: string;
  /** Where it is bound in the container: `/opt/node<major>`. */
  mount: string;
}

/**
 * The official Node binaries (x64) of `majors`, from scripts/node-binaries.mjs (cached; installed from the npm
 * registry the first time), to run the consumer programs on every Node the package supports.
 */
export async function officialNodes(majors: readonly number[]): Promise<OfficialNode[]> {
  const out: OfficialNode[] = [];
  for (const major of majors) {
    const r = await run([process.execPath, path.join(PROJECT_ROOT, 'scripts/node-binaries.mjs'), String(major)], { timeoutMs: scaled(600_000) });
    const bin = r.stdout.trim();
    if (r.code !== 0 || !bin.endsWith('/bin/node')) throw new Error(`node scripts/node-binaries.mjs ${major} failed: ${r.stderr.trim() || r.stdout.trim()}`);
    out.push({ major, dir: path.dirname(path.dirname(bin)), mount: `/opt/node${major}` });
  }
  return out;
}

/** `typescript@5.9.3` and `@types/node@^20.19.0`: what the repository itself compiles with. */
export function typescriptSpecs(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { devDependencies?: Record<string, string> };
  return ['typescript', '@types/node'].map((name) => {
    const range = pkg.devDependencies?.[name];
    if (!range) throw new Error(`package.json has no devDependencies.${name}: the TypeScript consumer project installs the version the repository uses`);
    return `${name}@${range}`;
  });
}

/**
 * What `npm install` of a package with this manifest fetches from the registry: its dependencies, optional
 * dependencies and the peer dependencies npm installs by itself (those not marked optional), as `name@range`.
 */
export function registrySpecs(m: Manifest): string[] {
  const peers = Object.entries(m.peerDependencies ?? {}).filter(([name]) => !m.peerDependenciesMeta?.[name]?.optional);
  const all = [...Object.entries(m.dependencies ?? {}), ...Object.entries(m.optionalDependencies ?? {}), ...peers];
  return all.map(([name, range]) => `${name}@${range}`);
}

/**
 * Fills `cacheDir` with every package the `specs` need (the tarball's registry dependencies and the TypeScript
 * project's), by installing them once into a scratch project (scripts off: only the tarballs and the registry
 * documents matter). The tarball itself is not installed here: each run's build would stay in the cache for good.
 * The cache is kept between runs, as the lab's root filesystems are: after the first run this needs the registry
 * only for what changed.
 */
export async function fillCache(cacheDir: string, scratch: string, specs: readonly string[]): Promise<void> {
  mkdirSync(cacheDir, { recursive: true });
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  writeFileSync(path.join(scratch, 'package.json'), `${JSON.stringify({ name: 'sdh-install-cache-fill', private: true }, null, 2)}\n`);
  try {
    const argv = ['npm', 'install', '--cache', cacheDir, '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', '--no-package-lock', ...specs];
    const r = await run(['/bin/sh', '-c', 'cd "$0" && exec "$@"', scratch, ...argv], { timeoutMs: scaled(300_000) });
    if (r.code !== 0) {
      throw new Error(`filling the offline npm cache failed (${argv.join(' ')}; the registry is needed the first time):\n${r.stderr.trim().split('\n').slice(-20).join('\n')}`);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
