/**
 * The addon loader's order and its advice when nothing loads, for platforms this machine is not: a world with a
 * given platform/arch/libc, a directory listing and a load() that succeeds only for the files a test says exist.
 * (test/native/prebuild*.test.ts load the real prebuilds.)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { candidates, detectLibc, loadNative, type Libc, type LoaderWorld } from '../../src/native.js';
import { SdHandoffError } from '../../src/errors.js';

const ROOT = '/pkg/node_modules/sd-handoff';

/** A loadable fake addon: what the loader calls on it. */
const fakeAddon = { setErrorClass: () => undefined };

interface Setup {
  platform?: string;
  arch?: string;
  libc?: Libc | undefined;
  env?: NodeJS.ProcessEnv;
  /** Directory -> names in it. */
  dirs?: Record<string, string[]>;
  /** Files that load; any other file fails as a missing module does. */
  loads?: string[];
  /** File -> the error its load throws (a present file that does not load). */
  fails?: Record<string, string>;
}

function world(s: Setup): LoaderWorld & { attempts: string[] } {
  const attempts: string[] = [];
  return {
    platform: s.platform ?? 'linux',
    arch: s.arch ?? 'x64',
    libc: 'libc' in s ? s.libc : 'glibc',
    root: ROOT,
    env: s.env ?? {},
    attempts,
    readdir: (dir) => s.dirs?.[dir] ?? [],
    load: (file) => {
      attempts.push(file);
      const failure = s.fails?.[file];
      if (failure) throw new Error(`${failure}\nRequire stack: ...`);
      if (s.loads?.includes(file)) return fakeAddon;
      throw new Error(`Cannot find module '${file}'`);
    },
  };
}

function failure(w: LoaderWorld): SdHandoffError {
  try {
    loadNative(w);
  } catch (err) {
    expect(err).toBeInstanceOf(SdHandoffError);
    return err as SdHandoffError;
  }
  throw new Error('expected loadNative to throw');
}

const x64Dir = `${ROOT}/prebuilds/linux-x64`;
const x64Glibc = `${x64Dir}/sd-handoff.glibc.node`;
const release = `${ROOT}/build/Release/sd_handoff.node`;
const debug = `${ROOT}/build/Debug/sd_handoff.node`;

describe('load order', () => {
  it('takes SD_HANDOFF_NATIVE first, then the prebuild, then build/Release and build/Debug', () => {
    const w = world({ env: { SD_HANDOFF_NATIVE: '/my/addon.node' }, dirs: { [x64Dir]: ['sd-handoff.glibc.node'] } });
    expect(candidates(w).map((c) => c.file)).toEqual(['/my/addon.node', x64Glibc, release, debug]);
  });

  it('loads the prebuild when there is no local build, and says which file it loaded', () => {
    const w = world({ dirs: { [x64Dir]: ['sd-handoff.glibc.node'] }, loads: [x64Glibc] });
    expect(loadNative(w).file).toBe(x64Glibc);
    expect(w.attempts).toEqual([x64Glibc]);
  });

  it('falls back to the local build when the override and the prebuild do not load', () => {
    const w = world({
      env: { SD_HANDOFF_NATIVE: '/gone.node' },
      dirs: { [x64Dir]: ['sd-handoff.glibc.node'] },
      fails: { [x64Glibc]: "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.28' not found" },
      loads: [release],
    });
    expect(loadNative(w).file).toBe(release);
    expect(w.attempts).toEqual(['/gone.node', x64Glibc, release]);
  });

  it('never tries a glibc prebuild on musl, nor a musl one on glibc; an untagged one comes after the tagged one', () => {
    const names = ['sd-handoff.musl.node', 'sd-handoff.node', 'sd-handoff.glibc.node', 'README'];
    const glibc = candidates(world({ dirs: { [x64Dir]: names } })).filter((c) => c.kind === 'prebuild');
    expect(glibc.map((c) => c.file)).toEqual([x64Glibc, `${x64Dir}/sd-handoff.node`]);
    const musl = candidates(world({ libc: 'musl', dirs: { [x64Dir]: names } })).filter((c) => c.kind === 'prebuild');
    expect(musl.map((c) => c.file)).toEqual([`${x64Dir}/sd-handoff.musl.node`, `${x64Dir}/sd-handoff.node`]);
  });

  it('looks in prebuilds/linux-arm64 on arm64', () => {
    const dir = `${ROOT}/prebuilds/linux-arm64`;
    const w = world({ arch: 'arm64', dirs: { [dir]: ['sd-handoff.glibc.node'] }, loads: [`${dir}/sd-handoff.glibc.node`] });
    expect(loadNative(w).file).toBe(`${dir}/sd-handoff.glibc.node`);
  });
});

