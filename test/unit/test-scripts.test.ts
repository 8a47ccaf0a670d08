/**
 * The scripts behind `npm test` and `.ci/run`: which runs happen under which Node, what the closing summary counts,
 * and what ensure-tools does on a machine without the lab's packages.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

// @ts-expect-error -- plain ESM scripts (run by node before anything is compiled), no type declarations
import { TOOLS, isDebianLike, parseOsRelease, plan } from '../../scripts/ensure-tools.mjs';
// @ts-expect-error -- as above
import { MANIFEST } from '../../scripts/summary.mjs';
// @ts-expect-error -- as above
import { RUNS, selectRuns, splitCovered, vitestCommand } from '../../scripts/test.mjs';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SUMMARY = path.join(ROOT, 'scripts/summary.mjs');

interface Assertion {
  fullName: string;
  status: 'passed' | 'failed' | 'skipped';
}
/** A vitest JSON report with one file per entry of `files`. */
function report(files: Record<string, Assertion[] | 'broken'>) {
  const all = Object.values(files).flatMap((a) => (a === 'broken' ? [] : a));
  const count = (s: string) => all.filter((a) => a.status === s).length;
  return {
    numPassedTests: count('passed'),
    numFailedTests: count('failed'),
    numPendingTests: count('skipped'),
    numTodoTests: 0,
    testResults: Object.entries(files).map(([name, a]) =>
      a === 'broken'
        ? { name, status: 'failed', message: 'SyntaxError: Unexpected token\n at x', assertionResults: [] }
        : { name, status: a.some((x) => x.status === 'failed') ? 'failed' : 'passed', message: '', assertionResults: a },
    ),
  };
}
const ok = (n: number, prefix = 't'): Assertion[] => Array.from({ length: n }, (_, i) => ({ fullName: `${prefix} ${i}`, status: 'passed' }));

