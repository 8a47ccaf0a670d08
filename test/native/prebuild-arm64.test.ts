/**
 * The linux-arm64 prebuild, loaded by the official arm64 Node 24 under qemu-user-static, passes every case of
 * test/native/addon.test.ts: prebuild-arm64-run.mjs runs that file unchanged with node:test (vitest does not start
 * under qemu: its esbuild/rollup are x64 binaries) against dist/, the loader picking the prebuild by itself.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { ROOT, ensurePrebuilds } from './prebuild-setup.js';

const QEMU = 'qemu-aarch64-static';
/** The arm64 glibc (ld-linux-aarch64.so.1, libc, libstdc++) Debian installs for the cross compiler. */
const SYSROOT = '/usr/aarch64-linux-gnu';

let files: { arm64: string };
let node: string;

beforeAll(async () => {
  files = await ensurePrebuilds();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/node-binaries.mjs'), '24', 'arm64'], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`scripts/node-binaries.mjs 24 arm64 failed (status ${r.status}): ${r.stderr}`);
  node = r.stdout.trim();
  if (spawnSync(QEMU, ['--version']).error) throw new Error(`${QEMU} not found: install Debian's qemu-user-static`);
  if (!fs.existsSync(path.join(SYSROOT, 'lib/ld-linux-aarch64.so.1'))) {
    throw new Error(`no arm64 glibc in ${SYSROOT}: install Debian's libc6-arm64-cross (comes with g++-aarch64-linux-gnu)`);
  }
}, 400_000);

/** The number of cases in addon.test.ts, so a run that silently dropped some cannot pass. */
function addonCases(): number {
  return [...fs.readFileSync(path.join(ROOT, 'test/native/addon.test.ts'), 'utf8').matchAll(/^\s*it\(/gm)].length;
}

/** `# name N` of node:test's TAP summary. */
function tapCount(tap: string, name: string): number {
  const m = new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap);
  if (!m) throw new Error(`no "# ${name}" in the TAP output:\n${tap.slice(-2000)}`);
  return Number(m[1]);
}

it('the arm64 node under qemu loads prebuilds/linux-arm64 and every addon case passes', () => {
  const env = { ...process.env };
  delete env.SD_HANDOFF_NATIVE;
  delete env.NODE_OPTIONS; // vitest's, for the x64 node
  const r = spawnSync(QEMU, ['-L', SYSROOT, node, '--test-reporter=tap', 'test/native/prebuild-arm64-run.mjs'], {
    cwd: ROOT,
    env,
    encoding: 'utf8',
    timeout: 400_000,
  });
  const failures = r.stdout.split('\n').filter((l) => /^\s*not ok/.test(l));
  expect(failures, `${r.stdout.slice(-4000)}\n${r.stderr}`).toEqual([]);
  expect(r.status, r.stderr).toBe(0);
  expect(r.stderr).toContain('SDH_ARCH=arm64\n');
  expect(r.stderr).toContain(`SDH_NATIVE_FILE=${files.arm64}\n`);
  const cases = addonCases();
  expect(cases).toBeGreaterThan(30);
  expect(tapCount(r.stdout, 'fail')).toBe(0);
  expect(tapCount(r.stdout, 'cancelled')).toBe(0);
  // A case may skip only where the host lacks something (IPv6 loopback), as under vitest.
  expect(tapCount(r.stdout, 'pass') + tapCount(r.stdout, 'skipped')).toBe(cases);
  expect(tapCount(r.stdout, 'skipped')).toBeLessThanOrEqual(1);
}, 420_000);
