/**
 * Root filesystems for the lab: `debootstrap --variant=minbase` of a Debian suite, prepared once to boot fast in
 * a container, cached in `$SDH_LAB_CACHE/<suite>` (default /var/cache/sd-handoff-lab/<suite>).
 *
 * A build goes to `.build-<suite>-<pid>` next to the cache entry and is renamed into place only when complete, with
 * `/.sdh-lab-stamp.json` inside recording the recipe hash. So the final path either holds a finished root
 * filesystem or nothing: a half-built one (build killed) stays in its `.build-*` directory and is removed by the
 * next build, and an entry whose stamp does not match the current recipe (packages, mirror, preparation changed)
 * is rebuilt. Containers never write to the cache: they boot it with `--volatile=overlay` (see container.ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, symlink, unlink, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { tool } from './availability.js';
import { type Suite, cacheDir as defaultCacheDir } from './config.js';
import { forgetChild, trackChild } from './registry.js';
import { CommandError, pidAlive, sleep, start } from './run.js';

export const PACKAGES = ['systemd', 'systemd-sysv', 'dbus', 'libsystemd0', 'iproute2', 'procps', 'curl', 'python3'];

/**
 * Units masked in every rootfs: they wait for hardware or a network the container does not have, or run
 * maintenance that would only add noise (and load) to tests.
 */
export const MASKED_UNITS = [
  'systemd-networkd-wait-online.service',
  'systemd-timesyncd.service',
  'getty.target',
  'getty@.service',
  'console-getty.service',
  'serial-getty@.service',
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'apt-daily.service',
  'apt-daily-upgrade.service',
  'dpkg-db-backup.timer',
  'e2scrub_all.timer',
  'e2scrub_reap.service',
  'fstrim.timer',
  'man-db.timer',
  'systemd-pstore.service',
  'systemd-tmpfiles-clean.timer',
];

/** Bump when prepare() changes in a way the recipe below does not capture. */
const PREPARE_VERSION = 1;
const STAMP = '.sdh-lab-stamp.json';

export interface Stamp {
  recipe: string;
  suite: Suite;
  mirror: string;
  systemd: string;
  builtAt: string;
  buildMs: number;
}

export interface Rootfs {
  suite: Suite;
  root: string;
  /** systemd package version, e.g. `252.39-1~deb12u2`. */
  systemd: string;
  /** True when this call built it, false when it came from the cache. */
  built: boolean;
  buildMs: number;
}

export function recipeHash(suite: Suite, mirror: string): string {
  const recipe = { suite, mirror, variant: 'minbase', packages: PACKAGES, masked: MASKED_UNITS, PREPARE_VERSION };
  return createHash('sha256').update(JSON.stringify(recipe)).digest('hex').slice(0, 16);
}

/**
 * The Debian mirror apt on this host uses (first `deb` source of a non-security Debian suite in
 * /etc/apt/sources.list or /etc/apt/sources.list.d/{*.list,*.sources}); SDH_LAB_MIRROR overrides it.
 */
