/**
 * sd-handoff/auto on real systemd: unmodified Express and Fastify applications started with
 * `node --import sd-handoff/auto`, their port passed by socket activation (matched by port: the socket's fd name is
 * systemd's default), reloaded with `systemctl reload` (ExecReload= runs `sd-handoff upgrade`) under load.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachSuite, pause, scaled } from './lab/index.js';
import { reloadOk } from './hello.js';
import { startLoad } from './load.js';

const PORT = 8091;

function units(app: string): { socket: string; service: string } {
  return {
    socket: `[Socket]\nListenStream=127.0.0.1:${PORT}\nBacklog=4096\n`,
    service: [
      '[Unit]',
      `Requires=sdh-auto-${app}.socket`,
      `After=sdh-auto-${app}.socket`,
      '[Service]',
      'Type=notify',
      // From the project directory, so `sd-handoff/auto` resolves to the package (as from node_modules).
      'WorkingDirectory=/project',
      `ExecStart=/usr/local/bin/node --import sd-handoff/auto /project/test/fixtures/auto/${app}-app.mjs`,
      `ExecReload=/usr/local/bin/node /project/dist/cli.js upgrade --timeout ${scaled(60)}`,
      `PIDFile=/run/sdh-auto-${app}/app.pid`,
      `RuntimeDirectory=sdh-auto-${app}`,
      `Environment=PORT=${PORT} SDH_PIDFILE=/run/sdh-auto-${app}/app.pid SDH_CONTROL_SOCKET=/run/sdh-auto-${app}/control.sock SDH_DRAIN_TIMEOUT_MS=${scaled(10_000)} SDH_UPGRADE_TIMEOUT_MS=${scaled(60_000)}`,
      `TimeoutStopSec=${scaled(20)}`,
      // systemd bounds ExecReload= by TimeoutStartSec= (default 90 s): longer than the upgrade's own timeout.
      `TimeoutStartSec=${scaled(90)}`,
      '',
    ].join('\n'),
  };
}

describeEachSuite('sd-handoff/auto', (c) => {
  for (const app of ['express', 'fastify']) {
    const service = `sdh-auto-${app}.service`;
    const socket = `sdh-auto-${app}.socket`;
    beforeAll(async () => {
      const u = units(app);
      await c.installUnit(socket, u.socket);
      await c.installUnit(service, u.service);
    });
    afterAll(async () => {
      await c.removeUnit(service);
      await c.removeUnit(socket);
    });

    it(`an unmodified ${app} app: 3 × systemctl reload under load, a new MainPID each time, 0 failed requests`, async () => {
      await c.systemctl(['start', socket, service], { check: true });
      try {
        let main = Number((await c.show(service, ['MainPID'])).MainPID);
        expect(main).toBeGreaterThan(0);
        const ka = await startLoad(c, 'keepalive', 6, [], `http://127.0.0.1:${PORT}/`);
        const nc = await startLoad(c, 'newconn', 3, [], `http://127.0.0.1:${PORT}/`);
        await pause(1000);
        const mains = [main];
        for (let i = 0; i < 3; i++) {
          await reloadOk(c, service, `reload ${i + 1}`);
          const s = await c.show(service, ['MainPID', 'ActiveState']);
          expect(s.ActiveState).toBe('active');
          main = Number(s.MainPID);
          expect(main).not.toBe(mains.at(-1));
          mains.push(main);
        }
        await pause(500);
        const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
        expect(k.counts.ok).toBeGreaterThan(200);
        expect(n.counts.ok).toBeGreaterThan(50);
        expect(k.counts.total - k.counts.ok, JSON.stringify(k.errorSamples)).toBe(0);
        expect(n.counts.total - n.counts.ok, JSON.stringify(n.errorSamples)).toBe(0);
        const answer = await c.exec(['curl', '-sf', `http://127.0.0.1:${PORT}/`], { check: true });
        expect(answer.stdout).toContain(`hello from ${main}`);
      } finally {
        await c.systemctl(['stop', service, socket]);
      }
    }, scaled(120_000));
  }
});
