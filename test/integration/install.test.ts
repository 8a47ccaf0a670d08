/**
 * The package as users get it (issue 14, item 4): `npm pack` of the repository, the tarball's contents checked, then
 * installed in a bookworm minbase container that has no compiler and no network, into fresh ESM, CommonJS and
 * TypeScript projects, with and without install scripts; each loads the addon for real. Last, examples/hello-http
 * runs from the installed package as a real unit, ExecReload= being the package's own `sd-handoff` bin, and is
 * reloaded under load.
 *
 * The container is one of this file's own (bootContainer), with the host's npm bound where an official Node
 * install keeps it; its npm cache is filled on the host (.lab/install/npm-cache, kept between runs) and copied in.
 * Stopping the container removes every unit and file the test made in it; the host's scratch dir is removed too.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { exampleUnit, PIDFILE, reloadOk, SOCKET, UNIT } from './hello.js';
import { PROJECT_ROOT } from './lab/config.js';
import { bootContainer, type Container, EXPECTED_SYSTEMD, labState, pause, scaled, suiteState } from './lab/index.js';
import { pidAlive } from './lab/run.js';
import { failures, NO_FAILURES, startLoad } from './load.js';
import { fillCache, type HostNpm, hostNpm, officialNodes, registrySpecs, typescriptSpecs } from './install/offline.js';
import { type Packed, packRepository, sizeLine, tarballProblems } from './install/pack.js';
import { CACHE, installProject, NPM_DIR, runProbe, tail, VARIANTS, whyNoAddon, type Variant, variantName, WORK } from './install/projects.js';
import { installedUnit, mappedAddons, placeServer } from './install/service.js';

const SCRATCH = path.join(PROJECT_ROOT, '.lab', 'install');
const RUN_DIR = path.join(SCRATCH, `run-${process.pid}`);
const HOST_CACHE = path.join(SCRATCH, 'npm-cache');
/** What the owners of the packaging fix: said in every failure that is the package's, not the test's. */
const PACKAGE_PROBLEM = 'package problem (packaging: prebuilds, exports map, install script, files)';

/** Scratch dirs of runs that were killed before their afterAll (their pid is gone). */
function sweepDeadRuns(): void {
  for (const name of existsSync(SCRATCH) ? readdirSync(SCRATCH) : []) {
    const pid = Number(/^run-(\d+)$/.exec(name)?.[1]);
    if (pid && !pidAlive(pid)) rmSync(path.join(SCRATCH, name), { recursive: true, force: true });
  }
}

let packing: Promise<Packed> | undefined;
/** One `npm pack` per run, shared by both describes. */
function packed(): Promise<Packed> {
  packing ??= (async () => {
    sweepDeadRuns();
    rmSync(RUN_DIR, { recursive: true, force: true });
    mkdirSync(RUN_DIR, { recursive: true });
    return packRepository(RUN_DIR);
  })();
  return packing;
}

afterAll(() => {
  rmSync(RUN_DIR, { recursive: true, force: true });
});

describe('install: the tarball of npm pack', () => {
  it('ships the prebuilt addons (linux-x64, linux-arm64), units, docs, LICENSE, README, what install runs; no tests, no dangling source maps', async () => {
    const p = await packed();
    console.log(`[install] ${sizeLine(p)}`);
    expect(tarballProblems(p), `${PACKAGE_PROBLEM}; files: ${p.files.join(' ')}`).toEqual([]);
  });
});

/** The bookworm lab, if this run has it: the install test needs a minbase container without a compiler. */
function bookworm(): { run: true } | { run: false; skip?: string; fail?: string } {
  if (labState().host) return { run: false, skip: 'needs the container lab (a bookworm minbase without a compiler); SDH_LAB_TARGET=host runs on this machine' };
  const s = suiteState('bookworm');
  if (s.status === 'ready') return { run: true };
  if (s.status === 'unavailable') return { run: false, skip: `${s.reason}${s.hint ? `; to run: ${s.hint}` : ''}` };
  return { run: false, fail: s.error };
}

const lab = bookworm();
const title = `install: the tarball in a container without a compiler · bookworm (systemd ${EXPECTED_SYSTEMD.bookworm})`;

