#!/usr/bin/env node
// hello-http worker: one of the WORKERS processes that a pooled hello-http (server.mjs with WORKERS=N) runs. It
// serves the listener "http" that the primary passes, holds BALLAST_MB of memory, drains on stop.
//
//   GET /      -> 200 "hello from <pid>"
//   GET /slow  -> 200 after 3 s (SLOW_MS)
//
// Environment (set on the primary, passed through):
//   BALLAST_MB              MiB of memory this worker holds (touched, so it is resident)
//   SLOW_MS                 how long GET /slow takes (default 3000)
//   WORKER_FAIL_FILE        if this file exists at start-up and does not hold the pid of this worker's primary, exit
//                           with status 3 before ready (fault injection; write the running primary's pid into it to
//                           break only the workers of the next version)
//   WORKER_HANG_ON_SIGUSR2  =1: SIGUSR2 makes this worker spin forever, so it stops answering health pings
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { Worker } from 'sd-handoff';

const env = process.env;
const ballastMb = /^\d+$/.test(env.BALLAST_MB ?? '') ? Number(env.BALLAST_MB) : 0;
const ballast = ballastMb > 0 ? Buffer.alloc(ballastMb * 1024 * 1024, 1) : undefined;
// Checked by the primary (server.mjs) before any worker starts.
const slowMs = /^\d+$/.test(env.SLOW_MS ?? '') ? Number(env.SLOW_MS) : 3000;

if (env.WORKER_FAIL_FILE && existsSync(env.WORKER_FAIL_FILE) && readFileSync(env.WORKER_FAIL_FILE, 'utf8').trim() !== String(process.ppid)) {
  console.error(`hello-http worker ${process.pid}: ${env.WORKER_FAIL_FILE} exists: failing on purpose before ready`);
  process.exit(3);
}
if (env.WORKER_HANG_ON_SIGUSR2 === '1') {
  process.on('SIGUSR2', () => {
    console.error(`hello-http worker ${process.pid}: SIGUSR2: hanging on purpose`);
    for (;;);
  });
}

const worker = await Worker.connect();
const server = http.createServer((req, res) => {
  if (req.url === '/slow') {
    setTimeout(() => res.end(`slow hello from ${process.pid}\n`), slowMs);
    return;
  }
  res.end(`hello from ${process.pid}${ballast ? ` (${ballastMb} MiB)` : ''}\n`);
});
await worker.listen('http', { server });
await worker.ready();
worker.on('exiting', () => console.log(`hello-http worker ${process.pid} exiting`));
