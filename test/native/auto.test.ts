/**
 * sd-handoff/auto with real processes: unmodified node:http, Express and Fastify applications run with
 * `node --import sd-handoff/auto`, upgraded twice by SIGHUP under keep-alive and new-connection load; a notify
 * socket bound by the test stands in for systemd's.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startLoad, type Counts } from '../../bench/load.js';
import { alive, readPid, ROOT, serviceWorld, waitFor } from './helpers.js';

const APPS = path.join(ROOT, 'test/fixtures/auto');

const world = serviceWorld({ pidFile: 'app.pid' });

const failures = (c: Counts): Omit<Counts, 'ok' | 'total'> => ({ non2xx: c.non2xx, refused: c.refused, reset: c.reset, timeout: c.timeout, other: c.other });
const NONE = { non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0 };

describe('node --import sd-handoff/auto', () => {
  it.each(['http', 'express', 'fastify'])('an unmodified %s app is upgraded twice by SIGHUP under load with 0 failed requests', async (app) => {
    // Run from the project so `sd-handoff/auto` resolves to this package (as it would from node_modules).
    const child = world.procs.start('--import', {
      PORT: String(world.port),
      SDH_PIDFILE: world.pidFile,
      NOTIFY_SOCKET: world.notify.path,
      SDH_DRAIN_TIMEOUT_MS: '5000',
    }, ['sd-handoff/auto', path.join(APPS, `${app}-app.mjs`)]);
    let pid = await waitFor('the PID file', () => readPid(world.pidFile));
    expect(pid).toBe(child.pid);
    await waitFor('READY=1', () => world.notify.texts().some((t) => t.startsWith('READY=1')));
    const url = `http://127.0.0.1:${world.port}/`;
    const ka = startLoad({ url, mode: 'keepalive', connections: 6, durationMs: 60_000, slow: { path: '/slow', connections: 1 } });
    const nc = startLoad({ url, mode: 'newconn', connections: 3, durationMs: 60_000 });
    await new Promise((r) => setTimeout(r, 400));
    const pids = [pid];
    for (let i = 0; i < 2; i++) {
      const old = pid;
      process.kill(old, 'SIGHUP');
      pid = await waitFor('the PID file to name the new process', () => {
        const p = readPid(world.pidFile);
        return p !== undefined && p !== old ? p : undefined;
      });
      world.procs.track(pid);
      await waitFor(`old pid ${old} to exit`, () => !alive(old), 15_000);
      pids.push(pid);
    }
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    expect(new Set(pids).size).toBe(3);
    expect(k.counts.ok).toBeGreaterThan(100);
    expect(n.counts.ok).toBeGreaterThan(30);
    expect(failures(k.counts), JSON.stringify(k.errorSamples)).toEqual(NONE);
    expect(failures(n.counts), JSON.stringify(n.errorSamples)).toEqual(NONE);
    expect(k.slow?.counts.ok).toBeGreaterThan(0);
    expect(failures(k.slow!.counts)).toEqual(NONE);
    for (const p of pids.slice(1)) expect(world.notify.texts().some((t) => t.startsWith(`MAINPID=${p}\nREADY=1`))).toBe(true);
  }, 45_000);
});
