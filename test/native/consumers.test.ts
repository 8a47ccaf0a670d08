/**
 * The package as users get it: `npm pack` once, then fresh projects in temp dirs that `npm install` the tarball
 * (offline, from npm's cache) and run small programs through each module system, under Node 20 (this one), 22 and
 * 24 (official binaries, scripts/node-binaries.mjs):
 *
 * - plain JavaScript: `import` and `require()` of `sd-handoff`, `sd-handoff/pino` and `sd-handoff/auto`, and an
 *   unmodified CommonJS server run with `node --require sd-handoff/auto`, upgraded by SIGHUP under load;
 * - TypeScript `module: nodenext` (`.mts` and `.cts`) and `moduleResolution: bundler`, compiled by the repository's
 *   tsc with `skipLibCheck: false` (the published .d.ts are checked too) and run.
 *
 * The programs are in test/fixtures/consumers (see its README). Outside systemd: the environment loses NOTIFY_SOCKET,
 * LISTEN_*, WATCHDOG_*, JOURNAL_STREAM and SDH_*.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startLoad } from '../../bench/load.js';
import { alive, freePort, readPid, ROOT, tempDir, waitFor } from './helpers.js';

const FIXTURES = path.join(ROOT, 'test/fixtures/consumers');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const TYPES_NODE = JSON.parse(readFileSync(path.join(ROOT, 'node_modules/@types/node/package.json'), 'utf8')).version as string;

/** Node binaries to run every program with: this process's (20), then the official 22 and 24. */
function nodes(): Array<{ name: string; bin: string }> {
  const official = ['22', '24'].map((major) => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/node-binaries.mjs'), major], { encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) throw new Error(`scripts/node-binaries.mjs ${major} failed (status ${r.status}): ${r.stderr}`);
    return r.stdout.trim();
  });
  return [process.execPath, ...official].map((bin) => ({ name: `Node ${spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim()}`, bin }));
}

/** The environment of a user's shell outside systemd. */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(NOTIFY_SOCKET|LISTEN_|WATCHDOG_|JOURNAL_STREAM|SDH_|NODE_OPTIONS|VITEST)/.test(k)) env[k] = v;
  }
  return { ...env, ...extra };
}

function run(command: string, args: string[], cwd: string, timeoutMs = 120_000, env = userEnv()): { stdout: string; stderr: string } {
  const r = spawnSync(command, args, { cwd, env, encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) {
    throw new Error(`${path.basename(command)} ${args.join(' ')} in ${cwd} failed (status ${r.status}, signal ${r.signal}):\n${r.stdout}\n${r.stderr}`);
  }
  return { stdout: r.stdout, stderr: r.stderr };
}

/** What every program prints (one JSON line). */
interface Report {
  ready: boolean;
  create: string;
  native: boolean;
  pino: string;
  autoState: string;
  autoSame: boolean;
}

/** What a user sees from a program outside systemd, with the three entry points loaded. */
function expectWorks(bin: string, program: string, cwd: string): void {
  const { stdout, stderr } = run(bin, [program], cwd, 30_000);
  const report = JSON.parse(stdout.trim().split('\n').pop()!) as Report;
  expect(report, stderr).toEqual({ ready: false, create: 'function', native: true, pino: 'function', autoState: 'starting', autoSame: true });
  // The pino destination wrote its warning where a journal-less process logs: stderr, with its syslog priority.
  expect(stderr).toMatch(/<4>warned from main\.[mc]?[jt]s/);
  // require(esm) is a stable feature on every supported Node: no ExperimentalWarning for the user.
  expect(stderr).not.toMatch(/Warning/);
}

let tarball = '';
let NODES: Array<{ name: string; bin: string }> = [];
const work = tempDir('sdh-consumers-');

/** A fresh project in the work dir: `package.json`, the fixture's files, the tarball (and `extra`) installed. */
function project(name: string, fixture: string, pkg: Record<string, unknown>, extra: string[] = []): string {
  const dir = path.join(work.dir, name);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, private: true, ...pkg }, null, 2));
  cpSync(path.join(FIXTURES, fixture), dir, { recursive: true });
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, ...extra], dir);
  return dir;
}

