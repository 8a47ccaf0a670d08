#!/usr/bin/env node
// `npm test`: every test, on every Node the package supports.
//
//  0. scripts/ensure-tools.mjs: installs what the real-systemd lab and the cross-arch tests need (Debian/Ubuntu as
//     root), or says what is missing and how to install it.
//  1. compiles the package (process and lab tests run the built dist/, as a user's service would);
//  2. the runs, one after another (they would share 2 cores otherwise), each writing its own vitest JSON report:
//       main        unit, native, integration under the Node running this script (the host's, 20)   test-results.json
//       node22      unit, native under official Node 22                                           test-results.node22.json
//       node24      unit, native under official Node 24                                           test-results.node24.json
//       lab-node24  the foundation and upgrader lab files on bookworm, with Node 24 in the container
//                                                                                                  test-results.lab-node24.json
//     Node 22/24 are the npm registry's official binaries, cached by scripts/node-binaries.mjs. Each run's project
//     names carry its Node version (vitest.config.ts, SDH_TEST_NODE_LABEL), the lab run's test names too
//     (SDH_LAB_NODE), so a failure says which Node it was on.
//  3. test-results.runs.json lists the runs (label, report, wall time, exit status); scripts/summary.mjs adds the
//     reports up from it. A run that could not start (no Node 24 download) or died before writing its report
//     counts as a failure there. npm test ends with the same per-run lines, prefixed `[npm test]`.
//
// On a host already on Node 22 or 24, that Node's extra runs are left out (said in the output): the main run did them.
//
// Measured here (2 shared cores, warm caches, load 1-6): node22 238 s, node24 240-249 s, lab-node24 43-60 s, so the
// extra runs add about 9 minutes to the main run's 10; under load 12 from other jobs node22 took 404 s and node24
// 464 s. Cold: official Node 22 and 24 fetched from the registry in 24 s and 13 s (185 MB each in the cache);
// ensure-tools' apt-get install in a fresh bookworm 46 s.
//
// SDH_TEST_RUNS=main,node24 picks runs (default all, in the order above); extra arguments go to vitest in every run
// (`npm test -- test/unit/cli.test.ts`), and then lab-node24, whose files are fixed, runs only when SDH_TEST_RUNS
// names it. Exits non-zero when any run failed.
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { ensureTools } from './ensure-tools.mjs';
import { ensureNode } from './node-binaries.mjs';
import { MANIFEST, summarize } from './summary.mjs';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** Every run `npm test` knows, in order. `node` is a major to fetch, or `host` for the node running this script. */
export const RUNS = [
  { id: 'main', node: 'host', what: 'unit, native, integration', args: [], report: 'test-results.json' },
  { id: 'node22', node: 22, what: 'unit, native', args: ['--project=unit*', '--project=native*'], report: 'test-results.node22.json' },
  { id: 'node24', node: 24, what: 'unit, native', args: ['--project=unit*', '--project=native*'], report: 'test-results.node24.json' },
  {
    id: 'lab-node24',
    node: 24,
    what: 'lab foundation + upgrader on bookworm',
    args: ['--project=integration*', 'test/integration/foundation.test.ts', 'test/integration/upgrader.test.ts'],
    env: { SDH_LAB_SUITES: 'bookworm' },
    labNode: true,
    report: 'test-results.lab-node24.json',
  },
];

/**
 * The runs SDH_TEST_RUNS selects (default all; with `filtered` vitest arguments, all but lab-node24); an unknown id
 * stops `npm test`, naming the variable and the value.
 */
export function selectRuns(env = process.env, filtered = false) {
  const raw = env.SDH_TEST_RUNS?.trim();
  if (!raw) return filtered ? RUNS.filter((r) => !r.labNode) : RUNS;
  const ids = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = ids.filter((id) => !RUNS.some((r) => r.id === id));
  if (bad.length > 0 || ids.length === 0) {
    throw new Error(`SDH_TEST_RUNS=${JSON.stringify(env.SDH_TEST_RUNS)} names unknown run(s) ${bad.join(', ')}; known: ${RUNS.map((r) => r.id).join(', ')}`);
  }
  return RUNS.filter((r) => ids.includes(r.id));
}

/**
 * node-gyp of the npm that came with the host's node. The registry's Node packages ship no npm, so a test that runs
 * an install script directly under them finds no node-gyp next to their node; npm would set npm_config_node_gyp to
 * its own when it runs one, and so does npm test.
 */
export function hostNodeGyp(execPath = process.execPath) {
  const prefix = path.dirname(path.dirname(realpathSync(execPath)));
  const gyp = path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
  return existsSync(gyp) ? gyp : undefined;
}

/**
 * The runs the main run already covers: with the host on Node 22 or 24, that Node's extra runs repeat what the main
 * run did with it (its lab run included). Returns [kept, covered].
 */
