/**
 * drain() and drainNet() with real sockets and a real successor process.
 *
 * The handover scenario is the real-world shape: server A (this process) listens; a child process receives A's
 * listening fd through spawn stdio and serves it with `listen({ fd: 3 })`; then A is drained while keep-alive
 * clients keep sending. Every request must succeed. The control runs the same scenario with the naive
 * `server.close()` + `closeIdleConnections()` and must see failures, which proves the scenario can fail.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startLoad, type LoadResult } from '../../bench/load.js';
import { drain, drainNet, trackConnections, type DrainReport } from '../../src/drain.js';
import { SdHandoffError } from '../../src/errors.js';

const SLOW_MS = 3000;

/** The successor: serves the inherited listening fd 3 with the same routes as A, answering with its pid. */
const SUCCESSOR = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  if (req.url === '/slow') { setTimeout(() => res.end(String(process.pid)), ${SLOW_MS}); return; }
  res.end(String(process.pid));
});
server.listen({ fd: 3 }, () => process.stdout.write('ready\\n'));
process.on('SIGTERM', () => process.exit(0));
`;

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.url === '/slow') {
    setTimeout(() => res.end(String(process.pid)), SLOW_MS);
    return;
  }
  res.end(String(process.pid));
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((r) => (server.listening ? server.close(() => r()) : r())));
  return (server.address() as net.AddressInfo).port;
}

/** The listening fd of a server; Node exposes it on the handle on Unix. */
function fdOf(server: net.Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('server has no fd');
  return fd;
}

async function spawnSuccessor(fd: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', SUCCESSOR], { stdio: ['ignore', 'pipe', 'inherit', fd] });
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`successor exited with ${code}`)));
    child.stdout!.once('data', () => resolve());
  });
  return child;
}

function get(port: number, path = '/', agent: http.Agent | false = false): Promise<{ status: number; body: string; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

function failures(r: LoadResult): number {
  return r.counts.total - r.counts.ok;
}

/** What a naive graceful stop does: close (which closes idle connections), keep closing idle ones, then force. */
async function naiveClose(server: http.Server): Promise<void> {
  const closed = new Promise<void>((r) => server.close(() => r()));
  const sweep = setInterval(() => server.closeIdleConnections(), 20);
  const force = setTimeout(() => server.closeAllConnections(), 5000);
  await closed;
  clearInterval(sweep);
  clearTimeout(force);
}

interface Handover {
  load: LoadResult;
  report: DrainReport | undefined;
  childPid: number;
  servedByChild: string;
}

/** One handover from an in-process server to a child, under keep-alive load, drained one way or the other. */
async function handover(way: 'drain' | 'naive', slow: boolean): Promise<Handover> {
  const a = http.createServer(handler);
  if (way === 'drain') trackConnections(a);
  const port = await listen(a);
  const load = startLoad({
    url: `http://127.0.0.1:${port}/`,
    mode: 'keepalive',
    connections: 32,
    durationMs: 60_000,
    timeoutMs: 10_000,
    ...(slow ? { slow: { path: '/slow', connections: 1 } } : {}),
  });
  cleanups.push(() => load.stop());
  // Let the slow request get under way, so it is in flight when the drain starts.
  await sleep(slow ? 1000 : 300);
  const child = await spawnSuccessor(fdOf(a));
  load.mark('drain');
  const report = way === 'drain' ? await drain(a, { graceMs: 500, timeoutMs: 8000 }) : (await naiveClose(a), undefined);
  load.mark('drained');
  await sleep(300);
  const result = await load.stop();
  const after = await get(port);
  return { load: result, report, childPid: child.pid!, servedByChild: after.body };
}