beforeAll(() => {
  NODES = nodes();
  const packDir = path.join(work.dir, 'pack');
  mkdirSync(packDir);
  run('npm', ['pack', '--pack-destination', packDir], ROOT, 300_000);
  const files = readdirSync(packDir).filter((f) => f.endsWith('.tgz'));
  expect(files).toHaveLength(1);
  tarball = path.join(packDir, files[0]!);
}, 600_000);

afterAll(() => work.cleanup());

describe('JavaScript project: import and require() of sd-handoff, sd-handoff/pino and sd-handoff/auto', () => {
  let dir = '';
  beforeAll(() => {
    dir = project('js', 'js', {});
  }, 120_000);

  it('the published .d.ts carry no @internal member (the test seams are stripped)', () => {
    const dts: string[] = [];
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(d, e.name));
        else if (e.name.endsWith('.d.ts')) dts.push(path.join(d, e.name));
      }
    };
    walk(path.join(dir, 'node_modules/sd-handoff/dist'));
    expect(dts.length).toBeGreaterThan(10);
    expect(dts.filter((f) => readFileSync(f, 'utf8').includes('@internal')).map((f) => path.relative(dir, f))).toEqual([]);
    const upgrader = readFileSync(path.join(dir, 'node_modules/sd-handoff/dist/upgrade/upgrader.d.ts'), 'utf8');
    expect(upgrader).toContain('pidFile?:');
    expect(upgrader).not.toMatch(/\baddon\?:|\bspawn\?:|\bnotifier\?:/);
  });

  for (const program of ['main.mjs', 'main.cjs']) {
    it(`${program} (${program.endsWith('.cjs') ? 'require' : 'import'}) works on Node 20, 22 and 24`, () => {
      for (const node of NODES) expectWorks(node.bin, program, dir);
    }, 60_000);
  }

  it('one install and one Upgrader per process, whichever entry of sd-handoff/auto loads first (--import, --require, NODE_OPTIONS)', () => {
    for (const node of NODES) {
      const report = (args: string[], env = userEnv()): unknown => JSON.parse(run(node.bin, args, dir, 30_000, env).stdout.trim());
      // --import: the Upgrader is there from the application's first line.
      expect(report(['--import', 'sd-handoff/auto', 'both.cjs']), node.name).toEqual({ same: true, state: 'starting', atStart: true });
      expect(report(['--require', 'sd-handoff/auto', 'both.cjs']), node.name).toMatchObject({ same: true, state: 'starting' });
      // The form for process managers that only pass an environment.
      expect(report(['both.cjs'], userEnv({ NODE_OPTIONS: '--import sd-handoff/auto' })), node.name).toEqual({ same: true, state: 'starting', atStart: true });
      // Without a preload, the application's own require() is the first load.
      expect(report(['both.cjs']), node.name).toEqual({ same: true, state: 'starting', atStart: false });
    }
  }, 60_000);

  it('an Upgrader that cannot be created ends the process with the error, under --import and --require alike', async () => {
    const nothing = path.join(work.dir, 'nothing-listens-here.sock');
    for (const node of NODES) {
      for (const preload of ['--import', '--require']) {
        const env = userEnv({ PORT: String(await freePort()), SDH_TAKEOVER: nothing });
        const r = spawnSync(node.bin, [preload, 'sd-handoff/auto', 'auto-app.cjs'], { cwd: dir, env, encoding: 'utf8', timeout: 30_000 });
        expect(r.status, `${node.name} ${preload}: ${r.stderr}`).toBe(1);
        expect(r.stderr).toContain(`SdHandoffError: takeover: cannot reach the running instance at ${nothing}`);
      }
    }
  }, 60_000);

  const started = new Set<number>();
  afterEach(async () => {
    for (const pid of started) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await waitFor('the app processes to exit', () => [...started].every((p) => !alive(p)), 5000).catch(() => {});
    started.clear();
  });

  it('node --require sd-handoff/auto: an unmodified CommonJS server is upgraded by SIGHUP under load with 0 failed requests, on Node 20, 22 and 24', async () => {
    for (const node of NODES) {
      const port = await freePort();
      const pidFile = path.join(dir, `app-${port}.pid`);
      const env = userEnv({ PORT: String(port), SDH_PIDFILE: pidFile, SDH_DRAIN_TIMEOUT_MS: '5000' });
      const child: ChildProcess = spawn(node.bin, ['--require', 'sd-handoff/auto', 'auto-app.cjs'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      started.add(child.pid!);
      const first = await waitFor(`${node.name}: the PID file`, () => readPid(pidFile));
      expect(first, output).toBe(child.pid);
      const url = `http://127.0.0.1:${port}/`;
      const ka = startLoad({ url, mode: 'keepalive', connections: 4, durationMs: 30_000 });
      const nc = startLoad({ url, mode: 'newconn', connections: 2, durationMs: 30_000 });
      await new Promise((r) => setTimeout(r, 300));
      process.kill(first, 'SIGHUP');
      const second = await waitFor(`${node.name}: the PID file to name the new process`, () => {
        const p = readPid(pidFile);
        return p !== undefined && p !== first ? p : undefined;
      });
      started.add(second);
      await waitFor(`${node.name}: old pid ${first} to exit`, () => !alive(first), 15_000);
      await new Promise((r) => setTimeout(r, 300));
      const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
      const served = await (await fetch(url)).text();
      expect(served, `${node.name}: the new process serves`).toBe(`pid ${second}\n`);
      for (const c of [k.counts, n.counts]) {
        expect(c.ok, `${node.name}\n${output}`).toBeGreaterThan(20);
        expect({ ...c, ok: 0, total: 0 }, `${node.name}: ${JSON.stringify([k.errorSamples, n.errorSamples])}\n${output}`).toEqual({ ok: 0, non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0, total: 0 });
      }
      process.kill(second, 'SIGTERM');
      await waitFor(`${node.name}: pid ${second} to stop on SIGTERM`, () => !alive(second), 10_000);
    }
  }, 120_000);
});

