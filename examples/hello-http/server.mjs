#!/usr/bin/env node
// hello-http: the reference service of sd-handoff (and the benchmark's target).
//
//   GET /      -> 200 "hello from <pid>"
//   GET /slow  -> 200 after 3 s (SLOW_MS)
//
// Listens on the socket named "http" passed by systemd (socket activation or the fd store) or by the upgrading
// parent, else binds HOST:PORT (default 127.0.0.1:8080). Upgrades itself on SIGHUP (or through the control socket
// at $SDH_CONTROL_SOCKET) with zero dropped requests; writes its PID file at $PIDFILE before it reports ready.
//
// Environment:
//   PORT, HOST        where to bind when no socket is passed
//   PIDFILE           PID file path (what PIDFile= reads)
//   BALLAST_MB        MiB of memory each process holds (touched, so it is resident), to measure upgrade memory
//   FDSTORE=1         keep the listener in systemd's fd store (survives systemctl restart and crashes)
//   DRAIN_TIMEOUT_MS  how long the old version may drain (default 30000)
//   UPGRADE_TIMEOUT_MS how long a new version may take to become ready (default 60000)
//   HELLO_FAIL_FILE   if this file exists at start-up, exit with status 3 before ready (fault injection)
//   HELLO_HANG_FILE   if this file exists at start-up, never become ready (fault injection)
//   SLOW_MS           how long GET /slow takes (default 3000)
//
// Pool mode, when WORKERS=N is set: this process is only the primary (small, no ballast). It holds the listener
// and runs N × worker.mjs accepting on it; BALLAST_MB is held by each worker. SIGHUP (or the control socket)
// upgrades the primary, which replaces the workers one step at a time (MAX_SURGE, default 1; MAX_UNAVAILABLE,
// default 0); SIGUSR2 restarts the workers in place (pool.rollingRestart()). The PID file names the primary.
//   WORKERS, MAX_SURGE, MAX_UNAVAILABLE, HEALTH_INTERVAL_MS, HEALTH_TIMEOUT_MS, and for the workers
//   WORKER_FAIL_FILE, WORKER_HANG_ON_SIGUSR2 (see worker.mjs)
import { existsSync } from 'node:fs';
import http from 'node:http';
import { Upgrader, WorkerPool } from 'sd-handoff';

const env = process.env;
const intEnv = (name, fallback) => {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  if (!/^\d+$/.test(v)) {
    console.error(`hello-http: ${name}=${JSON.stringify(v)} is not a non-negative integer`);
    process.exit(2);
  }
  return Number(v);
};
const slowMs = intEnv('SLOW_MS', 3000);

if (env.WORKERS) {
  const upg = await Upgrader.create({
    pidFile: env.PIDFILE || undefined,
    drainTimeoutMs: intEnv('DRAIN_TIMEOUT_MS', 30_000),
    upgradeTimeoutMs: intEnv('UPGRADE_TIMEOUT_MS', 60_000),
    fdStore: env.FDSTORE === '1',
  });
  const pool = await WorkerPool.create({
    upgrader: upg,
    script: new URL('./worker.mjs', import.meta.url).pathname,
    workers: intEnv('WORKERS', 1),
    maxSurge: intEnv('MAX_SURGE', 1),
    maxUnavailable: intEnv('MAX_UNAVAILABLE', 0),
    listeners: [{ name: 'http', address: { port: intEnv('PORT', 8080), host: env.HOST || '127.0.0.1' } }],
    drainTimeoutMs: intEnv('DRAIN_TIMEOUT_MS', 30_000),
    healthIntervalMs: intEnv('HEALTH_INTERVAL_MS', 5000),
    healthTimeoutMs: intEnv('HEALTH_TIMEOUT_MS', 3000),
  });
  try {
    await pool.start();
  } catch (err) {
    console.error(`hello-http primary ${process.pid}: workers failed: ${err.message}`);
    process.exit(1);
  }
  await upg.ready(`hello-http serving with ${pool.workers().length} workers`);
  console.log(`hello-http primary ${process.pid} ready with workers ${pool.workers().map((w) => w.pid).join(' ')}`);
  process.on('SIGUSR2', () => {
    pool.rollingRestart().then(
      (r) => console.log(`hello-http primary ${process.pid}: rolling restart done in ${r.durationMs} ms`),
      (err) => console.error(`hello-http primary ${process.pid}: rolling restart failed: ${err.message}`),
    );
  });
  upg.on('exiting', () => console.log(`hello-http primary ${process.pid} exiting`));
} else {
  const ballastMb = intEnv('BALLAST_MB', 0);
  // Touched page by page so the memory is resident, as a real heap would be.
  const ballast = ballastMb > 0 ? Buffer.alloc(ballastMb * 1024 * 1024, 1) : undefined;

  if (env.HELLO_FAIL_FILE && existsSync(env.HELLO_FAIL_FILE)) {
    console.error(`hello-http ${process.pid}: ${env.HELLO_FAIL_FILE} exists: failing on purpose before ready`);
    process.exit(3);
  }

  const upg = await Upgrader.create({
    pidFile: env.PIDFILE || undefined,
    drainTimeoutMs: intEnv('DRAIN_TIMEOUT_MS', 30_000),
    upgradeTimeoutMs: intEnv('UPGRADE_TIMEOUT_MS', 60_000),
    fdStore: env.FDSTORE === '1',
  });

  const server = http.createServer((req, res) => {
    if (req.url === '/slow') {
      setTimeout(() => res.end(`slow hello from ${process.pid}\n`), slowMs);
      return;
    }
    res.end(`hello from ${process.pid}${ballast ? ` (${ballastMb} MiB)` : ''}\n`);
  });

  await upg.listen('http', { port: intEnv('PORT', 8080), host: env.HOST || '127.0.0.1' }, { server });

  if (env.HELLO_HANG_FILE && existsSync(env.HELLO_HANG_FILE)) {
    console.error(`hello-http ${process.pid}: ${env.HELLO_HANG_FILE} exists: never becoming ready`);
    await new Promise(() => {});
  }

  await upg.ready(`hello-http serving on ${JSON.stringify(server.address())}`);
  console.log(`hello-http ${process.pid} ready`);
  upg.on('exiting', () => console.log(`hello-http ${process.pid} exiting`));
}