export function aptMirror(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SDH_LAB_MIRROR?.trim()) return env.SDH_LAB_MIRROR.trim();
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d').sort()) {
      if (f.endsWith('.list') || f.endsWith('.sources')) files.push(join('/etc/apt/sources.list.d', f));
    }
  } catch {
    /* no sources.list.d */
  }
  const debianSuite = /^(bullseye|bookworm|trixie|forky|sid|stable|testing|unstable|oldstable)$/;
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    const candidates: { uris: string[]; suites: string[] }[] = [];
    if (file.endsWith('.sources')) {
      for (const para of text.split(/\n\s*\n/)) {
        const field = (k: string) =>
          new RegExp(`^${k}:\\s*(.*)$`, 'mi').exec(para.replace(/^#.*$/gm, ''))?.[1]?.trim().split(/\s+/) ?? [];
        if (!field('Types').includes('deb') || /^Enabled:\s*no/im.test(para)) continue;
        candidates.push({ uris: field('URIs'), suites: field('Suites') });
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
        if (m?.[1] && m[2]) candidates.push({ uris: [m[1]], suites: [m[2]] });
      }
    }
    for (const c of candidates) {
      if (!c.suites.some((s) => debianSuite.test(s))) continue;
      const uri = c.uris.find((u) => /^https?:\/\//.test(u) && !/security/.test(u));
      if (uri) return uri.replace(/\/+$/, '');
    }
  }
  throw new Error('no Debian mirror found in /etc/apt/sources.list{,.d/}: set SDH_LAB_MIRROR');
}

function readStamp(root: string): Stamp | undefined {
  try {
    return JSON.parse(readFileSync(join(root, STAMP), 'utf8')) as Stamp;
  } catch {
    return undefined;
  }
}

/** The cached rootfs if it exists and matches the current recipe. */
export function cachedRootfs(suite: Suite, opts: { cache?: string; mirror?: string } = {}): Rootfs | undefined {
  const root = join(opts.cache ?? defaultCacheDir(), suite);
  const stamp = readStamp(root);
  if (!stamp || stamp.recipe !== recipeHash(suite, opts.mirror ?? aptMirror())) return undefined;
  return { suite, root, systemd: stamp.systemd, built: false, buildMs: 0 };
}

/** Unmounts anything left mounted under `dir` (debootstrap mounts /proc and /sys in the target), deepest first. */
async function unmountUnder(dir: string): Promise<void> {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((p): p is string => !!p && (p === dir || p.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    const r = await start([tool('umount'), '-l', m], { timeoutMs: 30_000 }).done;
    if (r.code !== 0) throw new Error(`cannot unmount ${m} (left by an interrupted build): ${r.stderr.trim()}`);
  }
}

/** Removes a directory tree, first making sure no mount point under it would be descended into. */
async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  await unmountUnder(dir);
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Leftovers of builds whose process is gone: `.build-<suite>-<pid>` and `.old-<suite>-<pid>`. */
async function removeStaleBuilds(cache: string, suite: Suite): Promise<void> {
  for (const e of await readdir(cache).catch(() => [] as string[])) {
    const m = new RegExp(`^\\.(?:build|old)-${suite}-(\\d+)$`).exec(e);
    if (m && (Number(m[1]) === process.pid || !pidAlive(Number(m[1])))) await removeTree(join(cache, e));
  }
}

/** One builder per suite across concurrent test runs: an exclusive lock file holding the builder's pid. */
async function withLock<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(await readFile(lockPath, 'utf8').catch(() => ''));
      if (!owner || !pidAlive(owner)) {
        await unlink(lockPath).catch(() => {});
        continue;
      }
      await sleep(1000);
    }
  }
  try {
    return await fn();
  } finally {
    await unlink(lockPath).catch(() => {});
  }
}

function systemdVersionOf(root: string): string {
  const status = readFileSync(join(root, 'var/lib/dpkg/status'), 'utf8');
  const block = status.split('\n\n').find((b) => /^Package: systemd$/m.test(b) && /^Status: .* installed$/m.test(b));
  const v = block && /^Version: (.+)$/m.exec(block)?.[1];
  if (!v) throw new Error(`systemd is not installed in ${root}`);
  return v;
}