describe('when nothing loads, the message lists every path tried and says what to do', () => {
  it('linux-x64 glibc without its prebuild: reinstall, the prebuild is missing', () => {
    const err = failure(world({}));
    expect(err.code).toBe('SDH_NATIVE_UNAVAILABLE');
    expect(err.message).toContain(`${x64Dir}/: no prebuild for glibc`);
    expect(err.message).toContain(`${release}: Cannot find module`);
    expect(err.message).toContain(`${debug}: Cannot find module`);
    expect(err.message).toContain('reinstall sd-handoff, the prebuild for linux-x64-glibc is missing');
    expect(err.message).not.toContain('build-essential');
  });

  it('linux-arm64 glibc without its prebuild: the same advice, naming arm64', () => {
    const err = failure(world({ arch: 'arm64' }));
    expect(err.message).toContain(`${ROOT}/prebuilds/linux-arm64/: no prebuild for glibc`);
    expect(err.message).toContain('reinstall sd-handoff, the prebuild for linux-arm64-glibc is missing');
  });

  it('a prebuild that is present but does not load (glibc too old): its error, then build from source', () => {
    const err = failure(world({
      env: { SD_HANDOFF_NATIVE: '/x.node' },
      dirs: { [x64Dir]: ['sd-handoff.glibc.node'] },
      fails: { [x64Glibc]: "/lib64/libc.so.6: version `GLIBC_2.28' not found" },
    }));
    const lines = err.message.split('\n');
    expect(lines[1]).toBe("  SD_HANDOFF_NATIVE=/x.node: Cannot find module '/x.node'");
    expect(lines[2]).toBe(`  ${x64Glibc}: /lib64/libc.so.6: version \`GLIBC_2.28' not found`);
    expect(err.message).toContain('install build-essential python3 and run `npm rebuild sd-handoff`');
    expect(err.message).not.toContain('reinstall');
  });

  it.each([
    ['x64', 'musl'],
    ['arm64', 'musl'],
    ['arm', 'glibc'],
    ['ppc64', 'glibc'],
  ] as const)('linux-%s-%s: no prebuild, install a toolchain and npm rebuild', (arch, libc) => {
    const err = failure(world({ arch, libc }));
    expect(err.message).toContain(
      `no prebuild for linux-${arch}-${libc}: install build-essential python3 (or build-base python3 on Alpine) and run \`npm rebuild sd-handoff\``,
    );
    expect(err.message).toContain(`${ROOT}/prebuilds/linux-${arch}/: no prebuild for ${libc}`);
  });

  it("points to the install script's log when its build from source failed", () => {
    const err = failure(world({ libc: 'musl', dirs: { [`${ROOT}/build`]: ['sd-handoff-install.log'] } }));
    expect(err.message.split('\n').at(-1)).toBe(`the build from source at install failed: see ${ROOT}/build/sd-handoff-install.log`);
    expect(failure(world({ libc: 'musl' })).message).not.toContain('sd-handoff-install.log');
  });

  it('a musl system never loads the glibc prebuild shipped for its arch', () => {
    const w = world({ libc: 'musl', dirs: { [x64Dir]: ['sd-handoff.glibc.node'] }, loads: [x64Glibc] });
    expect(failure(w).message).toContain('no prebuild for linux-x64-musl');
    expect(w.attempts).not.toContain(x64Glibc);
  });

  it.each(['darwin', 'win32', 'freebsd'])('%s: SDH_UNSUPPORTED_PLATFORM, nothing tried', (platform) => {
    const w = world({ platform, libc: undefined, loads: [release] });
    const err = failure(w);
    expect(err.code).toBe('SDH_UNSUPPORTED_PLATFORM');
    expect(err.message).toContain(platform);
    expect(w.attempts).toEqual([]);
  });
});

describe('detectLibc', () => {
  it('reads the program interpreter from the executable: musl, glibc; this node is glibc', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdh-libc-'));
    try {
      const elf = (interp: string): string => {
        const file = path.join(dir, interp.replace(/\W/g, '_'));
        fs.writeFileSync(file, Buffer.concat([Buffer.from('\x7fELF'), Buffer.alloc(0x300), Buffer.from(`${interp}\0`)]));
        return file;
      };
      expect(detectLibc(elf('/lib/ld-musl-x86_64.so.1'))).toBe('musl');
      expect(detectLibc(elf('/lib/ld-musl-aarch64.so.1'))).toBe('musl');
      expect(detectLibc(elf('/lib64/ld-linux-x86-64.so.2'))).toBe('glibc');
      expect(detectLibc(elf('/lib/ld-linux-aarch64.so.1'))).toBe('glibc');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(detectLibc()).toBe(fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc');
  });
});
