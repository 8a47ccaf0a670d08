/**
 * An HTTPS service (https.createServer, TLS terminated in Node) across upgrades and a stop: https.Server is not an
 * http.Server, and the drain once chose by `instanceof http.Server`, so the old process crashed instead of draining.
 */
import { spawnSync } from 'node:child_process';
import https from 'node:https';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, alive, readPid, serviceWorld, waitFor, type Exit } from './helpers.js';

const world = serviceWorld({ pidFile: 'https.pid' });
const FIXTURE = path.join(ROOT, 'test/fixtures/https-service.mjs');

function selfSigned(dir: string): { key: string; cert: string } {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { key, cert };
}

/** Keep-alive HTTPS requests in a loop over 4 connections until stop(); counts answers and failures. */
function httpsLoad(port: number): { stop: () => Promise<{ ok: number; failed: string[]; pids: Set<string> }> } {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 4, rejectUnauthorized: false });
  let running = true;
  const result = { ok: 0, failed: [] as string[], pids: new Set<string>() };
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const req = https.get({ host: '127.0.0.1', port, path: '/', agent, timeout: 5000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          if (res.statusCode === 200) {
            result.ok++;
            result.pids.add(body.trim().split(' ').pop()!);
          } else result.failed.push(`status ${res.statusCode}`);
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err: NodeJS.ErrnoException) => {
        result.failed.push(err.code ?? err.message);
        resolve();
      });
    });
  const loops = Array.from({ length: 4 }, async () => {
    while (running) {
      await one();
      await new Promise((r) => setTimeout(r, 5));
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return result;
    },
  };
}

describe('HTTPS service under the Upgrader', () => {
  it('upgrades 3 times under keep-alive HTTPS load with 0 failed requests, each old version drains, and SIGTERM drains the last', async () => {
    const { key, cert } = selfSigned(world.dir);
    const child = world.procs.start(FIXTURE, { PORT: String(world.port), PIDFILE: world.pidFile, NOTIFY_SOCKET: world.notify.path, KEY: key, CERT: cert });
    const exited = new Promise<Exit>((r) => child.once('exit', (code, signal) => r({ code, signal, at: Date.now() })));
    let pid = await waitFor('the PID file', () => readPid(world.pidFile));
    const load = httpsLoad(world.port);
    await new Promise((r) => setTimeout(r, 300));
    const pids = [pid];
    for (let i = 0; i < 3; i++) {
      const old = pid;
      process.kill(old, 'SIGHUP');
      pid = await waitFor('a new pid in the PID file', () => {
        const p = readPid(world.pidFile);
        return p !== undefined && p !== old ? p : undefined;
      });
      world.procs.track(pid);
      pids.push(pid);
      await waitFor(`old pid ${old} to exit`, () => !alive(old), 15_000);
      await new Promise((r) => setTimeout(r, 300));
    }
    const seen = await load.stop();
    process.kill(pid, 'SIGTERM');
    await waitFor(`pid ${pid} to exit after SIGTERM`, () => !alive(pid), 15_000);
    await exited;
    const out = world.procs.output;
    expect(seen.failed).toEqual([]);
    expect(seen.ok).toBeGreaterThan(50);
    // Every generation answered, and each of the four drained its connections before exiting: 3 upgrades + the stop.
    expect([...seen.pids].sort()).toEqual(pids.map(String).sort());
    for (const p of pids) expect(out).toMatch(new RegExp(`^drained pid=${p} `, 'm'));
    expect(out).not.toContain('drainNet(server)');
  }, 60_000);
});