describe('scripts/summary.mjs: the closing line of npm test and .ci/run', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sdh-summary-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const summary = (cwd: string, args: string[] = []) => {
    const r = spawnSync(process.execPath, [SUMMARY, ...args], { cwd, encoding: 'utf8' });
    return { lines: r.stdout.trimEnd().split('\n'), status: r.status };
  };
  const world = (name: string, runs: Array<{ label: string; report: string; wallMs?: number; status?: number; body?: object }>) => {
    const cwd = path.join(dir, name);
    rmSync(cwd, { recursive: true, force: true });
    mkdirSync(cwd);
    for (const r of runs) if (r.body) writeFileSync(path.join(cwd, r.report), JSON.stringify(r.body));
    writeFileSync(path.join(cwd, MANIFEST), JSON.stringify({ runs: runs.map(({ body: _, ...r }) => ({ status: 0, ...r })) }));
    return cwd;
  };

  it('adds up every run of the manifest, a line per run with its Node and wall time, then the plain total', () => {
    const cwd = world('green', [
      { label: 'node 20.20.2 · unit, native, integration', report: 'test-results.json', wallMs: 600_000, body: report({ a: ok(5), b: [{ fullName: 'lab x', status: 'skipped' }] }) },
      { label: 'node 24.22.3 · unit, native', report: 'test-results.node24.json', wallMs: 74_000, body: report({ a: ok(4) }) },
    ]);
    expect(summary(cwd)).toEqual({
      lines: ['node 20.20.2 · unit, native, integration: 5 passed, 0 failed, 1 skipped (600.0 s)', 'node 24.22.3 · unit, native: 4 passed, 0 failed (74.0 s)', '9 passed, 0 failed, 1 skipped'],
      status: 0,
    });
  });

  it('names the Node of every failed test, counts a file that did not load, and a run without a report', () => {
    const cwd = world('red', [
      { label: 'node 20.20.2 · unit', report: 'test-results.json', body: report({ '/r/test/unit/a.test.ts': ok(3) }) },
      {
        label: 'node 22.23.5 · unit, native',
        report: 'test-results.node22.json',
        body: report({ '/r/test/native/b.test.ts': [...ok(2), { fullName: 'drains on SIGTERM', status: 'failed' }], '/r/test/native/c.test.ts': 'broken' }),
      },
      { label: 'node 24.22.3 · unit, native', report: 'test-results.node24.json' },
    ]);
    const { lines, status } = summary(cwd);
    expect(status).toBe(1);
    expect(lines).toContain('node 22.23.5 · unit, native: 2 passed, 2 failed');
    expect(lines).toContain('  FAIL [node 22.23.5 · unit, native] /r/test/native/b.test.ts: drains on SIGTERM');
    expect(lines).toContain('  FAIL [node 22.23.5 · unit, native] /r/test/native/c.test.ts: did not run (SyntaxError: Unexpected token)');
    expect(lines).toContain('node 24.22.3 · unit, native: 0 passed, 1 failed');
    expect(lines.find((l) => l.includes('[node 24.22.3 · unit, native] no test report at'))).toContain('test-results.node24.json');
    expect(lines.at(-1)).toBe('5 passed, 3 failed');
  });

  it('counts a run that exited non-zero with every test passed (its global teardown failed) as a failure', () => {
    const cwd = world('teardown', [
      { label: 'node 20.20.2 · unit', report: 'test-results.json', body: report({ a: ok(3) }) },
      { label: 'node 24.22.3 · lab', report: 'test-results.lab-node24.json', status: 1, body: report({ b: ok(2) }) },
    ]);
    const { lines, status } = summary(cwd);
    expect(status).toBe(1);
    expect(lines).toContain('node 24.22.3 · lab: 2 passed, 1 failed');
    expect(lines.some((l) => l.startsWith('  FAIL [node 24.22.3 · lab] vitest exited 1 with no failed test in'))).toBe(true);
    expect(lines.at(-1)).toBe('5 passed, 1 failed');
  });

  it('counts the reports it is given (the VM run) and fails a run that executed nothing', () => {
    const cwd = world('files', []);
    writeFileSync(path.join(cwd, 'vm.json'), JSON.stringify(report({ a: ok(2) })));
    writeFileSync(path.join(cwd, 'empty.json'), JSON.stringify(report({})));
    expect(summary(cwd, ['vm.json'])).toEqual({ lines: ['2 passed, 0 failed'], status: 0 });
    expect(summary(cwd, ['empty.json'])).toEqual({ lines: ['0 passed, 0 failed'], status: 1 });
    rmSync(path.join(cwd, MANIFEST));
    expect(summary(cwd).lines.at(-1)).toBe('0 passed, 1 failed'); // no manifest, no test-results.json
  });
});

describe('scripts/test.mjs: the runs of npm test', () => {
  const ids = (runs: Array<{ id: string }>) => runs.map((r) => r.id);

  it('runs everything on the host Node, unit and native on Node 22 and 24, and the lab files on Node 24', () => {
    expect(ids(selectRuns({}))).toEqual(['main', 'node22', 'node24', 'lab-node24']);
    // `npm test -- some.test.ts`: the lab run's files are fixed, so a filtered run leaves it out.
    expect(ids(selectRuns({}, true))).toEqual(['main', 'node22', 'node24']);
    expect(ids(selectRuns({ SDH_TEST_RUNS: 'lab-node24, node24' }, true))).toEqual(['node24', 'lab-node24']);
    // On a host already running Node 24, its extra runs would repeat the main run.
    expect(splitCovered(RUNS, 24).map(ids)).toEqual([['main', 'node22'], ['node24', 'lab-node24']]);
    expect(splitCovered(RUNS, 20).map(ids)).toEqual([['main', 'node22', 'node24', 'lab-node24'], []]);
    expect(splitCovered(selectRuns({ SDH_TEST_RUNS: 'node24' }), 24).map(ids)).toEqual([['node24'], []]);
    expect(() => selectRuns({ SDH_TEST_RUNS: 'node23' })).toThrow('SDH_TEST_RUNS="node23" names unknown run(s) node23; known: main, node22, node24, lab-node24');
  });

  it('gives each run its own report, its Node first in PATH and in the project names; the lab run binds that Node', () => {
    const reports = RUNS.map((r: { report: string }) => r.report);
    expect(new Set(reports).size).toBe(RUNS.length);
    const lab = RUNS.find((r: { id: string }) => r.id === 'lab-node24');
    const node = '/cache/x64-24/bin/node';
    const c = vitestCommand(lab, node, ['-t', 'x'], { PATH: '/usr/bin' }, '/npm/node-gyp.js');
    expect(c.cmd).toBe(node);
    expect(c.args).toEqual(expect.arrayContaining(['--outputFile.json=test-results.lab-node24.json', 'test/integration/upgrader.test.ts', '-t', 'x']));
    expect(c.env).toMatchObject({ PATH: '/cache/x64-24/bin:/usr/bin', SDH_TEST_NODE_LABEL: '1', SDH_LAB_NODE: node, SDH_LAB_SUITES: 'bookworm' });
    // The registry's Node ships no npm: install scripts run under it get the host npm's node-gyp, as npm would pass it.
    expect(c.env.npm_config_node_gyp).toBe('/npm/node-gyp.js');
    const unit = vitestCommand(RUNS[1], node, [], { PATH: '/usr/bin', SDH_LAB_NODE: '/mine' }, '/npm/node-gyp.js');
    expect(unit.env.SDH_LAB_NODE).toBe('/mine');
    expect(vitestCommand(RUNS[0], process.execPath, [], { PATH: '/usr/bin' }, '/npm/node-gyp.js').env.npm_config_node_gyp).toBeUndefined();
  });
});

