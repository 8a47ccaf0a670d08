#!/usr/bin/env node
// What the test suite needs from the machine beyond node_modules, in one list. `npm test` runs this first: on
// Debian/Ubuntu as root it installs the missing packages with apt-get (one `apt-get update`, quiet); anywhere else
// it prints what is missing and the command that installs it, and the suites that need it keep their own skip
// (the lab skips with the reason, or fails with CI=true). Never fails `npm test` by itself: the tests that need a
// tool say so better than a generic "apt-get failed".
//
//   node scripts/ensure-tools.mjs            check, install when possible, report
//   node scripts/ensure-tools.mjs --check    only report (exit 1 when something is missing)
import { spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Debian package, a command it installs (how a machine without dpkg is checked), and why the suite needs it.
 * Add a row here when a test needs another package.
 */
export const TOOLS = [
  { pkg: 'debootstrap', command: 'debootstrap', why: 'builds the lab root filesystems (test/integration)' },
  { pkg: 'systemd-container', command: 'systemd-nspawn', why: 'boots systemd as PID 1 in the lab containers' },
  { pkg: 'qemu-user-static', command: 'qemu-aarch64-static', why: 'runs the arm64 addon tests with the arm64 node' },
  { pkg: 'g++-aarch64-linux-gnu', command: 'aarch64-linux-gnu-g++', why: 'cross-builds the linux-arm64 prebuild (and brings the arm64 glibc)' },
  { pkg: 'tini', command: 'tini', why: 'the container tests with a tiny init as PID 1' },
  { pkg: 'dumb-init', command: 'dumb-init', why: 'the container tests with dumb-init as PID 1' },
  { pkg: 'catatonit', command: 'catatonit', why: "the container tests with podman's --init (catatonit) as PID 1" },
  // Usually there already (npm ci compiles the addon from a fresh clone), listed so a minimal image gets them too.
  { pkg: 'build-essential', command: 'g++', why: 'compiles the addon and the linux-x64 prebuild (g++, make, objdump)' },
  { pkg: 'python3', command: 'python3', why: 'node-gyp, and the Python program of the sd-handoff run tests' },
  { pkg: 'openssl', command: 'openssl', why: 'certificates of the HTTPS drain tests' },
  { pkg: 'procps', command: 'pgrep', why: 'the process tests find their children with pgrep' },
  { pkg: 'iproute2', command: 'ss', why: 'the activation tests list listening sockets with ss' },
];

const SBIN = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Whether `command` is an executable in PATH or the usual sbin/bin directories. */
export function hasCommand(command, envPath = process.env.PATH ?? '') {
  for (const dir of [...envPath.split(path.delimiter), ...SBIN]) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, command), constants.X_OK);
      return true;
    } catch {
      /* next directory */
    }
  }
  return false;
}

/** Fields of /etc/os-release (KEY=value, quotes removed); {} when there is none. */
export function parseOsRelease(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2].replace(/^(["'])(.*)\1$/, '$2');
  }
  return out;
}

/** Debian, Ubuntu, or a derivative that says so in ID_LIKE: apt-get and these package names apply. */
export function isDebianLike(osRelease) {
  const ids = [osRelease.ID, ...(osRelease.ID_LIKE ?? '').split(/\s+/)].filter(Boolean);
  return ids.some((id) => id === 'debian' || id === 'ubuntu');
}

/** Packages dpkg reports as installed, of `pkgs`. */
function dpkgInstalled(pkgs) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\\n', ...pkgs], { encoding: 'utf8' });
  const installed = new Set();
  for (const line of (r.stdout ?? '').split('\n')) {
    const [name, status] = line.trim().split(/\s+/);
    if (name && status === 'installed') installed.add(name.replace(/:.*$/, ''));
  }
  return installed;
}

/**
 * What to do on this machine: the rows of TOOLS that are missing, and whether apt-get can install them here.
 * `installed` answers for packages (dpkg) on Debian-like machines; elsewhere only the commands can be checked.
 */
export function plan({ osRelease, uid, tools = TOOLS, installed, hasCmd = hasCommand }) {
  const debian = isDebianLike(osRelease);
  const missing = debian && installed ? tools.filter((t) => !installed.has(t.pkg)) : tools.filter((t) => !hasCmd(t.command));
  const pkgs = missing.map((t) => t.pkg);
  const install = `apt-get update && apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;
  if (missing.length === 0) return { action: 'none', missing };
  if (!debian) {
    const name = osRelease.PRETTY_NAME ?? osRelease.ID ?? 'this system';
    return { action: 'report', missing, command: `the equivalents of the Debian packages ${pkgs.join(', ')}`, why: `${name} is not Debian or Ubuntu` };
  }
  if (uid !== 0) return { action: 'report', missing, command: `sudo sh -c '${install}'`, why: 'not root' };
  return { action: 'install', missing, command: install };
}

function aptGet(args) {
  const r = spawnSync('apt-get', args, {
    encoding: 'utf8',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { ok: r.status === 0, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}` };
}

/** Runs the plan on this machine for `tools` (default all); returns the rows still missing afterwards. */
export function ensureTools({ check = false, log = console.log, tools = TOOLS } = {}) {
  let osRelease = {};
  try {
    osRelease = parseOsRelease(readFileSync('/etc/os-release', 'utf8'));
  } catch {
    /* not a Linux with os-release: only commands can be checked */
  }
  const debian = isDebianLike(osRelease) && hasCommand('dpkg-query');
  const installed = debian ? dpkgInstalled(tools.map((t) => t.pkg)) : undefined;
  const p = plan({ osRelease, uid: process.getuid?.() ?? -1, tools, installed });
  if (p.action === 'none') return [];
  const list = p.missing.map((t) => `  ${t.pkg} (${t.command}): ${t.why}`).join('\n');
  if (check || p.action === 'report') {
    log(`ensure-tools: missing, the tests that need them are skipped${p.why ? ` (${p.why})` : ''}:\n${list}\nto install: ${p.command}`);
    return p.missing;
  }
  log(`ensure-tools: installing ${p.missing.map((t) => t.pkg).join(' ')}`);
  const t0 = Date.now();
  const update = aptGet(['update', '-qq']);
  const install = update.ok
    ? aptGet(['install', '-y', '-qq', '--no-install-recommends', ...p.missing.map((t) => t.pkg)])
    : update;
  const still = p.missing.filter((t) => !dpkgInstalled([t.pkg]).has(t.pkg));
  if (!install.ok || still.length > 0) {
    const tail = install.output.trim().split('\n').slice(-15).join('\n');
    log(`ensure-tools: apt-get ${update.ok ? 'install' : 'update'} failed; still missing ${still.map((t) => t.pkg).join(' ') || 'nothing'}\n${tail}`);
    return still;
  }
  log(`ensure-tools: installed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return [];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const check = process.argv.includes('--check');
  const missing = ensureTools({ check });
  process.exit(check && missing.length > 0 ? 1 : 0);
}
