// Smoke test of the lab in host mode (SDH_LAB_TARGET=host, inside a Vagrant VM): this machine's systemd is PID 1
// and is the one the run was meant for, node and the project are where the tests expect them, transient units run
// and failures are reported. The container lab's own smoke test is test/integration/lab.test.ts.
import { expect, it } from 'vitest';

import { HOST_NODE, HOST_PROJECT, describeEachSuite } from '../test/integration/lab/index.js';

/** The systemd major the Vagrantfile expects of this machine (SDH_VAGRANT_EXPECT_SYSTEMD), if it said. */
const expected = Number(process.env.SDH_VAGRANT_EXPECT_SYSTEMD) || undefined;

describeEachSuite('host lab', (c) => {
  it('runs systemd as PID 1, the version this VM was chosen for', async () => {
    const exe = await c.exec(['readlink', '/proc/1/exe'], { check: true });
    expect(exe.stdout.trim()).toMatch(/^\/(usr\/)?lib\/systemd\/systemd$/);
    const version = await c.exec(['systemctl', '--version'], { check: true });
    expect(version.stdout).toMatch(new RegExp(`^systemd ${c.systemdVersion} `));
    if (expected) expect(c.systemdVersion).toBe(expected);
    expect(['running', 'degraded']).toContain(c.state);
    expect(c.failedUnits).toEqual([]);
  });

  it('passes no environment of the test runner into commands', async () => {
    const env = await c.exec(['env'], { env: { SDH_SMOKE: '1' }, check: true });
    expect(env.stdout.trim().split('\n').sort()).toEqual([expect.stringMatching(/^PATH=/), 'SDH_SMOKE=1']);
  });

  it(`runs node 20 at ${HOST_NODE}, the node running the tests`, async () => {
    const r = await c.node(['-e', 'console.log(process.version)'], { check: true });
    expect(r.stdout.trim()).toBe(process.version);
    expect(process.version).toMatch(/^v20\./);
  });

  it(`has the project at ${HOST_PROJECT} with a loadable addon`, async () => {
    const pkg = JSON.parse(await c.readFile(`${HOST_PROJECT}/package.json`)) as { name: string };
    expect(pkg.name).toBe('sd-handoff');
    const r = await c.node(['-e', `require('${HOST_PROJECT}/build/Release/sd_handoff.node'); console.log('ok')`], { check: true });
    expect(r.stdout.trim()).toBe('ok');
  });

  it('runs a transient unit to completion', async () => {
    const r = await c.exec(['systemd-run', `--unit=sdh-host-true-${Date.now()}`, '--wait', '-p', 'Type=oneshot', '/bin/true']);
    expect(r.code, r.stderr).toBe(0);
  });

  it('reports a unit whose ExecStart fails as failed, with its output in the journal', async () => {
    const unit = 'sdh-host-fail.service';
    await c.installUnit(unit, '[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo about to fail; exit 3"\n');
    try {
      expect((await c.systemctl(['start', unit])).code).not.toBe(0);
      expect(await c.show(unit, ['ActiveState', 'Result', 'ExecMainStatus'])).toEqual({ ActiveState: 'failed', Result: 'exit-code', ExecMainStatus: '3' });
      const entries = await c.waitFor(async () => {
        const e = await c.journal(unit);
        return e.some((x) => x.MESSAGE === 'about to fail') && e;
      }, 20_000, { what: `"about to fail" in the journal of ${unit}` });
      expect(entries.find((e) => e.MESSAGE === 'about to fail')?._SYSTEMD_UNIT).toBe(unit);
    } finally {
      await c.removeUnit(unit);
    }
  });

  it('kills a command that runs past its timeout', async () => {
    const r = await c.exec(['sleep', '4321'], { timeoutMs: 300 });
    expect(r.timedOut).toBe(true);
    await c.waitFor(async () => (await c.exec(['pgrep', '-f', '^sleep 4321$'])).code === 1, 5000, { what: 'sleep 4321 gone' });
  });
});