describe('TypeScript, module nodenext: .mts and .cts', () => {
  let dir = '';
  beforeAll(() => {
    dir = project('nodenext', 'nodenext', {}, [`@types/node@${TYPES_NODE}`]);
  }, 120_000);

  it('type-checks with the published types (skipLibCheck false; the events are typed, the seams absent)', () => {
    run(process.execPath, [TSC, '-p', '.'], dir);
    expect(existsSync(path.join(dir, 'out/main.mjs'))).toBe(true);
    // A .cts compiles its imports to require(): what fails at run time when the package cannot be required.
    expect(readFileSync(path.join(dir, 'out/main.cjs'), 'utf8')).toMatch(/require\("sd-handoff\/auto"\)/);
  }, 90_000);

  for (const program of ['out/main.mjs', 'out/main.cjs']) {
    it(`${program} runs on Node 20, 22 and 24`, () => {
      for (const node of NODES) expectWorks(node.bin, program, dir);
    }, 60_000);
  }
});

describe('TypeScript, moduleResolution bundler (module preserve)', () => {
  let dir = '';
  beforeAll(() => {
    dir = project('bundler', 'bundler', { type: 'module' }, [`@types/node@${TYPES_NODE}`]);
  }, 120_000);

  it('type-checks with the published types (skipLibCheck false)', () => {
    run(process.execPath, [TSC, '-p', '.'], dir);
    expect(existsSync(path.join(dir, 'out/main.js'))).toBe(true);
  }, 90_000);

  it('out/main.js runs on Node 20, 22 and 24', () => {
    for (const node of NODES) expectWorks(node.bin, 'out/main.js', dir);
  }, 60_000);
});