if (!lab.run) {
  describe(title, () => {
    if (lab.fail) {
      it('container boots', () => {
        throw new Error(lab.fail);
      });
    } else {
      it.skip(`skipped: ${lab.skip}`, () => {});
    }
  });
} else {
  describe(title, () => {
    let c: Container | undefined;
    let npmInfo: HostNpm;
    let tgz = '';
    let version = '';
    const installed = new Map<Variant, boolean>();
    /** The node binaries in the container the programs run on: the lab's, then official 22 and 24 (one per major). */
    let nodes: string[] = [];

    beforeAll(async () => {
      const p = await packed();
      npmInfo = await hostNpm();
      await fillCache(HOST_CACHE, path.join(RUN_DIR, 'fill'), [...registrySpecs(p.manifest), ...typescriptSpecs()]);
      const official = await officialNodes([22, 24]);
      c = await bootContainer('bookworm', {
        nspawnArgs: [`--bind-ro=${npmInfo.dir}:${NPM_DIR}`, ...official.map((n) => `--bind-ro=${n.dir}:${n.mount}`)],
      });
      const majors = new Set<string>();
      for (const bin of ['/usr/local/bin/node', ...official.map((n) => `${n.mount}/bin/node`)]) {
        const major = /^v(\d+)\./.exec((await c.exec([bin, '--version'], { check: true })).stdout)?.[1] ?? bin;
        if (!majors.has(major)) nodes.push(bin);
        majors.add(major);
      }
      tgz = `${WORK}/${path.basename(p.tgz)}`;
      version = p.manifest.version;
      const fromRepo = (f: string) => `/project/${path.relative(PROJECT_ROOT, f)}`;
      const setup = 'mkdir -p "$1/home"; cp -a "$2" "$3"; cp "$4" "$5"; ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm';
      await c.exec(['/bin/sh', '-ec', setup, 'sh', WORK, fromRepo(HOST_CACHE), CACHE, fromRepo(p.tgz), tgz], { check: true, timeoutMs: 120_000 });
    });

    afterAll(async () => {
      await c?.stop();
    });

    it('has no compiler: cc, gcc, g++, c++ and make are absent', async () => {
      const r = await c!.sh('for t in cc gcc g++ c++ make; do command -v "$t" || true; done');
      expect(r.stdout.trim().split('\n').filter(Boolean)).toEqual([]);
      const versions = await c!.sh('node --version; npm --version');
      console.log(`[install] in the container: node ${versions.stdout.trim().split('\n').join(', npm ')} (host npm ${npmInfo.version})`);
    });

    for (const v of VARIANTS) {
      it(`${variantName(v)}: installs offline; on the lab's node and official Node 22 and 24 it loads the prebuilt addon and notify.ready() is false outside systemd`, async () => {
        const t0 = Date.now();
        const r = await installProject(c!, v, tgz, typescriptSpecs(), npmInfo.registry);
        expect(r.code, `npm install in ${v.dir} failed (${PACKAGE_PROBLEM})\n${tail(r)}`).toBe(0);
        const installMs = Date.now() - t0;
        // With a prebuild that loads, the install script has nothing to compile: no compiler error reaches the user.
        expect(`${r.stdout}\n${r.stderr}`, `npm install printed compiler errors (${PACKAGE_PROBLEM})\n${tail(r)}`).not.toMatch(/gyp ERR!|make: not found|g\+\+: not found/);
        if (v.kind === 'ts') {
          const tsc = await c!.exec(['node_modules/.bin/tsc', '-p', '.'], { cwd: v.dir, timeoutMs: 120_000 });
          expect(tsc.code, `tsc (module nodenext) in ${v.dir} failed (${PACKAGE_PROBLEM}: the published types)\n${tail(tsc)}`).toBe(0);
        }
        const ran: string[] = [];
        for (const [program, node] of v.programs.flatMap((p) => nodes.map((n) => [p, n] as const))) {
          const { result, report } = await runProbe(c!, v, program, node);
          expect(report, `node ${program} in ${v.dir} failed (${PACKAGE_PROBLEM})\n${tail(result)}`).toBeDefined();
          const why = report?.native === false ? `the addon did not load: ${await whyNoAddon(c!, v.dir)}` : '';
          expect(report, why).toMatchObject({ native: true, ready: false, entry: expect.stringContaining(`${v.dir}/node_modules/sd-handoff/`) });
          expect(report!.subpaths).toEqual([expect.stringContaining(`${v.dir}/node_modules/sd-handoff/dist/`), expect.stringContaining(`${v.dir}/node_modules/sd-handoff/dist/`)]);
          // Without a compiler nothing could have been built: the addon must be the shipped prebuild.
          expect(report!.addons).toEqual([expect.stringMatching(new RegExp(`^${v.dir}/node_modules/sd-handoff/prebuilds/linux-x64/[^/]+\\.node$`))]);
          ran.push(`${program} on ${report!.node}`);
        }
        const bin = await c!.exec([`${v.dir}/node_modules/.bin/sd-handoff`, '--version'], { cwd: v.dir });
        expect(bin.stdout.trim(), `the package's sd-handoff command in ${v.dir}\n${tail(bin)}`).toContain(version);
        console.log(`[install] ${variantName(v)}: npm install ${installMs} ms; ran ${ran.join(', ')}`);
        installed.set(v, true);
      });
    }

    it(`examples/hello-http from the installed package: 3 × systemctl reload under load, ExecReload= the package's sd-handoff bin: 0 failed requests`, async () => {
      const project = VARIANTS.find((v) => v.kind === 'esm' && v.scripts)!;
      expect(installed.get(project), `the ${variantName(project)} test failed; hello-http runs from that project`).toBe(true);
      const { server, shipped } = await placeServer(c!, project.dir);
      console.log(`[install] hello-http: ${shipped ? 'shipped in the package' : 'not in the tarball: server.mjs copied into the project'} (${server})`);
      await c!.installUnit(SOCKET, exampleUnit(SOCKET));
      await c!.installUnit(UNIT, installedUnit(project.dir, server));
      await c!.systemctl(['start', SOCKET, UNIT], { check: true });
      const state = async () => {
        const p = await c!.show(UNIT, ['MainPID', 'ActiveState']);
        const pid = Number(p.MainPID);
        return { pid, active: p.ActiveState, pidFile: Number((await c!.exec(['cat', PIDFILE])).stdout.trim()), addons: await mappedAddons(c!, pid) };
      };
      const prebuild = expect.stringMatching(new RegExp(`^${project.dir}/node_modules/sd-handoff/prebuilds/linux-x64/[^/]+\\.node$`));
      const exec = await c!.show(UNIT, ['ExecStart', 'ExecReload']);
      expect(exec.ExecStart).toContain(`argv[]=/usr/local/bin/node ${server} `);
      expect(exec.ExecReload).toContain(`argv[]=${project.dir}/node_modules/.bin/sd-handoff upgrade`);
      const first = await state();
      expect(first).toMatchObject({ active: 'active', pidFile: first.pid, addons: [prebuild] });
      const ka = await startLoad(c!, 'keepalive', 8, ['--slow-path', '/slow', '--slow-connections', '2']);
      const nc = await startLoad(c!, 'newconn', 4);
      await pause(1000);
      const pids = [first.pid];
      for (let i = 0; i < 3; i++) {
        await reloadOk(c!, UNIT, `reload ${i + 1}`);
        const s = await state();
        expect(s).toMatchObject({ active: 'active', pidFile: s.pid, addons: [prebuild] });
        expect(pids).not.toContain(s.pid);
        pids.push(s.pid);
      }
      await pause(500);
      const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
      console.log(`[install] hello-http: pids ${pids.join(' -> ')}; keep-alive ok ${k.counts.ok}, new-connection ok ${n.counts.ok}, slow ok ${k.slow?.counts.ok ?? 0}`);
      expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NO_FAILURES);
      expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NO_FAILURES);
      expect(k.counts.ok).toBeGreaterThan(100);
      expect(n.counts.ok).toBeGreaterThan(50);
      expect(k.slow?.counts.ok).toBeGreaterThan(0);
      expect(failures(k.slow!.counts)).toEqual(NO_FAILURES);
    }, scaled(180_000));
  });
}
