/**
 * What the lab runs on: the Debian suites it boots, the systemd major each one must bring, where root filesystems
 * are cached, and the environment variables that change any of it.
 *
 *   SDH_LAB_SUITES  comma-separated subset of bullseye,bookworm,trixie (default: all three)
 *   SDH_LAB_CACHE   cache directory for built root filesystems (default /var/cache/sd-handoff-lab)
 *   SDH_LAB_MIRROR  Debian mirror for debootstrap (default: the one apt on this host is configured with)
 *   SDH_LAB_BUILD_JOBS  how many suites debootstrap at once (default 3)
 *   SDH_LAB_NODE    the node binary bound at /usr/local/bin/node in every container (default: the one running the
 *                   tests); an absolute path to an x64 Linux node, e.g. `node scripts/node-binaries.mjs 24`
 *   SDH_TIME_FACTOR  multiplies every deadline and pause the integration tests set (default 1; e.g. 10 in a
 *                    software-emulated VM): test and hook timeouts, exec/spawn timeouts, waitFor, pause(), and the
 *                    time limits the tests write into their units (`scaled(ms)`)
 *   CI=true         an unavailable lab fails the run instead of skipping the integration tests
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ALL_SUITES = ['bullseye', 'bookworm', 'trixie'] as const;
export type Suite = (typeof ALL_SUITES)[number];

/** The systemd major each suite ships: the smoke test fails when a suite drifts. */
export const EXPECTED_SYSTEMD: Readonly<Record<Suite, number>> = { bullseye: 247, bookworm: 252, trixie: 257 };

export const DEFAULT_CACHE_DIR = '/var/cache/sd-handoff-lab';

/** PATH for every command run inside a container: `env -i` drops the host's environment, this is all it keeps. */
export const CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** What makes the lab available on a machine that skipped it. */
export const ENABLE_HINT = 'as root: `apt-get install debootstrap systemd-container` (npm test does it on Debian/Ubuntu), then `npm test`';

/** The repository root, bind-mounted read-only at /project in every container. */
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export function isSuite(name: string): name is Suite {
  return (ALL_SUITES as readonly string[]).includes(name);
}

/** The suites this run uses, from SDH_LAB_SUITES; an unknown name is an error, not a silent skip. */
export function selectedSuites(env: NodeJS.ProcessEnv = process.env): Suite[] {
  const raw = env.SDH_LAB_SUITES?.trim();
  if (!raw) return [...ALL_SUITES];
  const names = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = names.filter((n) => !isSuite(n));
  if (bad.length > 0) {
    throw new Error(`SDH_LAB_SUITES=${raw} names unknown suite(s) ${bad.join(', ')}; known: ${ALL_SUITES.join(', ')}`);
  }
  return ALL_SUITES.filter((s) => names.includes(s));
}

export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.SDH_LAB_CACHE?.trim() || DEFAULT_CACHE_DIR;
}

export function isCI(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.CI === 'true' || env.CI === '1';
}

/**
 * SDH_TIME_FACTOR: one factor for every deadline the integration tests set, in the container lab and in a VM alike.
 * A number >= 1 (fractions allowed); anything else is an error that names the variable and the value.
 */
export function timeFactor(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.SDH_TIME_FACTOR?.trim();
  if (!raw) return 1;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 1 || n > 100) {
    throw new Error(`SDH_TIME_FACTOR=${JSON.stringify(env.SDH_TIME_FACTOR)} is not a number from 1 to 100 (how many times slower than a normal machine this one is)`);
  }
  return n;
}

/** The factor of this run (SDH_TIME_FACTOR). */
export const TIME_FACTOR = timeFactor();

/** `ms` as this run's deadline: `ms` x SDH_TIME_FACTOR, whole milliseconds. */
export function scaled(ms: number): number {
  return Math.round(ms * TIME_FACTOR);
}

/** Waits `ms` x SDH_TIME_FACTOR: for a test's "let the load run a moment" pauses. */
export function pause(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, scaled(ms)));
}

/** The node the containers run (bound at /usr/local/bin/node), and whether SDH_LAB_NODE chose it. */
export interface LabNode {
  /** Resolved host path (nspawn binds the file itself, not a symlink to it). */
  path: string;
  /** `process.versions.node` style, e.g. `24.22.3`. */
  version: string;
  /** True when SDH_LAB_NODE named it: test names then say which node ran (see Container.label). */
  fromEnv: boolean;
}

/**
 * SDH_LAB_NODE: the node binary every container runs. Unset means the node running the tests. A path that is not
 * absolute, not an executable file, or does not answer `--version` with a version stops the run, naming the
 * variable and the value: a lab run meant for Node 24 must not quietly run Node 20.
 */
export function labNode(env: NodeJS.ProcessEnv = process.env): LabNode {
  const raw = env.SDH_LAB_NODE?.trim();
  if (!raw) return { path: realpathSync(process.execPath), version: process.versions.node, fromEnv: false };
  const bad = (why: string) => new Error(`SDH_LAB_NODE=${JSON.stringify(env.SDH_LAB_NODE)} ${why}`);
  if (!isAbsolute(raw)) throw bad('is not an absolute path (the node binary to bind at /usr/local/bin/node in the lab containers)');
  let path: string;
  try {
    path = realpathSync(raw);
    if (!statSync(path).isFile()) throw bad('is not a file');
    accessSync(path, constants.X_OK);
  } catch (e) {
    throw (e as Error).message.startsWith('SDH_LAB_NODE=') ? e : bad(`is not an executable file: ${(e as Error).message}`);
  }
  // Asked without the host's NODE_OPTIONS: an option the other version does not know would fail the check.
  const r = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 30_000, env: { PATH: env.PATH ?? '/usr/bin:/bin' } });
  const version = /^v(\d+\.\d+\.\d+)\s*$/.exec(r.stdout ?? '')?.[1];
  if (!version) {
    const said = (r.error?.message ?? `${r.stdout ?? ''}${r.stderr ?? ''}`.trim()) || `exit status ${r.status}`;
    throw bad(`does not run as node (\`${raw} --version\` printed ${JSON.stringify(said.slice(0, 200))})`);
  }
  return { path, version, fromEnv: true };
}
