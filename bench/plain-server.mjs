#!/usr/bin/env node
// The benchmark's control: examples/hello-http's handler on a plain `server.listen(port)`, without sd-handoff.
//
//   GET /      -> 200 "hello from <pid>"
//   GET /slow  -> 200 after 3 s
//
// bench/run.ts measures with it the library's steady-state cost (requests/s through sd-handoff / requests/s here)
// and the naive restart (SIGTERM, then start a new one on the same port). It installs no signal handler on purpose:
// SIGTERM ends it at once, as it ends most Node services that never thought about restarts.
//
// Environment: PORT, HOST (default 127.0.0.1), BALLAST_MB (MiB held resident, as in hello-http).
import http from 'node:http';

const env = process.env;
const ballastMb = /^\d+$/.test(env.BALLAST_MB ?? '') ? Number(env.BALLAST_MB) : 0;
// Touched page by page so the memory is resident, as a real heap would be.
const ballast = ballastMb > 0 ? Buffer.alloc(ballastMb * 1024 * 1024, 1) : undefined;

const server = http.createServer((req, res) => {
  if (req.url === '/slow') {
    setTimeout(() => res.end(`slow hello from ${process.pid}\n`), 3000);
    return;
  }
  res.end(`hello from ${process.pid}${ballast ? ` (${ballastMb} MiB)` : ''}\n`);
});
server.listen(Number(env.PORT ?? 8080), env.HOST || '127.0.0.1', () => {
  console.log(`plain-server ${process.pid} ready`);
});