/** Makes a fresh debootstrap boot quickly and cleanly as a container. */
async function prepare(root: string, suite: Suite): Promise<void> {
  const sys = join(root, 'etc/systemd/system');
  await mkdir(sys, { recursive: true });
  for (const unit of MASKED_UNITS) {
    const p = join(sys, unit);
    await rm(p, { force: true, recursive: true });
    await symlink('/dev/null', p);
  }
  // Enablement links of masked units, so nothing references a unit that is gone.
  for (const wants of await readdir(sys)) {
    if (!wants.endsWith('.wants')) continue;
    for (const link of await readdir(join(sys, wants))) {
      if (MASKED_UNITS.includes(link) || /^getty@/.test(link)) await rm(join(sys, wants, link), { force: true });
    }
  }
  await rm(join(sys, 'default.target'), { force: true });
  await symlink('/lib/systemd/system/multi-user.target', join(sys, 'default.target'));

  const hostname = `sdh-${suite}`;
  await writeFile(join(root, 'etc/hostname'), `${hostname}\n`);
  await writeFile(join(root, 'etc/hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
  // Empty machine-id: each container gets its own from nspawn instead of sharing the one debootstrap made.
  await writeFile(join(root, 'etc/machine-id'), '');

  // Bind targets: the host's node binary and the project.
  await mkdir(join(root, 'usr/local/bin'), { recursive: true });
  await writeFile(join(root, 'usr/local/bin/node'), '');
  await chmod(join(root, 'usr/local/bin/node'), 0o755);
  await mkdir(join(root, 'project'), { recursive: true });

  // apt's package lists and caches are 100 MB nobody in a network-less container can use.
  for (const dir of ['var/lib/apt/lists', 'var/cache/apt']) {
    for (const e of await readdir(join(root, dir)).catch(() => [] as string[])) {
      if (e !== 'partial' && e !== 'archives') await rm(join(root, dir, e), { force: true, recursive: true });
    }
  }
}

export interface EnsureOptions {
  cache?: string;
  mirror?: string;
  /** Called with progress lines (build start/end). */
  log?: (line: string) => void;
  /** Kill a debootstrap that runs longer than this (default 10 minutes). */
  timeoutMs?: number;
}

/** The suite's rootfs: from the cache when its stamp matches, else built (once, under a lock) and cached. */
export async function ensureRootfs(suite: Suite, opts: EnsureOptions = {}): Promise<Rootfs> {
  const cache = opts.cache ?? defaultCacheDir();
  const mirror = opts.mirror ?? aptMirror();
  const cached = cachedRootfs(suite, { cache, mirror });
  if (cached) return cached;
  await mkdir(cache, { recursive: true });
  return withLock(join(cache, `.${suite}.lock`), async () => {
    const again = cachedRootfs(suite, { cache, mirror }); // built by another run while we waited
    if (again) return again;
    await removeStaleBuilds(cache, suite);
    const final = join(cache, suite);
    const tmp = join(cache, `.build-${suite}-${process.pid}`);
    const t0 = Date.now();
    opts.log?.(`building ${suite} rootfs in ${final} from ${mirror} (debootstrap, about a minute)`);
    const argv = [tool('debootstrap'), '--variant=minbase', `--include=${PACKAGES.join(',')}`, suite, tmp, mirror];
    const env = { ...process.env, PATH: `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`, LC_ALL: 'C' };
    const proc = start(argv, { env, timeoutMs: opts.timeoutMs ?? 600_000, detached: true });
    trackChild(proc.pid, `debootstrap ${suite}`, tmp);
    const r = await proc.done;
    forgetChild(proc.pid);
    if (r.code !== 0) {
      const log = await readFile(join(tmp, 'debootstrap/debootstrap.log'), 'utf8').catch(() => '');
      await removeTree(tmp).catch(() => {});
      const why = [...`${r.stdout}\n${r.stderr}`.split('\n')].reverse().find((l) => l.startsWith('E: ')) ?? '';
      const detail = new CommandError(argv, { ...r, stderr: `${r.stderr}\n--- debootstrap.log ---\n${log.split('\n').slice(-30).join('\n')}` });
      throw new Error(`debootstrap ${suite} from ${mirror} ${r.timedOut ? 'timed out' : `exited ${r.code}`}${why ? `: ${why.slice(3)}` : ''}\n${detail.message}`);
    }
    await unmountUnder(tmp);
    await prepare(tmp, suite);
    const buildMs = Date.now() - t0;
    const stamp: Stamp = {
      recipe: recipeHash(suite, mirror),
      suite,
      mirror,
      systemd: systemdVersionOf(tmp),
      builtAt: new Date().toISOString(),
      buildMs,
    };
    await writeFile(join(tmp, STAMP), JSON.stringify(stamp, null, 2) + '\n');
    if (existsSync(final)) {
      const old = join(cache, `.old-${suite}-${process.pid}`);
      await rename(final, old);
      await rename(tmp, final);
      await removeTree(old);
    } else {
      await rename(tmp, final);
    }
    opts.log?.(`built ${suite} rootfs (systemd ${stamp.systemd}) in ${(buildMs / 1000).toFixed(1)} s`);
    return { suite, root: final, systemd: stamp.systemd, built: true, buildMs };
  });
}