export function splitCovered(runs, hostMajor = Number(process.versions.node.split('.')[0])) {
  const main = runs.some((r) => r.node === 'host');
  const covered = runs.filter((r) => main && r.node === hostMajor);
  return [runs.filter((r) => !covered.includes(r)), covered];
}

/** The vitest command line and environment of `run` under the node at `nodePath`. */
export function vitestCommand(run, nodePath, extraArgs = [], env = process.env, nodeGyp = hostNodeGyp()) {
  const args = [
    path.join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run',
    '--reporter=default', '--reporter=json', `--outputFile.json=${run.report}`,
    ...run.args, ...extraArgs,
  ];
  // PATH first: a test or fixture that runs `node` by name gets this run's node, not the host's.
  const runEnv = { ...env, ...run.env, PATH: `${path.dirname(nodePath)}${path.delimiter}${env.PATH ?? ''}`, SDH_TEST_NODE_LABEL: '1' };
  if (run.labNode) runEnv.SDH_LAB_NODE = nodePath;
  if (run.node !== 'host' && nodeGyp && !env.npm_config_node_gyp) runEnv.npm_config_node_gyp = nodeGyp;
  return { cmd: nodePath, args, env: runEnv };
}

function nodeVersion(nodePath) {
  if (nodePath === process.execPath) return process.versions.node;
  const r = spawnSync(nodePath, ['--version'], { encoding: 'utf8' });
  return (r.stdout ?? '').trim().replace(/^v/, '') || '?';
}

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

/** Runs one entry of RUNS; returns its manifest row. */
function execute(run, extraArgs, log) {
  const t0 = Date.now();
  let nodePath;
  try {
    nodePath = run.node === 'host' ? process.execPath : ensureNode(run.node);
  } catch (err) {
    const error = `${run.id}: no Node ${run.node}: ${err.message}`;
    log(error);
    return { id: run.id, label: `node ${run.node} · ${run.what}`, report: run.report, status: 1, wallMs: Date.now() - t0, error };
  }
  const version = nodeVersion(nodePath);
  const label = `node ${version} · ${run.what}`;
  const fetchMs = Date.now() - t0;
  log(`${label}: starting (${nodePath}${fetchMs > 1000 ? `, fetched in ${seconds(fetchMs)}` : ''})`);
  const { cmd, args, env } = vitestCommand(run, nodePath, extraArgs);
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', env });
  const status = r.status ?? 1;
  const row = { id: run.id, label, node: version, nodePath, report: run.report, status, wallMs: Date.now() - t0 };
  if (r.error || r.signal) row.error = `${label}: vitest ${r.error ? `did not start: ${r.error.message}` : `killed by ${r.signal}`}`;
  log(`${label}: exit ${status} in ${seconds(row.wallMs)}`);
  return row;
}

function main() {
  const t0 = Date.now();
  const log = (line) => console.log(`[npm test] ${line}`);
  const extraArgs = process.argv.slice(2);
  let runs;
  try {
    runs = selectRuns(process.env, extraArgs.length > 0);
  } catch (err) {
    console.error(`npm test: ${err.message}`);
    process.exit(2);
  }
  const [kept, covered] = splitCovered(runs);
  if (covered.length > 0) log(`not repeated, the main run is on Node ${process.versions.node}: ${covered.map((r) => r.id).join(', ')}`);
  runs = kept;
  try {
    ensureTools({ log });
  } catch (err) {
    // The tests that need a tool report it themselves; a broken check must not stop the rest.
    log(`ensure-tools failed: ${err.message}`);
  }
  for (const f of [MANIFEST, ...RUNS.map((r) => r.report)]) rmSync(path.join(ROOT, f), { force: true });
  const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);
  const setupMs = Date.now() - t0;
  // Written before the first run, so a run that never finishes still counts (as a missing report) in the summary.
  const rows = runs.map((r) => ({ id: r.id, label: `node ${r.node === 'host' ? process.versions.node : r.node} · ${r.what}`, report: r.report, status: null }));
  const save = () => writeFileSync(path.join(ROOT, MANIFEST), `${JSON.stringify({ runs: rows }, null, 2)}\n`);
  save();
  runs.forEach((run, i) => {
    log(`run ${i + 1}/${runs.length}: ${run.id}`);
    rows[i] = execute(run, extraArgs, log);
    save();
  });
  // Prefixed, so the plain closing line stays summary.mjs's (.ci/run prints it after npm test).
  const { lines } = summarize(rows.map((r) => ({ ...r, report: path.join(ROOT, r.report) })));
  for (const line of lines.slice(0, -1)) log(line);
  log(`total: ${lines.at(-1)}`);
  log(`wall time: tools + build ${seconds(setupMs)}, ${rows.map((r) => `${r.id} ${seconds(r.wallMs)}`).join(', ')}; all of npm test ${seconds(Date.now() - t0)}`);
  process.exit(rows.every((r) => r.status === 0 && !r.error) ? 0 : 1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) main();
