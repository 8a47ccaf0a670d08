/**
 * scripts/install.mjs as npm runs it in an installed package (a copy under a temporary node_modules/sd-handoff):
 * quiet when the prebuild loads, a build from source when none matches, one clear message (and a successful exit)
 * when that build fails, nothing at all off Linux. The real tarball in a container with no compiler is
 * test/integration/install's business; here the failing toolchain is CC/CXX=false.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, ensurePrebuilds } from './prebuild-setup.js';

const SHIPPED = ['package.json', 'binding.gyp', 'native', 'dist', 'scripts/install.mjs', 'scripts/build-native.mjs'];
const dirs: string[] = [];

beforeAll(async () => {
  await ensurePrebuilds();
}, 180_000);

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A package as npm unpacks it into a project's node_modules; with or without prebuilds/. */
function installedPackage(withPrebuilds: boolean): string {
  const project = fs.mkdtempSync(path.join(os.tmpdir(), 'sdh-install-'));
  dirs.push(project);
  const pkg = path.join(project, 'node_modules', 'sd-handoff');
  for (const f of SHIPPED) fs.cpSync(path.join(ROOT, f), path.join(pkg, f), { recursive: true });
  if (withPrebuilds) fs.cpSync(path.join(ROOT, 'prebuilds'), path.join(pkg, 'prebuilds'), { recursive: true });
  // Its dependencies (node-addon-api for a build from source), as npm would have installed them beside it.
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
  return pkg;
}

function install(pkg: string, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): SpawnSyncReturns<string> {
  const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete merged.SD_HANDOFF_NATIVE;
  return spawnSync(process.execPath, [...nodeArgs, 'scripts/install.mjs'], { cwd: pkg, env: merged, encoding: 'utf8', timeout: 300_000 });
}

/** Which file the installed package's loader takes, or its error message. */
function loadedFrom(pkg: string): string {
  const script = `import(${JSON.stringify(path.join(pkg, 'dist/native.js'))}).then((m) => {
    try { m.native(); console.log(m.nativeFile()); } catch (e) { console.log(e.message); } })`;
  const env = { ...process.env };
  delete env.SD_HANDOFF_NATIVE;
  return spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8' }).stdout.trim();
}

describe('the install script', () => {
  it('with a prebuild that loads: builds nothing and says nothing', () => {
    const pkg = installedPackage(true);
    const r = install(pkg, { CC: 'false', CXX: 'false' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toBe('');
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);
    expect(loadedFrom(pkg)).toBe(path.join(pkg, 'prebuilds/linux-x64/sd-handoff.glibc.node'));
  });

  it('without a compiler and no prebuild: one message saying what to install, and npm install succeeds', () => {
    const pkg = installedPackage(false);
    const r = install(pkg, { CC: 'false', CXX: 'false' });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('');
    const log = path.join(pkg, 'build/sd-handoff-install.log');
    expect(r.stderr.trim().split('\n')).toEqual([
      `sd-handoff: no prebuilt addon loads on linux-x64-glibc and building it from source failed (log: ${log}).`,
      '  Install a compiler and Python: apt-get install build-essential python3 (Alpine: apk add build-base python3),',
      '  then run: npm rebuild sd-handoff',
      '  Until then sd-handoff installs and imports, but its systemd features are unavailable (SDH_NATIVE_UNAVAILABLE).',
    ]);
    expect(fs.readFileSync(log, 'utf8')).toMatch(/gyp ERR!/);
    const error = loadedFrom(pkg);
    expect(error).toContain('could not load the sd-handoff native addon');
    expect(error).toContain(`the build from source at install failed: see ${log}`);
  });

  it('without a matching prebuild but with a toolchain: builds from source, and the loader takes that build', () => {
    const pkg = installedPackage(false);
    const r = install(pkg);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(loadedFrom(pkg)).toBe(path.join(pkg, 'build/Release/sd_handoff.node'));
  }, 300_000);

  it('--build-from-source that fails says so, even though the prebuild still loads', () => {
    const pkg = installedPackage(true);
    const r = install(pkg, { CC: 'false', CXX: 'false', npm_config_build_from_source: 'true' });
    expect(r.status).toBe(0);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toBe(`sd-handoff: building the addon from source (--build-from-source) failed (log: ${path.join(pkg, 'build/sd-handoff-install.log')}).`);
    expect(lines.at(-1)).toBe(`  Meanwhile the prebuilt addon is used (${path.join(pkg, 'prebuilds/linux-x64/sd-handoff.glibc.node')}).`);
    expect(loadedFrom(pkg)).toBe(path.join(pkg, 'prebuilds/linux-x64/sd-handoff.glibc.node'));
  });

  it.each(['darwin', 'win32', 'freebsd'])('on %s: builds nothing, says so, succeeds', (platform) => {
    const pkg = installedPackage(false);
    const fake = `data:text/javascript,Object.defineProperty(process, 'platform', { value: '${platform}' })`;
    const r = install(pkg, { CC: 'false', CXX: 'false' }, ['--import', fake]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`sd-handoff: ${platform} is not Linux; no native addon`);
    expect(r.stderr).toBe('');
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);
    // And the package imports there, its systemd features reporting "not supported" instead of throwing.
    const script = `import(${JSON.stringify(path.join(pkg, 'dist/index.js'))}).then((m) => console.log(m.nativeAvailable()))`;
    const imported = spawnSync(process.execPath, ['--import', fake, '-e', script], { encoding: 'utf8' });
    expect(imported.status, imported.stderr).toBe(0);
    expect(imported.stdout.trim()).toBe('false');
  });
});
