/**
 * Graceful stop and takeover on real systemd: `systemctl stop` under load with a 3 s request in flight, and a
 * takeover started by the unit's own `ExecReload=` (`sd-handoff takeover -- ...`) under load.
 */
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest';
import { describeEachSuite, pause, scaled } from './lab/index.js';
import { exampleUnit, mainPid, PIDFILE, reloadOk, SOCKET, UNIT } from './hello.js';
import { startLoad, type LoadCounts } from './load.js';



const failed = (c: LoadCounts): number => c.total - c.ok;


describeEachSuite('stop and takeover', (c) => {
  beforeAll(async () => {
    await c.installUnit(SOCKET, exampleUnit(SOCKET));
    await c.installUnit(UNIT, exampleUnit(UNIT));
    await c.systemctl(['start', SOCKET, UNIT], { check: true });
  });
  afterAll(async () => {
    await c.removeUnit(UNIT);
    await c.removeUnit(SOCKET);
  });

  it('systemctl stop under load: the 3 s request in flight completes, no client sees an error', async () => {
    const pid = await mainPid(c);
    const stopKa = await startLoad(c, 'keepalive', 6);
    const stopNc = await startLoad(c, 'newconn', 3);
    await pause(700);
    const slow = c.exec(['curl', '-s', '-o', '-', '-w', ' %{http_code}', 'http://127.0.0.1:8080/slow'], { timeoutMs: 30_000 });
    await pause(300);
    const stop = await c.systemctl(['stop', UNIT], { timeoutMs: 60_000 });
    expect(stop.code, stop.stderr).toBe(0);
    const answer = await slow;
    expect(answer.stdout).toBe(`slow hello from ${pid}\n 200`);
    // The socket unit still listens: what arrives meanwhile starts the service again and is served by it.
    await pause(1000);
    const [ka, nc] = await Promise.all([stopKa.stop(), stopNc.stop()]);
    expect(failed(ka.counts), JSON.stringify(ka.errorSamples)).toBe(0);
    expect(failed(nc.counts), JSON.stringify(nc.errorSamples)).toBe(0);
    expect(ka.counts.ok).toBeGreaterThan(100);
    const journal = (await c.journal(UNIT, { since: '-60s' })).map((e) => String(e.MESSAGE)).join('\n');
    expect(journal).toContain(`pid ${pid} stopping`);
    expect(journal).toMatch(new RegExp(`pid ${pid} drained \\d+ connection\\(s\\)`));
    const next = await c.waitFor(async () => {
      const p = await mainPid(c);
      return p > 0 && p !== pid ? p : undefined;
    }, 20_000, { what: 'the service started again by its socket' });
    expect(next).not.toBe(pid);
  }, scaled(90_000));

  it('a takeover started by ExecReload= (sd-handoff takeover -- ...) under load: new MainPID, 0 failed requests', async () => {
    await c.writeFile(
      `/etc/systemd/system/${UNIT}.d/takeover.conf`,
      `[Service]\nExecReload=\nExecReload=/usr/local/bin/node /project/dist/cli.js takeover --timeout ${scaled(60)} -- /usr/local/bin/node /project/examples/hello-http/server.mjs\n`,
    );
    await c.systemctl(['daemon-reload'], { check: true });
    onTestFinished(async () => {
      await c.exec(['rm', '-f', `/etc/systemd/system/${UNIT}.d/takeover.conf`]);
      await c.systemctl(['daemon-reload']);
    });
    await c.systemctl(['restart', UNIT], { check: true });
    const ka = await startLoad(c, 'keepalive', 6);
    const nc = await startLoad(c, 'newconn', 3);
    await pause(700);
    let pid = await mainPid(c);
    for (let i = 0; i < 3; i++) {
      await reloadOk(c, UNIT, `reload ${i + 1}`);
      const next = await mainPid(c);
      expect(next).not.toBe(pid);
      expect(Number((await c.readFile(PIDFILE)).trim())).toBe(next);
      expect((await c.show(UNIT, ['StatusText'])).StatusText).toMatch(new RegExp(`^taken over: pid ${next} took over from ${pid} in \\d+ ms$`));
      pid = next;
    }
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    expect(failed(k.counts), JSON.stringify(k.errorSamples)).toBe(0);
    expect(failed(n.counts), JSON.stringify(n.errorSamples)).toBe(0);
    expect(k.counts.ok).toBeGreaterThan(100);
  }, scaled(120_000));
});