describe('drain: Node behaviour it relies on', () => {
  it('server.close() closes an idle keep-alive connection at once (the reset-producing step drain avoids)', async () => {
    const a = http.createServer(handler);
    const port = await listen(a);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => agent.destroy());
    await get(port, '/', agent);
    const socket = Object.values(agent.freeSockets).flat()[0]!;
    const ended = new Promise((r) => socket.once('close', r));
    a.close();
    await expect(Promise.race([ended.then(() => 'closed'), sleep(500).then(() => 'open')])).resolves.toBe('closed');
  });

  it('drain() stops the listener but keeps an idle connection open through the grace, and answers on it with Connection: close', async () => {
    const a = trackConnections(http.createServer(handler));
    const port = await listen(a);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => agent.destroy());
    await get(port, '/', agent);
    const socket = Object.values(agent.freeSockets).flat()[0]!;
    let closedAt = 0;
    socket.once('close', () => (closedAt = Date.now()));
    const drained = drain(a, { graceMs: 400, timeoutMs: 5000 });
    expect(a.listening).toBe(false);
    await sleep(200);
    expect(closedAt).toBe(0);
    // The client reuses its idle socket during the drain: it gets its answer, told to close.
    const reused = await get(port, '/', agent);
    expect(reused).toMatchObject({ status: 200, body: String(process.pid), connection: 'close' });
    const report = await drained;
    expect(report).toMatchObject({ connections: 1, closedAfterResponse: 1, closedIdle: 0, forced: 0, requests: 1, lateRequests: 0 });
    // New connections are refused now: nobody else holds this listener.
    await expect(get(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('closes a connection idle for graceMs with a FIN, not a reset', async () => {
    const a = trackConnections(http.createServer(handler));
    const port = await listen(a);
    const client = net.connect(port, '127.0.0.1');
    await new Promise((r) => client.once('connect', r));
    const events: string[] = [];
    client.on('end', () => events.push('end'));
    client.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
    client.on('close', () => events.push('close'));
    await sleep(50);
    const report = await drain(a, { graceMs: 300, timeoutMs: 5000 });
    expect(report).toMatchObject({ connections: 1, closedIdle: 1, forced: 0 });
    expect(report.durationMs).toBeGreaterThanOrEqual(290);
    await sleep(20);
    expect(events).toEqual(['end', 'close']);
  });

  it('does not close a connection whose request is half received; that request is answered with Connection: close', async () => {
    const a = trackConnections(http.createServer(handler));
    const port = await listen(a);
    const client = net.connect(port, '127.0.0.1');
    await new Promise((r) => client.once('connect', r));
    let got = '';
    client.on('data', (d) => (got += d.toString()));
    const ended = new Promise((r) => client.once('end', r));
    client.write('GET / HTTP/1.1\r\nHost: x\r\n');
    await sleep(50);
    const drained = drain(a, { graceMs: 100, timeoutMs: 5000 });
    await sleep(250);
    client.write('\r\n');
    const report = await drained;
    await ended;
    expect(got).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(got).toMatch(/\r\nConnection: close\r\n/i);
    expect(report).toMatchObject({ closedIdle: 0, closedAfterResponse: 1, requests: 1 });
  });

  it('destroys what is left at timeoutMs', async () => {
    const a = trackConnections(http.createServer(() => {}));
    const port = await listen(a);
    const req = http.get({ host: '127.0.0.1', port, agent: false });
    const error = new Promise<NodeJS.ErrnoException>((r) => req.on('error', r));
    await sleep(100);
    const report = await drain(a, { graceMs: 100, timeoutMs: 400 });
    expect(report).toMatchObject({ connections: 1, forced: 1 });
    expect(report.durationMs).toBeGreaterThanOrEqual(390);
    expect((await error).code).toBe('ECONNRESET');
  });

  it('is idempotent and refuses untracked or raw servers clearly', async () => {
    const a = trackConnections(http.createServer(handler));
    await listen(a);
    const p = drain(a, { graceMs: 0 });
    expect(drain(a)).toBe(p);
    await p;
    expect(() => drain(http.createServer())).toThrow(/call trackConnections\(server\) before listen\(\)/);
    expect(() => drain(trackConnections(net.createServer()) as unknown as http.Server)).toThrow(SdHandoffError);
    expect(() => drain(a, { graceMs: -1 } as never)).not.toThrow(); // already draining: same promise, options ignored
    expect(() => drain(trackConnections(http.createServer()), { graceMs: -1 })).toThrow(/graceMs must be/);
  });
});

describe('drain: https', () => {
  it('tracks TLS connections: an idle one reused during the drain is answered with Connection: close', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdh-drain-tls-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    expect(made.status).toBe(0);
    const a = trackConnections(https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, handler));
    const port = await listen(a);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 2, rejectUnauthorized: false });
    cleanups.push(() => agent.destroy());
    const fetch = (): Promise<{ body: string; connection: string | undefined }> =>
      new Promise((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port, agent }, (res) => {
            let body = '';
            res.on('data', (d) => (body += d));
            res.on('end', () => resolve({ body, connection: res.headers.connection }));
          })
          .on('error', reject);
      });
    // Two keep-alive connections: one will be reused during the drain, the other stays idle.
    await Promise.all([fetch(), fetch()]);
    const drained = drain(a, { graceMs: 300, timeoutMs: 5000 });
    await sleep(100);
    await expect(fetch()).resolves.toEqual({ body: String(process.pid), connection: 'close' });
    const report = await drained;
    expect(report).toMatchObject({ connections: 2, closedAfterResponse: 1, closedIdle: 1, forced: 0, requests: 1 });
  });
});