describe('vitest.config.ts: project names under npm test', () => {
  const list = (args: string[], env: NodeJS.ProcessEnv) =>
    spawnSync(process.execPath, [path.join(ROOT, 'node_modules/vitest/vitest.mjs'), 'list', ...args, 'test/unit/lab-time.test.ts'], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      encoding: 'utf8',
    }).stdout.trim().split('\n');

  it("carry the Node version in npm test's runs, which still select them, and stay plain for vitest --project unit", () => {
    const labelled = list(RUNS[1].args, { SDH_TEST_NODE_LABEL: '1' });
    expect(labelled.length).toBeGreaterThan(1);
    expect(labelled.every((l) => l.startsWith(`[unit · node ${process.versions.node}] test/unit/lab-time.test.ts > `))).toBe(true);
    expect(list(['--project=unit'], { SDH_TEST_NODE_LABEL: '' })[0]).toMatch(/^\[unit\] test\/unit\/lab-time\.test\.ts > /);
  });
});

describe('scripts/ensure-tools.mjs: what the lab needs from the machine', () => {
  const debian = { ID: 'debian', PRETTY_NAME: 'Debian GNU/Linux 12 (bookworm)' };
  const all = new Set<string>(TOOLS.map((t: { pkg: string }) => t.pkg));
  const without = (...pkgs: string[]) => new Set([...all].filter((p) => !pkgs.includes(p)));

  it('reads os-release and knows Debian, Ubuntu and their derivatives', () => {
    const mint = parseOsRelease('NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n');
    expect(mint).toEqual({ NAME: 'Linux Mint', ID: 'linuxmint', ID_LIKE: 'ubuntu debian' });
    expect([debian, { ID: 'ubuntu' }, mint].every(isDebianLike)).toBe(true);
    expect(isDebianLike({ ID: 'fedora', ID_LIKE: 'rhel' })).toBe(false);
  });

  it('as root on Debian installs exactly the missing packages, with one apt-get update', () => {
    expect(plan({ osRelease: debian, uid: 0, installed: all }).action).toBe('none');
    const p = plan({ osRelease: debian, uid: 0, installed: without('debootstrap', 'tini') });
    expect(p.action).toBe('install');
    expect(p.command).toBe('apt-get update && apt-get install -y --no-install-recommends debootstrap tini');
  });

  it('elsewhere only says what is missing and how to get it', () => {
    const user = plan({ osRelease: debian, uid: 1000, installed: without('systemd-container') });
    expect(user).toMatchObject({ action: 'report', why: 'not root', command: "sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends systemd-container'" });
    const fedora = plan({ osRelease: { ID: 'fedora', PRETTY_NAME: 'Fedora Linux 41' }, uid: 0, hasCmd: (c: string) => c !== 'tini' });
    expect(fedora).toMatchObject({ action: 'report', why: 'Fedora Linux 41 is not Debian or Ubuntu' });
    expect(fedora.missing.map((t: { pkg: string }) => t.pkg)).toEqual(['tini']);
  });
});
