/**
 * The `sd-handoff` CLI against real systemd, run inside each container as an operator would run it: `reload` and
 * `status` through the real system bus (dbus-daemon in the container) on examples/hello-http with its shipped
 * units, a reload with a broken new version reported with its reason, and `units render` output that
 * `systemd-analyze verify` accepts, installed, started, serving and reloaded: for a Node.js service and, with
 * `--run`, for a Python program under `sd-handoff run` (test/fixtures/listen_http.py).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { exampleUnit, mainPid, SOCKET, UNIT } from './hello.js';
import { describeEachSuite, pause, scaled, type Container, type ExecResult } from './lab/index.js';

const CLI = '/project/dist/cli.js';
const HELLO = '/usr/local/bin/node /project/examples/hello-http/server.mjs';

async function cli(c: Container, args: string[], timeoutMs = 90_000): Promise<ExecResult & { ms: number }> {
  const t = performance.now();
  const r = await c.node([CLI, ...args], { timeoutMs });
  return { ...r, ms: Math.round(performance.now() - t) };
}

describeEachSuite('sd-handoff CLI', (c) => {
  beforeAll(async () => {
    expect((await c.systemctl(['is-active', 'dbus'])).stdout.trim()).toBe('active');
    await c.exec(['rm', '-f', '/run/sdh-cli-fail']);
    await c.installUnit(SOCKET, exampleUnit(SOCKET));
    await c.installUnit(UNIT, exampleUnit(UNIT));
    await c.writeFile(`/etc/systemd/system/${UNIT}.d/test.conf`, `[Service]\nEnvironment=HELLO_FAIL_FILE=/run/sdh-cli-fail UPGRADE_TIMEOUT_MS=${scaled(5000)}\n`);
    await c.systemctl(['daemon-reload'], { check: true });
    await c.systemctl(['start', SOCKET, UNIT], { check: true });
  });
  afterAll(async () => {
    await c.exec(['rm', '-f', '/run/sdh-cli-fail']);
    await c.removeUnit(UNIT);
    await c.removeUnit(SOCKET);
  });

  it('reload: the new main pid, as systemd sees it, in the report; --json too', async () => {
    const before = await mainPid(c, UNIT);
    const r = await cli(c, ['reload', UNIT]);
    expect(r.code, r.stderr).toBe(0);
    const m = /^reloaded hello-http\.service: pid (\d+) -> (\d+) in (\d+) ms\n$/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(Number(m![1])).toBe(before);
    const after = await mainPid(c, UNIT);
    expect(Number(m![2])).toBe(after);
    expect(after).not.toBe(before);
    expect((await c.exec(['curl', '-sf', 'http://127.0.0.1:8080/'], { check: true })).stdout).toContain(`hello from ${after}`);
    console.log(`[${c.label}] ${r.stdout.trim()} (CLI run ${r.ms} ms)`);

    const j = await cli(c, ['reload', 'hello-http', '--json']);
    expect(j.code, j.stderr).toBe(0);
    const report = JSON.parse(j.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ ok: true, unit: UNIT, oldPid: after, jobResult: 'done', activeState: 'active' });
    expect(report.pid).toBe(await mainPid(c, UNIT));
    expect(report.statusText).toMatch(new RegExp(`^upgraded: pid ${report.pid} took over from ${after} in \\d+ ms$`));
  });

  it('status: pid, state, status text, fd store, the socket unit and its address, the last upgrade', async () => {
    const pid = await mainPid(c, UNIT);
    const r = await cli(c, ['status', UNIT]);
    expect(r.code, r.stderr).toBe(0);
    console.log(`[${c.label}] sd-handoff status (${r.ms} ms):\n${r.stdout}`);
    expect(r.stdout).toContain('hello-http.service - hello-http (sd-handoff example)');
    expect(r.stdout).toMatch(/^ {2}state: +active \(running\)$/m);
    expect(r.stdout).toMatch(new RegExp(`^ {2}main pid: +${pid}$`, 'm'));
    expect(r.stdout).toMatch(/^ {2}fd store: +1$/m);
    expect(r.stdout).toMatch(/^ {4}hello-http\.socket active \((running|listening)\): 127\.0\.0\.1:8080 \(Stream\)$/m);
    // The previous process did the upgrade and handed its outcome over with the handover: the new one reports it.
    expect(r.stdout).toMatch(new RegExp(`^ {2}last upgrade: ok at \\S+: pid ${pid} took over in \\d+ ms$`, 'm'));

    const j = JSON.parse((await cli(c, ['status', UNIT, '--json'])).stdout) as Record<string, unknown>;
    expect(j).toMatchObject({
      unit: UNIT,
      activeState: 'active',
      subState: 'running',
      mainPid: pid,
      nFileDescriptorStore: 1,
      controlSocket: '/run/hello-http/control.sock',
      sockets: [{ unit: SOCKET, listen: [{ type: 'Stream', address: '127.0.0.1:8080' }] }],
      control: { ok: true, pid, state: 'ready', lastUpgrade: { ok: true, pid } },
      lastUpgrade: { ok: true, source: 'control-socket' },
    });
  });

  it('reload with a broken new version: exit 1, the job result, the status text and the journal say why; the old pid serves', async () => {
    const before = await mainPid(c, UNIT);
    await c.exec(['touch', '/run/sdh-cli-fail'], { check: true });
    try {
      const r = await cli(c, ['reload', UNIT]);
      console.log(`[${c.label}] failed reload (exit ${r.code}, ${r.ms} ms):\n${r.stderr}`);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('sd-handoff reload: reload of hello-http.service failed: the reload job finished with result "failed"');
      expect(r.stderr).toMatch(new RegExp(`main pid: ${before} \\(unchanged\\)`));
      expect(r.stderr).toMatch(/status: +upgrade failed: the new version \(pid \d+\) exited with status 3 before it was ready/);
      expect(r.stderr).toMatch(/journal since the reload started \(\d+ lines\):/);
      expect(r.stderr).toContain('exists: failing on purpose before ready');
      expect(await mainPid(c, UNIT)).toBe(before);
      expect((await c.exec(['curl', '-sf', 'http://127.0.0.1:8080/'], { check: true })).stdout).toContain(`hello from ${before}`);

      const s = await cli(c, ['status', UNIT]);
      expect(s.stdout).toMatch(/last upgrade: FAILED at \S+: the new version \(pid \d+\) exited with status 3/);
    } finally {
      await c.exec(['rm', '-f', '/run/sdh-cli-fail']);
    }
  });

  it('no such unit: exit 4 with the name; an inactive unit cannot be reloaded: exit 1 with systemd\'s reason', async () => {
    const r = await cli(c, ['reload', 'sdh-no-such.service']);
    expect(r.code).toBe(4);
    expect(r.stderr).toBe('sd-handoff reload: no such unit: sdh-no-such.service\n');
    const s = await cli(c, ['status', 'sdh-no-such.service', '--json']);
    expect(s.code).toBe(4);
    expect(JSON.parse(s.stdout)).toMatchObject({ ok: false, code: 'SDH_NO_SUCH_UNIT' });

    await c.installUnit('sdh-cli-idle.service', '[Service]\nExecStart=/bin/sleep 600\n');
    try {
      const i = await cli(c, ['reload', 'sdh-cli-idle.service']);
      expect(i.code).toBe(1);
      expect(i.stderr).toMatch(/^sd-handoff reload: ReloadUnit sdh-cli-idle\.service: .*(not active|not applicable).* \(org\.freedesktop\.systemd1\.\w+\)\n$/);
      const st = await cli(c, ['status', 'sdh-cli-idle.service']);
      expect(st.code).toBe(0);
      expect(st.stdout).toMatch(/state: +inactive \(dead\)/);
      expect(st.stdout).toContain('last upgrade: no control socket');
    } finally {
      await c.removeUnit('sdh-cli-idle.service');
    }
  });

  it('the Systemd API on the real bus: jobs end with their JobRemoved result; watch() sees the reload', async () => {
    await c.installUnit('sdh-cli-job.service', '[Service]\nExecStart=/bin/sleep 600\nExecReload=/bin/true\n');
    await c.installUnit('sdh-cli-bad.service', '[Service]\nType=oneshot\nExecStart=/bin/false\n');
    const script = `
      import { Systemd } from '/project/dist/dbus.js';
      const sd = await Systemd.connect();
      const out = {};
      const changes = [];
      const off = await sd.watch('sdh-cli-job.service', (c) => { if ('ActiveState' in c.changed) changes.push(c.changed.ActiveState); });
      out.start = (await sd.start('sdh-cli-job.service')).result;
      const pid1 = (await sd.getUnit('sdh-cli-job.service')).mainPid;
      out.reload = (await sd.reload('sdh-cli-job.service')).result;
      out.restart = (await sd.restart('sdh-cli-job.service')).result;
      out.newPid = (await sd.getUnit('sdh-cli-job.service')).mainPid !== pid1;
      out.stop = (await sd.stop('sdh-cli-job.service')).result;
      out.after = (await sd.getUnit('sdh-cli-job.service')).activeState;
      await new Promise((r) => setTimeout(r, ${scaled(200)}));
      await off();
      out.changes = changes;
      try { await sd.start('sdh-cli-bad.service'); } catch (e) { out.bad = [e.code, e.result, e.message]; }
      sd.close();
      console.log(JSON.stringify(out));
    `;
    try {
      const r = await c.node(['--input-type=module', '-e', script], { check: true, timeoutMs: 60_000 });
      const out = JSON.parse(r.stdout) as { changes: string[] } & Record<string, unknown>;
      expect(out).toMatchObject({ start: 'done', reload: 'done', restart: 'done', newPid: true, stop: 'done', after: 'inactive' });
      expect(out.bad).toEqual(['SDH_JOB_FAILED', 'failed', 'the start job of sdh-cli-bad.service finished with result "failed"']);
      // PropertiesChanged on the unit's object, in order: started, reloaded, restarted, stopped.
      console.log(`[${c.label}] ActiveState changes seen: ${out.changes.join(' -> ')}`);
      expect(out.changes).toContain('active');
      expect(out.changes).toContain('reloading');
      expect(out.changes).toContain('deactivating');
      expect(out.changes.at(-1)).toBe('inactive');
    } finally {
      await c.removeUnit('sdh-cli-job.service');
      await c.removeUnit('sdh-cli-bad.service');
    }
  });

  it('units render: systemd-analyze verify is clean; the units install, start, serve on 127.0.0.1:8090 and reload', async () => {
    const out = '/tmp/sdh-render';
    const name = 'sdh-rendered';
    await c.exec(['rm', '-rf', out]);
    const r = await cli(c, ['units', 'render', '--name', name, '--exec', HELLO, '--listen', '127.0.0.1:8090=http', '--fdstore', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(''); // verified, no warning, no "not verified" note
    expect(r.stdout).toBe(`wrote ${out}/${name}.service\nwrote ${out}/${name}.socket\n`);
    const verify = await c.exec(['systemd-analyze', 'verify', `${out}/${name}.service`, `${out}/${name}.socket`]);
    expect({ code: verify.code, output: verify.stdout + verify.stderr }).toEqual({ code: 0, output: '' });
    console.log(`[${c.label}] units render + verify: ${r.ms} ms; systemd-analyze verify printed nothing`);
    try {
      await c.installUnit(`${name}.socket`, await c.readFile(`${out}/${name}.socket`));
      await c.installUnit(`${name}.service`, await c.readFile(`${out}/${name}.service`));
      await c.systemctl(['start', `${name}.socket`, `${name}.service`], { check: true, timeoutMs: 60_000 });
      const pid = await mainPid(c, `${name}.service`);
      expect(pid).toBeGreaterThan(0);
      expect((await c.exec(['curl', '-sf', 'http://127.0.0.1:8090/'], { check: true })).stdout).toBe(`hello from ${pid}\n`);
      const rl = await cli(c, ['reload', name]);
      expect(rl.code, rl.stderr).toBe(0);
      const next = await mainPid(c, `${name}.service`);
      expect(rl.stdout).toMatch(new RegExp(`^reloaded ${name}\\.service: pid ${pid} -> ${next} in \\d+ ms\\n$`));
      expect((await c.exec(['curl', '-sf', 'http://127.0.0.1:8090/'], { check: true })).stdout).toBe(`hello from ${next}\n`);
      const st = JSON.parse((await cli(c, ['status', name, '--json'])).stdout) as Record<string, unknown>;
      expect(st).toMatchObject({ mainPid: next, nFileDescriptorStore: 1, sockets: [{ unit: `${name}.socket`, listen: [{ address: '127.0.0.1:8090' }] }] });
      // Hardening took effect (the service runs with it, not beside it).
      const sec = await c.show(`${name}.service`, ['ProtectSystem', 'NoNewPrivileges', 'KillMode', 'PrivateDevices']);
      expect(sec).toEqual({ ProtectSystem: 'strict', NoNewPrivileges: 'yes', KillMode: 'control-group', PrivateDevices: 'yes' });
    } finally {
      await c.removeUnit(`${name}.service`);
      await c.removeUnit(`${name}.socket`);
    }
  }, scaled(120_000));

  it('units render --run: a Python program under sd-handoff run verifies clean, serves on 127.0.0.1:8097, reloads twice with MainPID unchanged', async () => {
    const out = '/tmp/sdh-render-run';
    const name = 'sdh-rendered-run';
    const unit = `${name}.service`;
    const exec = '/usr/bin/python3 /project/test/fixtures/listen_http.py';
    // The unit's own limits stretched by SDH_TIME_FACTOR like every other deadline (90 and 45 s, the defaults, at 1).
    const upgradeTimeout = String(scaled(90_000) / 1000);
    const stopTimeout = String(scaled(45_000) / 1000);
    await c.exec(['rm', '-rf', out]);
    const r = await cli(c, ['units', 'render', '--name', name, '--run', '--exec', exec, '--listen', '127.0.0.1:8097=http', '--ready', 'notify', '--upgrade-timeout', upgradeTimeout, '--stop-timeout', stopTimeout, '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(''); // verified, no warning, no "not verified" note
    expect(r.stdout).toBe(`wrote ${out}/${unit}\nwrote ${out}/${name}.socket\n`);
    const verify = await c.exec(['systemd-analyze', 'verify', `${out}/${unit}`, `${out}/${name}.socket`]);
    expect({ code: verify.code, output: verify.stdout + verify.stderr }).toEqual({ code: 0, output: '' });
    const text = await c.readFile(`${out}/${unit}`);
    expect(text.split('\n').filter((l) => /^(ExecStart|ExecReload|PIDFile)=/.test(l))).toEqual([
      `ExecStart=/usr/local/bin/node ${CLI} run --ready notify -- ${exec}`,
      `ExecReload=/usr/local/bin/node ${CLI} upgrade --timeout ${upgradeTimeout}`,
    ]);
    console.log(`[${c.label}] units render --run + verify: ${r.ms} ms; systemd-analyze verify printed nothing`);
    const t = performance.now();
    try {
      await c.installUnit(`${name}.socket`, await c.readFile(`${out}/${name}.socket`));
      await c.installUnit(unit, text);
      await c.systemctl(['start', `${name}.socket`, unit], { check: true, timeoutMs: 60_000 });
      const served = async () => Number((await c.exec(['curl', '-sf', 'http://127.0.0.1:8097/'], { check: true })).stdout.trim());
      const runPid = await mainPid(c, unit);
      expect(runPid).toBeGreaterThan(0);
      // MainPID is sd-handoff run; the Python program that answers is its child.
      expect((await c.exec(['cat', `/proc/${runPid}/cmdline`])).stdout).toContain('cli.js\0run\0--ready\0notify\0--\0/usr/bin/python3\0');
      const pids = [await served()];
      expect(pids[0]).not.toBe(runPid);
      expect((await c.readFile(`/proc/${pids[0]}/status`)).match(/^PPid:\s+(\d+)$/m)?.[1]).toBe(String(runPid));
      for (let i = 1; i <= 2; i++) {
        const rl = await c.systemctl(['reload', unit], { timeoutMs: 60_000 });
        expect({ reload: i, code: rl.code, stderr: rl.stderr }).toEqual({ reload: i, code: 0, stderr: '' });
        const next = await served();
        expect(pids).not.toContain(next);
        expect(next).not.toBe(runPid);
        expect(await mainPid(c, unit)).toBe(runPid);
        // The replaced instance got SIGTERM from run and drains by itself (nothing in flight here: it just exits).
        const old = pids.at(-1)!;
        await c.waitFor(async () => (await c.exec(['test', '-e', `/proc/${old}`])).code !== 0, 10_000, { what: `the replaced Python pid ${old} to exit` });
        pids.push(next);
      }
      const st = JSON.parse((await cli(c, ['status', name, '--json'])).stdout) as Record<string, unknown>;
      expect(st).toMatchObject({
        mainPid: runPid,
        activeState: 'active',
        controlSocket: `/run/${name}/control.sock`,
        control: { pid: runPid, child: pids.at(-1), state: 'ready' },
        lastUpgrade: { ok: true, source: 'control-socket' },
        sockets: [{ unit: `${name}.socket`, listen: [{ address: '127.0.0.1:8097' }] }],
      });
      console.log(`[${c.label}] units render --run: start, 2 reloads (Python pids ${pids.join(' -> ')}, MainPID ${runPid} = run throughout): ${Math.round(performance.now() - t)} ms`);
    } finally {
      await c.removeUnit(unit);
      await c.removeUnit(`${name}.socket`);
    }
  }, scaled(120_000));

  it('units render: several named listeners and the template form verify clean; notify-reload warns where systemd lacks it', async () => {
    const multi = await cli(c, ['units', 'render', '--name', 'sdh-multi', '--exec', HELLO, '--listen', '127.0.0.1:8091=http', '--listen', '/run/sdh-multi.sock=admin', '--listen', 'udp:127.0.0.1:8092=dns', '--dry-run']);
    expect(multi.code, multi.stderr).toBe(0);
    expect(multi.stderr).toBe('');
    expect(multi.stdout).toContain('# ==> sdh-multi-admin.socket <==');
    const tpl = await cli(c, ['units', 'render', '--name', 'sdh-tpl', '--exec', HELLO, '--listen', '127.0.0.1:%i=http', '--template', '--dry-run']);
    expect(tpl.code, tpl.stderr).toBe(0);
    expect(tpl.stderr).toBe('');
    expect(tpl.stdout).toContain('RuntimeDirectory=sdh-tpl-%i');
    const nr = await cli(c, ['units', 'render', '--name', 'sdh-nr', '--exec', HELLO, '--listen', '8093', '--type', 'notify-reload', '--dry-run']);
    console.log(`[${c.label}] render --type notify-reload: exit ${nr.code}\n${nr.stderr}`);
    if (c.systemdVersion >= 253) {
      expect(nr.code, nr.stderr).toBe(0);
      expect(nr.stderr).toBe('');
    } else {
      expect(nr.code).toBe(1);
      expect(nr.stderr).toMatch(/systemd-analyze verify (warned|failed).*nothing written/);
      expect(nr.stderr).toMatch(/sdh-nr\.service.*notify-reload/);
      expect(nr.stdout).toBe('');
    }
  });
});