describe('drain: handover to a successor process under keep-alive load', () => {
  it('loses no request over 4 handovers, and a 3 s request in flight completes', async () => {
    const totals = { requests: 0, failures: 0, slowOk: 0 };
    for (let i = 0; i < 4; i++) {
      const h = await handover('drain', i === 0);
      totals.requests += h.load.counts.total;
      totals.failures += failures(h.load);
      if (failures(h.load) > 0) console.error(h.load.counts, h.load.errorSamples);
      expect(h.servedByChild).toBe(String(h.childPid));
      expect(h.report).toMatchObject({ forced: 0, lateRequests: 0 });
      expect(h.report!.connections).toBeGreaterThanOrEqual(32);
      expect(h.report!.closedAfterResponse).toBeGreaterThanOrEqual(32);
      if (i === 0) {
        totals.slowOk += h.load.slow!.counts.ok;
        expect(h.load.slow!.counts).toMatchObject({ ok: h.load.slow!.counts.total });
        expect(h.report!.durationMs).toBeGreaterThan(1000); // it waited for the slow response
      }
    }
    expect(totals.requests).toBeGreaterThan(2000);
    expect(totals.slowOk).toBeGreaterThanOrEqual(1);
    expect(totals.failures).toBe(0);
  }, 60_000);

  // Measured before writing the assertion: 20 naive handovers in 5 runs, each failed exactly 32 requests (one per
  // connection: each client sends its next request the moment its response arrives, so every idle close races it),
  // all ECONNRESET ("socket hang up" / "read ECONNRESET"). Asserting > 0 per handover leaves a wide margin.
  it('control: the naive server.close() + closeIdleConnections() fails requests in the same scenario', async () => {
    for (let i = 0; i < 4; i++) {
      const h = await handover('naive', false);
      expect(failures(h.load)).toBeGreaterThan(0);
      // The successor held the listener all along: the failures are resets, not refused connections.
      expect(h.load.counts.reset).toBe(failures(h.load));
    }
  }, 60_000);
});

describe('drainNet', () => {
  it('stops accepting, lets the application end connections, destroys the stuck one at timeoutMs', async () => {
    const server = trackConnections(net.createServer((s) => s.on('data', () => {})));
    const port = await listen(server);
    const polite = net.connect(port, '127.0.0.1');
    const stuck = net.connect(port, '127.0.0.1');
    polite.on('data', (d) => d.toString() === 'bye' && polite.end());
    stuck.resume(); // reading, so it sees the server's close
    const stuckClosed = new Promise((r) => stuck.once('close', r));
    await Promise.all([polite, stuck].map((s) => new Promise((r) => s.once('connect', r))));
    await sleep(50);
    const told: net.Socket[] = [];
    const report = await drainNet(server, {
      timeoutMs: 400,
      onDrain: (s) => {
        told.push(s);
        // The "protocol": only the polite peer understands it; the server ends the socket once the peer does.
        s.write('bye');
        s.on('end', () => s.end());
      },
    });
    expect(told).toHaveLength(2);
    expect(report).toMatchObject({ connections: 2, closed: 1, forced: 1 });
    await stuckClosed;
  });

  it('resolves at once when nothing is connected', async () => {
    const server = trackConnections(net.createServer());
    await listen(server);
    const report = await drainNet(server, { timeoutMs: 5000 });
    expect(report).toMatchObject({ connections: 0, closed: 0, forced: 0 });
    expect(server.listening).toBe(false);
  });
});
