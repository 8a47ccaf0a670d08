/**
 * `npm run demo -- --systemd`: the demo against hello-http run by real systemd (its own lab container of the suite,
 * upgraded by `systemctl reload`), as a user runs it: exit 0 only when no request failed.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import type { DemoReport } from '../../bench/demo.js';
import { describeEachSuite, labTarget, scaled } from './lab/index.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

function runDemo(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/demo.ts', ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
  return new Promise((resolve) => child.on('close', (status) => (clearTimeout(timer), resolve({ status, stdout, stderr }))));
}

describeEachSuite('demo --systemd', (c, suite) => {
  // The demo boots a container of its own: once, on the suite newcomers meet first, is enough to show it works.
  // In host mode (a VM, SDH_LAB_TARGET=host) there is no container lab to boot it in: skipped there.
  it.runIf(suite === 'bookworm' && labTarget() === 'container')('2 upgrades by systemctl reload under load: exit 0, 0 failed requests, a new MainPID each time', async () => {
    void c;
    const r = await runDemo(['--systemd', '--upgrades', '2', '--interval', '1', '--json'], { SDH_DEMO_SUITE: suite }, scaled(150_000));
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as DemoReport;
    expect(report.ok).toBe(true);
    expect(report.target).toBe('systemd');
    expect(Object.values(report.modes).every((m) => m.failed === 0 && m.counts.ok > 50)).toBe(true);
    expect(new Set([report.pids.initial, ...report.pids.upgrades]).size).toBe(3);
    expect(r.stdout).toContain(`under ${suite}`);
  }, scaled(180_000));
});
