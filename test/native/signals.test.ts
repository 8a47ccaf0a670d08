/**
 * The signal set, with hello-http as a real process and a notify socket standing in for systemd's:
 * SIGTERM graceful stop, a second SIGTERM, SIGINT fast stop, SIGQUIT upgrade, and a stop during an upgrade.
 */
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import { controlRequest } from '../../src/upgrade/control.js';
import { alive, readPid, serviceWorld, waitFor, type ServiceWorld } from './helpers.js';

const world = serviceWorld();

function start(extra: NodeJS.ProcessEnv = {}): ReturnType<ServiceWorld['startHello']> {
  return world.startHello({ SDH_CONTROL_SOCKET: world.control, DRAIN_TIMEOUT_MS: '8000', ...extra });
}

/** A GET on its own connection; resolves with status and body, or the error code. */
function get(urlPath: string): Promise<{ status?: number; body?: string; error?: string; at: number }> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port: world.port, path: urlPath, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode, body, at: Date.now() }));
        res.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message, at: Date.now() }));
      })
      .on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message, at: Date.now() }));
  });
}

describe('signals', () => {
  it('SIGTERM: STOPPING=1, the 3 s request in flight completes, EXTEND_TIMEOUT_USEC while draining, exit 0, PID file removed', async () => {
    const { pid, exited } = await start();
    const slow = get('/slow');
    await new Promise((r) => setTimeout(r, 300));
    const sent = Date.now();
    process.kill(pid, 'SIGTERM');
    const [answer, exit] = await Promise.all([slow, exited]);
    expect(answer.status).toBe(200);
    expect(answer.body).toBe(`slow hello from ${pid}\n`);
    expect(exit.code).toBe(0);
    // It waited for the request (about 2.7 s left of it), not for the drain timeout (8 s).
    expect(exit.at - sent).toBeGreaterThan(2000);
    expect(exit.at - sent).toBeLessThan(7000);
    const texts = world.notify.messages.filter((m) => m.pid === pid).map((m) => m.text);
    const stopping = texts.findIndex((t) => t.startsWith('STOPPING=1'));
    expect(stopping).toBeGreaterThan(0);
    expect(texts.slice(stopping).filter((t) => /^EXTEND_TIMEOUT_USEC=\d+$/.test(t)).length).toBeGreaterThanOrEqual(1);
    expect(readPid(world.pidFile)).toBeUndefined();
  }, 20_000);

  it('a second SIGTERM during the drain ends it at once', async () => {
    const { pid, exited } = await start();
    const slow = get('/slow');
    await new Promise((r) => setTimeout(r, 300));
    process.kill(pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    const second = Date.now();
    process.kill(pid, 'SIGTERM');
    const exit = await exited;
    expect(exit.code).toBe(0);
    expect(exit.at - second).toBeLessThan(1000);
    // The request it gave up on fails: that is what a forced stop means.
    expect((await slow).error).toBeDefined();
  }, 20_000);

  it('SIGINT: fast stop, STOPPING=1 and exit 0 without waiting for requests', async () => {
    const { pid, exited } = await start();
    void get('/slow');
    await new Promise((r) => setTimeout(r, 300));
    const sent = Date.now();
    process.kill(pid, 'SIGINT');
    const exit = await exited;
    expect(exit.code).toBe(0);
    expect(exit.at - sent).toBeLessThan(1000);
    expect(world.notify.messages.some((m) => m.pid === pid && m.text.startsWith('STOPPING=1'))).toBe(true);
  }, 20_000);

  it('SIGQUIT upgrades, as SIGHUP does', async () => {
    const { pid } = await start();
    process.kill(pid, 'SIGQUIT');
    const next = await waitFor('a new pid in the PID file', () => {
      const p = readPid(world.pidFile);
      return p !== undefined && p !== pid ? p : undefined;
    });
    world.procs.track(next);
    await waitFor('the old pid to exit', () => !alive(pid), 15_000);
    expect((await get('/')).body).toContain(`hello from ${next}`);
  }, 30_000);

  it('a stop during an upgrade aborts the upgrade and says so; the service still drains and exits 0', async () => {
    const hang = path.join(world.dir, 'hang');
    const { pid, exited } = await start({ HELLO_HANG_FILE: hang, UPGRADE_TIMEOUT_MS: '20000' });
    writeFileSync(hang, '');
    const upgrading = controlRequest(world.control, 'upgrade', { timeoutMs: 20_000 }).catch((e: unknown) => e as SdHandoffError);
    await waitFor('the new version to start', () => world.procs.output.includes('never becoming ready'));
    const hangingPid = Number(/hello-http (\d+): .* never becoming ready/.exec(world.procs.output)![1]);
    world.procs.track(hangingPid);
    process.kill(pid, 'SIGTERM');
    const err = await upgrading;
    expect(err).toBeInstanceOf(SdHandoffError);
    expect(err.code).toBe('SDH_STOPPED');
    expect(err.message).toBe('the upgrade was aborted: the service is stopping');
    expect((await exited).code).toBe(0);
    await waitFor('the aborted new version to be gone', () => !alive(hangingPid), 10_000);
  }, 30_000);
});
