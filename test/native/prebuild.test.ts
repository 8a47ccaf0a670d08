/**
 * The prebuilds the package ships (scripts/prebuild.mjs, built here when stale): what glibc they need, read by
 * objdump from the binaries themselves, and the x64 one loading and working from a package copy that has no build/,
 * as an install without a compiler (or with --ignore-scripts) leaves it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ARCHES, ROOT, ensurePrebuilds, type Arch } from './prebuild-setup.js';
// @ts-expect-error -- a plain ESM script (run by node before anything is compiled), no type declarations
import { sourcesHash, upToDate } from '../../scripts/prebuild.mjs';

const OBJDUMP: Record<Arch, string> = { x64: 'objdump', arm64: 'aarch64-linux-gnu-objdump' };
const MACHINE: Record<Arch, RegExp> = { x64: /architecture: i386:x86-64/, arm64: /architecture: aarch64/ };

let files: Record<Arch, string>;

beforeAll(async () => {
  files = await ensurePrebuilds();
}, 180_000);

function objdump(arch: Arch, args: string[]): string {
  const r = spawnSync(OBJDUMP[arch], args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${OBJDUMP[arch]} not found (Debian: ${arch === 'x64' ? 'binutils' : 'binutils-aarch64-linux-gnu'}): ${r.error.message}`);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

/** [major, minor] of the highest GLIBC_x.y version among the dynamic symbols. */
function highestGlibc(dump: string): [number, number] {
  const versions = [...dump.matchAll(/\bGLIBC_(\d+)\.(\d+)/g)].map((m): [number, number] => [Number(m[1]), Number(m[2])]);
  expect(versions.length).toBeGreaterThan(0);
  return versions.sort((a, b) => a[0] - b[0] || a[1] - b[1]).at(-1)!;
}

describe.each(ARCHES)('prebuilds/linux-%s', (arch) => {
  it('is a stripped shared object for its machine', () => {
    const header = objdump(arch, ['-f', files[arch]]);
    expect(header).toMatch(MACHINE[arch]);
    expect(header).toMatch(/DYNAMIC/);
    expect(objdump(arch, ['--syms', files[arch]])).toMatch(/no symbols/);
  });

  it('needs no glibc symbol newer than 2.28, and no libsystemd', () => {
    const dump = objdump(arch, ['-T', files[arch]]);
    const [major, minor] = highestGlibc(dump);
    expect(major).toBe(2);
    expect(minor).toBeLessThanOrEqual(28);
    expect(objdump(arch, ['-p', files[arch]])).not.toMatch(/NEEDED\s+libsystemd/);
  });
});

describe('npm run build:prebuilds', () => {
  it('--if-changed (prepack) keeps a prebuild made from the same sources and rebuilds after any source changes', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sdh-stamp-'));
    try {
      for (const f of ['binding.gyp', 'scripts/prebuild.mjs', 'scripts/build-native.mjs', 'native']) fs.cpSync(path.join(ROOT, f), path.join(root, f), { recursive: true });
      fs.mkdirSync(path.join(root, 'prebuilds/linux-x64'), { recursive: true });
      fs.writeFileSync(path.join(root, 'prebuilds/linux-x64/sd-handoff.glibc.node'), '');
      fs.mkdirSync(path.join(root, 'build'));
      expect(upToDate('x64', root)).toBe(false); // no stamp: never built here
      fs.writeFileSync(path.join(root, 'build/prebuild-linux-x64.sha256'), `${sourcesHash('x64', root)}\n`);
      expect(upToDate('x64', root)).toBe(true);
      expect(upToDate('arm64', root)).toBe(false); // the stamp is per arch, and there is no arm64 prebuild
      fs.appendFileSync(path.join(root, 'native/common.cc'), '\n// changed\n');
      expect(upToDate('x64', root)).toBe(false);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('without the cross compiler: fails, naming the Debian package, and leaves the shipped prebuild alone', () => {
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'sdh-nocross-'));
    try {
      fs.symlinkSync(process.execPath, path.join(bin, 'node'));
      const before = fs.statSync(files.arm64).mtimeMs;
      const r = spawnSync(process.execPath, ['scripts/prebuild.mjs', 'arm64'], { cwd: ROOT, env: { ...process.env, PATH: bin }, encoding: 'utf8' });
      expect(r.status).toBe(1);
      // As root on Debian it first tries to install the package (impossible with this PATH): the error comes last.
      expect(r.stderr.trim().split('\n').pop()).toBe(
        "prebuild: aarch64-linux-gnu-g++ not found, needed for the linux-arm64 prebuild: install Debian's g++-aarch64-linux-gnu (apt-get install g++-aarch64-linux-gnu)",
      );
      expect(fs.statSync(files.arm64).mtimeMs).toBe(before);
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });
});

describe('the x64 prebuild in a package without build/', () => {
  it('is what the loader takes, and it passes fds and reads sealed memfds', () => {
    const pkg = fs.mkdtempSync(path.join(os.tmpdir(), 'sdh-prebuilt-'));
    try {
      fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(pkg, 'package.json'));
      fs.cpSync(path.join(ROOT, 'dist'), path.join(pkg, 'dist'), { recursive: true });
      fs.cpSync(path.join(ROOT, 'prebuilds'), path.join(pkg, 'prebuilds'), { recursive: true });
      fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
      const script = `
        import { native, nativeFile } from ${JSON.stringify(path.join(pkg, 'dist/native.js'))};
        import { nativeAvailable } from ${JSON.stringify(path.join(pkg, 'dist/index.js'))};
        import fs from 'node:fs';
        const a = native();
        const [x, y] = a.socketpair();
        const memfd = a.memfdSealed('state', Buffer.from('handed over'));
        await a.sendMsg(x, Buffer.from('fd'), [memfd], 2000);
        const got = await a.recvMsg(y, 10, 4, 2000);
        console.log(JSON.stringify({
          file: nativeFile(), available: nativeAvailable(), data: got.data.toString(),
          passed: fs.readFileSync('/proc/self/fd/' + got.fds[0], 'utf8'), kind: a.describe(y).kind,
        }));`;
      const env = { ...process.env };
      delete env.SD_HANDOFF_NATIVE;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: pkg, env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({
        file: path.join(pkg, 'prebuilds/linux-x64/sd-handoff.glibc.node'),
        available: true,
        data: 'fd',
        passed: 'handed over',
        kind: 'socket',
      });
      expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);
    } finally {
      fs.rmSync(pkg, { recursive: true, force: true });
    }
  });
});
