/**
 * `npm run demo` (bench/demo.ts) as a user runs it: a real process that starts hello-http, upgrades it under load
 * and must exit 0 only when no request failed, leaving no process and no temporary directory behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DemoReport } from '../../bench/demo.js';
import { alive, ROOT, waitFor } from './helpers.js';

const DEMO = path.join(ROOT, 'bench/demo.ts');

/**
 * True while `pid` runs hello-http. A zombie has exited: its parent is gone and it waits for PID 1 to reap it,
 * which some init processes (containers, sandboxes) do late or never.
 */
function runsHello(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/^\S+ \(.*\) [ZX] /.test(stat)) return false;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('hello-http/server.mjs');
  } catch {
    return false;
  }
}
const running = new Set<ChildProcess>();

function runDemo(args: string[], timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', DEMO, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // SIGTERM lets the demo end the service it started; SIGKILL only if it does not go.
  const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
  return new Promise((resolve) => {
    child.on('close', (status) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ status, stdout, stderr });
    });
  });
}

afterEach(async () => {
  for (const child of running) {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
    child.kill('SIGTERM');
    await waitFor('the demo to exit', () => !alive(child.pid!), 10_000).catch(() => child.kill('SIGKILL'));
  }
});

/** Live processes whose PIDFILE lies in `dir`: the demo's service, and no other test's. */
function servicePids(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (runsHello(Number(name)) && readFileSync(`/proc/${name}/environ`, 'utf8').split('\0').includes(`PIDFILE=${dir}/hello.pid`)) pids.push(Number(name));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return pids;
}

describe('npm run demo', () => {
  it('upgrades hello-http twice under load with 0 failed requests, then leaves nothing running', async () => {
    const r = await runDemo(['--upgrades', '2', '--interval', '1', '--connections', '4', '--json'], 35_000);
    expect(r.status, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as DemoReport;
    expect(report.ok).toBe(true);
    expect(report.failures).toEqual([]);
    for (const m of [report.modes.keepalive, report.modes.newconn]) {
      expect(m.failed, m.mode).toBe(0);
      expect(m.counts.ok, m.mode).toBe(m.counts.total);
      expect(m.counts.total, m.mode).toBeGreaterThan(100);
      // Load really ran while the upgrades did.
      expect(m.during.counts.total, m.mode).toBeGreaterThan(0);
    }
    const { initial, upgrades } = report.pids;
    expect(upgrades).toHaveLength(2);
    expect(new Set([initial, ...upgrades]).size).toBe(3);
    expect(report.upgradeMs.pidFile!.max).toBeLessThan(report.upgradeMs.oldExit!.min);
    expect(report.slow.completed).toBe(report.slow.started);
    expect(report.slow.started).toBeGreaterThan(0);
    // Old and new version overlap during an upgrade: the peak is more than one process's memory.
    expect(report.memory.peakProcesses).toBeGreaterThanOrEqual(2);
    expect(report.memory.ratio).toBeGreaterThan(1.2);
    // The table a user reads.
    expect(r.stdout).toMatch(/PASS: 2 upgrades, 0 failed requests/);
    expect(r.stdout).toContain(`pids  `);
    expect(r.stdout).toContain(`${initial} -> ${upgrades[0]} -> ${upgrades[1]}`);
    // Every process it started has been ended, and its temporary directory removed.
    for (const pid of report.pids.all) expect(runsHello(pid), `pid ${pid}`).toBe(false);
    expect(report.pids.all.length).toBeGreaterThanOrEqual(3);
    expect(report.tmpDir).toBeTruthy();
    expect(existsSync(report.tmpDir!)).toBe(false);
  }, 40_000);

  it('on Ctrl-C (SIGINT) in the middle of an upgrade ends every process it started and removes its directory', async () => {
    const result = runDemo(['--upgrades', '3', '--interval', '0', '--connections', '2'], 30_000);
    const child = [...running].at(-1)!;
    let stdout = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    const dir = await waitFor('the service to be ready', () => /PID file and control socket in (\S+)\)/.exec(stdout)?.[1], 20_000);
    // The first upgrade is done and, with --interval 0, the second starts at once.
    await waitFor('the first upgrade', () => stdout.includes('upgrade 1/3'), 20_000);
    const ours = (): number[] => servicePids(dir);
    expect(ours().length).toBeGreaterThanOrEqual(1);
    child.kill('SIGINT');
    const r = await result;
    expect(r.status).toBe(130);
    expect(r.stderr).toContain('SIGINT: ending every process it started');
    expect(ours()).toEqual([]);
    expect(existsSync(dir)).toBe(false);
  }, 40_000);

  it('rejects bad options with status 2 and a message naming the value, before starting anything', async () => {
    const cases: Array<[string[], string]> = [
      [['--upgrades', '0'], '--upgrades must be an integer in [1, 100], got "0"'],
      [['--interval', 'soon'], '--interval must be a number in [0, 60], got "soon"'],
      [['--connections', '2.5'], '--connections must be an integer in [1, 256], got "2.5"'],
      [['--ballast=-1'], '--ballast must be an integer in [0, 4096], got "-1"'],
      [['--upgrade', '3'], "Unknown option '--upgrade'"],
    ];
    const results = await Promise.all(cases.map(([args]) => runDemo(args, 15_000)));
    results.forEach((r, i) => {
      expect(r.status, cases[i]![1]).toBe(2);
      expect(r.stderr).toContain(cases[i]![1]);
      expect(r.stdout).not.toContain('ready');
    });
  }, 20_000);
});
