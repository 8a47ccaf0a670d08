/**
 * bench/load.ts against real local servers: every request ends in exactly one counted outcome.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { runLoad, startLoad, summarize, type LoadResult } from '../../bench/load.js';
import { SdHandoffError } from '../../src/errors.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    (s as http.Server).closeAllConnections?.();
    await new Promise((r) => s.close(r));
  }
});

async function serve(handler: http.RequestListener, where: { path?: string } = {}): Promise<number> {
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => (where.path ? server.listen(where.path, r) : server.listen(0, '127.0.0.1', r)));
  return where.path ? 0 : (server.address() as net.AddressInfo).port;
}

/** A port nothing listens on: bound and released. */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function sumWindows(r: LoadResult): number {
  return r.windows.reduce((n, w) => n + w.counts.total, 0);
}

describe('load generator', () => {
  it('counts ok requests in keep-alive mode, in windows, with latency and marks', async () => {
    const connections = new Set<net.Socket>();
    const port = await serve((req, res) => {
      connections.add(req.socket);
      res.end('ok');
    });
    const load = startLoad({ url: `http://127.0.0.1:${port}/`, mode: 'keepalive', connections: 4, durationMs: 600, windowMs: 100 });
    await new Promise((r) => setTimeout(r, 300));
    load.mark('middle');
    const r = await load.done;
    expect(r.counts.ok).toBeGreaterThan(100);
    expect(r.counts.total).toBe(r.counts.ok);
    expect(sumWindows(r)).toBe(r.counts.total);
    expect(r.latency.count).toBe(r.counts.ok);
    expect(r.latency.p50).toBeGreaterThan(0);
    expect(r.latency.p50).toBeLessThanOrEqual(r.latency.p99);
    expect(r.latency.p99).toBeLessThanOrEqual(r.latency.max);
    // One connection per loop, reused: keep-alive really is kept.
    expect(connections.size).toBe(4);
    expect(r.marks).toHaveLength(1);
    expect(r.marks[0]!.label).toBe('middle');
    expect(r.marks[0]!.t).toBeGreaterThanOrEqual(295);
    expect(r.marks[0]!.t).toBeLessThan(600);
    const before = summarize(r, 0, 300);
    const after = summarize(r, 300);
    expect(before.counts.ok + after.counts.ok).toBe(r.counts.ok);
    expect(before.latency.count).toBe(before.counts.ok);
  });

  it('opens a new connection per request in newconn mode', async () => {
    const connections = new Set<net.Socket>();
    const port = await serve((req, res) => {
      connections.add(req.socket);
      res.end('ok');
    });
    const r = await runLoad({ url: `http://127.0.0.1:${port}/`, mode: 'newconn', connections: 2, durationMs: 300 });
    expect(r.counts.ok).toBeGreaterThan(20);
    expect(connections.size).toBe(r.counts.ok);
  });

  it('counts a 500 as non2xx with its status', async () => {
    const port = await serve((_req, res) => {
      res.statusCode = 500;
      res.end('no');
    });
    const r = await runLoad({ url: `http://127.0.0.1:${port}/`, connections: 2, durationMs: 300 });
    expect(r.counts.non2xx).toBeGreaterThan(10);
    expect(r.counts.total).toBe(r.counts.non2xx);
    expect(r.statusCodes).toEqual({ 500: r.counts.non2xx });
  });

  it('counts ECONNREFUSED as refused', async () => {
    const r = await runLoad({ url: `http://127.0.0.1:${await deadPort()}/`, connections: 2, durationMs: 200 });
    expect(r.counts.refused).toBeGreaterThan(10);
    expect(r.counts.total).toBe(r.counts.refused);
    expect(r.errorSamples[0]).toMatchObject({ kind: 'refused', code: 'ECONNREFUSED' });
  });

  it('counts a server that destroys sockets as reset', async () => {
    const port = await serve((req) => req.socket.destroy());
    const r = await runLoad({ url: `http://127.0.0.1:${port}/`, connections: 2, durationMs: 300 });
    expect(r.counts.reset).toBeGreaterThan(10);
    expect(r.counts.total).toBe(r.counts.reset);
    expect(r.errorSamples[0]).toMatchObject({ kind: 'reset', code: 'ECONNRESET' });
  });

  it('counts a server that never answers as timeout', async () => {
    const port = await serve(() => {});
    const r = await runLoad({ url: `http://127.0.0.1:${port}/`, connections: 3, durationMs: 100, timeoutMs: 200 });
    // Each loop sends one request before 100 ms; each is aborted at 200 ms, and the load waits for them.
    expect(r.counts).toMatchObject({ timeout: 3, total: 3 });
    expect(r.errorSamples[0]).toMatchObject({ kind: 'timeout', code: 'LOAD_TIMEOUT' });
    expect(r.durationMs).toBeGreaterThanOrEqual(195);
  });

  it('runs slow-path loops beside the main ones and counts them apart', async () => {
    const port = await serve((req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('slow'), 200);
      else res.end('ok');
    });
    const r = await runLoad({ url: `http://127.0.0.1:${port}/`, connections: 2, durationMs: 500, slow: { path: '/slow', connections: 1 } });
    expect(r.slow!.counts.ok).toBeGreaterThanOrEqual(2);
    expect(r.slow!.counts.total).toBe(r.slow!.counts.ok);
    expect(r.slow!.latency.p50).toBeGreaterThanOrEqual(195);
    expect(r.counts.total).toBe(r.counts.ok);
  });

  it('targets a unix socket', async () => {
    const sock = path.join(os.tmpdir(), `sdh-load-${process.pid}.sock`);
    await serve((_req, res) => res.end('ok'), { path: sock });
    const r = await runLoad({ url: 'http://127.0.0.1/', socketPath: sock, connections: 2, durationMs: 200 });
    expect(r.counts.ok).toBeGreaterThan(10);
    expect(r.counts.total).toBe(r.counts.ok);
  });

  it('refuses anything but loopback, with a clear error', () => {
    for (const url of ['http://10.1.2.3:8080/', 'http://localhost:8080/', 'http://example.com/', 'http://[2001:db8::1]/']) {
      expect(() => startLoad({ url, durationMs: 100 })).toThrow(SdHandoffError);
      expect(() => startLoad({ url, durationMs: 100 })).toThrow(/only targets loopback addresses/);
    }
    expect(() => startLoad({ url: 'https://127.0.0.1/', durationMs: 100 })).toThrow(/url must be http:/);
    expect(() => startLoad({ url: 'http://127.0.0.1/', durationMs: 0 })).toThrow(/durationMs must be an integer/);
    expect(() => startLoad({ url: 'http://[::1]:1/', durationMs: 1, connections: 1 }).stop()).not.toThrow();
  });

  it('has a CLI that prints the result as JSON', async () => {
    const port = await serve((_req, res) => res.end('ok'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/load.ts', '--url', `http://127.0.0.1:${port}/`, '-c', '2', '-d', '0.3'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(0);
    const r = JSON.parse(out) as LoadResult;
    expect(r.mode).toBe('keepalive');
    expect(r.counts.ok).toBeGreaterThan(10);
    expect(r.windows[0]).not.toHaveProperty('hist');
  });
});
