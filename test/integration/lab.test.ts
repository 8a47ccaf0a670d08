// Smoke test of the lab itself: each suite's container really is that suite's systemd as PID 1, with node, the
// project read-only, no network but lo, working transient units, and failures that `systemctl show` reports.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { labHierarchies } from './lab/cgroup.js';
import { EXPECTED_SYSTEMD, SUITES, bootContainer, describeEachSuite, suiteState } from './lab/index.js';

describeEachSuite('lab', (c, suite) => {
  it(`runs systemd ${EXPECTED_SYSTEMD[suite]} as PID 1`, async () => {
    const version = await c.exec(['systemctl', '--version'], { check: true });
    expect(version.stdout).toMatch(new RegExp(`^systemd ${EXPECTED_SYSTEMD[suite]} `));
    expect(c.systemdVersion).toBe(EXPECTED_SYSTEMD[suite]);
    const exe = await c.exec(['readlink', '/proc/1/exe'], { check: true });
    expect(exe.stdout.trim()).toMatch(/^\/(usr\/)?lib\/systemd\/systemd$/);
    expect(['running', 'degraded']).toContain(c.state);
    expect(c.failedUnits).toEqual([]);
  });

  it('passes no host environment into commands', async () => {
    const env = await c.exec(['env'], { env: { SDH_SMOKE: '1' }, check: true });
    expect(env.stdout.trim().split('\n').sort()).toEqual([expect.stringMatching(/^PATH=/), 'SDH_SMOKE=1']);
  });

  it("runs the host's node", async () => {
    const r = await c.node(['-e', 'console.log(process.version, process.pid > 1)'], { check: true });
    expect(r.stdout.trim()).toBe(`${process.version} true`);
  });

  it('mounts the project read-only at /project', async () => {
    const pkg = JSON.parse(await c.readFile('/project/package.json')) as { name: string };
    expect(pkg.name).toBe('sd-handoff');
    const w = await c.exec(['touch', '/project/.sdh-lab-write-test']);
    expect(w.code).not.toBe(0);
    expect(w.stderr).toMatch(/Read-only file system/);
  });

  it('has a private network: lo only', async () => {
    const r = await c.exec(['ip', '-o', 'link', 'show'], { check: true });
    const names = r.stdout.trim().split('\n').map((l) => l.split(':')[1]?.trim());
    expect(names).toEqual(['lo']);
  });

  it('runs a transient unit to completion', async () => {
    const unit = `sdh-smoke-true-${Date.now()}`;
    const r = await c.exec(['systemd-run', `--unit=${unit}`, '--wait', '-p', 'Type=oneshot', '/bin/true']);
    expect(r.code, r.stderr).toBe(0);
  });

  it('reports a unit whose ExecStart fails as failed', async () => {
    const unit = 'sdh-smoke-fail.service';
    await c.installUnit(unit, '[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo about to fail; exit 3"\n');
    try {
      const start = await c.systemctl(['start', unit]);
      expect(start.code).not.toBe(0);
      const props = await c.show(unit, ['ActiveState', 'Result', 'ExecMainStatus']);
      expect(props).toEqual({ ActiveState: 'failed', Result: 'exit-code', ExecMainStatus: '3' });
      const journal = await c.waitFor(async () => {
        const entries = await c.journal(unit);
        return entries.some((e) => e.MESSAGE === 'about to fail') && entries;
      }, 10_000, { what: `"about to fail" in the journal of ${unit}` });
      expect(journal.find((e) => e.MESSAGE === 'about to fail')?._SYSTEMD_UNIT).toBe(unit);
    } finally {
      await c.removeUnit(unit);
    }
  });

  it('kills a command that runs past its timeout, inside the container too', async () => {
    const r = await c.exec(['sleep', '1234'], { timeoutMs: 300 });
    expect(r.timedOut).toBe(true);
    await c.waitFor(async () => (await c.exec(['pgrep', '-x', 'sleep'])).code === 1, 5000, { what: 'sleep gone' });
  });
});

// A container of its own, to check that stop() leaves nothing behind: no process, cgroup or mount.
const first = SUITES.find((s) => suiteState(s).status === 'ready');
describe.skipIf(!first)('lab cleanup', () => {
  it('stop() leaves no process, cgroup or mount behind', async () => {
    const c = await bootContainer(first!);
    expect(c.systemdVersion).toBe(EXPECTED_SYSTEMD[first!]);
    const mountsBefore = readFileSync('/proc/mounts', 'utf8');
    expect((await c.exec(['true'])).code).toBe(0);
    await c.stop();
    expect(existsSync(`/proc/${c.nspawnPid}`)).toBe(false);
    expect(existsSync(`/proc/${c.pid1}`)).toBe(false);
    for (const root of labHierarchies()) expect(readdirSync(root)).not.toContain(c.machine);
    const mountsAfter = readFileSync('/proc/mounts', 'utf8');
    expect(mountsAfter).not.toContain(c.root);
    expect(mountsAfter).not.toContain(c.machine);
    expect(mountsAfter.split('\n').length).toBe(mountsBefore.split('\n').length);
    expect(readdirSync('/tmp').filter((e) => e.startsWith('nspawn-'))).toEqual([]);
    expect(existsSync(join('/run/systemd/nspawn/propagate', c.machine))).toBe(false);
  });
});
