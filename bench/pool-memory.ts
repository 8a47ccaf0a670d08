/**
 * `npm run bench:pool`: the memory a pooled service needs during an upgrade, against its steady state.
 *
 * For each rollout setting (maxSurge 1 / maxUnavailable 0, then maxSurge 0 / maxUnavailable 1) it starts
 * examples/hello-http as a pool (WORKERS=4, BALLAST_MB=200 held by each worker, none by the primary) on 127.0.0.1,
 * drives keep-alive and new-connection load (bench/load.ts), and samples every 20 ms the RSS (and PSS) of every
 * process of the service: the primary it started and all their descendants, by pid and start time (bench/demo.ts's
 * ProcessTree). Then:
 *   1. steady: 2 s of samples;
 *   2. a primary upgrade by SIGHUP: the new primary brings its workers up one step at a time, asking the old one to
 *      retire one of its workers before (maxSurge 0) or after (maxSurge 1) each; done when the old primary exited;
 *   3. a rolling restart of the workers in place by SIGUSR2; done when the 4 workers are all new.
 * Reported: steady (mean) and peak summed RSS during each, their ratio, the primary's own RSS, failed requests by kind.
 * Writes bench/results/pool-memory.json and .md; exits 1 if a request failed or a bound was exceeded
 * (1.3 with maxSurge 1, 1.05 with maxSurge 0).
 *
 * Summed RSS counts the pages every Node process shares (the node binary's text, mapped once by the kernel) once per
 * process; PSS splits them, so the PSS columns are what the machine really spends. The bounds are checked on RSS.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProcessTree } from './demo.js';
import { startLoad, type Counts } from './load.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HELLO = path.join(ROOT, 'examples/hello-http/server.mjs');
const WORKERS = Number(process.env.POOL_WORKERS ?? 4);
const BALLAST_MB = Number(process.env.POOL_BALLAST_MB ?? 200);
const SAMPLE_MS = 20;
const STEADY_MS = 2000;

interface Mem {
  rssKb: number;
  pssKb: number;
}

function memOf(pid: number): Mem & { role: 'primary' | 'worker' | 'other' } {
  let rssKb = 0;
  let pssKb = 0;
  let role: 'primary' | 'worker' | 'other' = 'other';
  try {
    rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    pssKb = Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    role = cmd.includes('worker.mjs') ? 'worker' : cmd.includes('server.mjs') ? 'primary' : 'other';
  } catch {
    /* exited meanwhile */
  }
  return { rssKb, pssKb, role };
}

interface Sample extends Mem {
  t: number;
  processes: number;
  primaries: number;
  workers: number;
  primaryRssKb: number;
  /** role:RSS MiB of each process. */
  detail: string;
}

class Sampler {
  readonly samples: Sample[] = [];
  readonly #timer: NodeJS.Timeout;
  constructor(readonly tree: ProcessTree) {
    this.#timer = setInterval(() => this.sample(), SAMPLE_MS);
  }
  sample(): Sample {
    const live = this.tree.scan();
    const s: Sample = { t: performance.now(), rssKb: 0, pssKb: 0, processes: live.length, primaries: 0, workers: 0, primaryRssKb: 0, detail: '' };
    for (const pid of live) {
      const m = memOf(pid);
      s.detail += `${m.role[0]}${pid}:${Math.round(m.rssKb / 1024)} `;
      s.rssKb += m.rssKb;
      s.pssKb += m.pssKb;
      if (m.role === 'primary') {
        s.primaries++;
        s.primaryRssKb = Math.max(s.primaryRssKb, m.rssKb);
      } else if (m.role === 'worker') s.workers++;
    }
    this.samples.push(s);
    return s;
  }
  between(from: number, to: number): Sample[] {
    return this.samples.filter((s) => s.t >= from && s.t <= to);
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

function readPid(file: string): number | undefined {
  try {
    const t = readFileSync(file, 'utf8').trim();
    return /^\d+$/.test(t) ? Number(t) : undefined;
  } catch {
    return undefined;
  }
}

function childrenOf(tree: ProcessTree, pid: number): number[] {
  return tree.scan().filter((p) => {
    try {
      const st = readFileSync(`/proc/${p}/stat`, 'utf8');
      return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === pid;
    } catch {
      return false;
    }
  });
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function get(port: number): Promise<number> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', () => resolve(0));
  });
}

interface Phase {
  name: string;
  durationMs: number;
  peakRssKb: number;
  peakPssKb: number;
  ratioRss: number;
  ratioPss: number;
  peakProcesses: number;
  peakPrimaries: number;
  peakWorkers: number;
  /** The processes at the peak: p(rimary)/w(orker), pid, RSS MiB. */
  peakDetail: string;
}

interface Scenario {
  maxSurge: number;
  maxUnavailable: number;
  bound: number;
  steady: { rssKb: number; pssKb: number; primaryRssKb: number; workerRssKb: number; processes: number };
  phases: Phase[];
  load: { keepalive: Counts; newconn: Counts };
  ok: boolean;
}

async function scenario(maxSurge: number, maxUnavailable: number, bound: number): Promise<Scenario> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sdh-pool-bench-'));
  const pidFile = path.join(dir, 'hello.pid');
  const port = await freePort();
  const tree = new ProcessTree();
  let child: ChildProcess | undefined;
  let sampler: Sampler | undefined;
  try {
    child = spawn(process.execPath, [HELLO], {
      env: {
        PATH: process.env.PATH,
        WORKERS: String(WORKERS),
        BALLAST_MB: String(BALLAST_MB),
        MAX_SURGE: String(maxSurge),
        MAX_UNAVAILABLE: String(maxUnavailable),
        PORT: String(port),
        PIDFILE: pidFile,
        DRAIN_TIMEOUT_MS: '10000',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    tree.add(child.pid!);
    let primary = await waitFor('the PID file', () => readPid(pidFile));
    await waitFor(`${WORKERS} workers`, () => childrenOf(tree, primary).length === WORKERS);
    await waitFor('an answer', () => true);
    while ((await get(port)) !== 200) await sleep(50);
    sampler = new Sampler(tree);
    const url = `http://127.0.0.1:${port}/`;
    const ka = startLoad({ url, mode: 'keepalive', connections: 8, durationMs: 120_000 });
    const nc = startLoad({ url, mode: 'newconn', connections: 4, durationMs: 120_000 });
    await sleep(500);
    const t0 = performance.now();
    await sleep(STEADY_MS);
    const steadySamples = sampler.between(t0, performance.now());
    const mean = (f: (s: Sample) => number): number => Math.round(steadySamples.reduce((n, s) => n + f(s), 0) / steadySamples.length);
    const steady = {
      rssKb: mean((s) => s.rssKb),
      pssKb: mean((s) => s.pssKb),
      primaryRssKb: mean((s) => s.primaryRssKb),
      workerRssKb: Math.round((mean((s) => s.rssKb) - mean((s) => s.primaryRssKb)) / WORKERS),
      processes: Math.max(...steadySamples.map((s) => s.processes)),
    };

    const phases: Phase[] = [];
    const measure = async (name: string, run: () => Promise<void>): Promise<void> => {
      const from = performance.now();
      await run();
      const to = performance.now();
      const ss = sampler!.between(from, to);
      const peakRssKb = Math.max(...ss.map((s) => s.rssKb));
      const peakPssKb = Math.max(...ss.map((s) => s.pssKb));
      phases.push({
        name,
        durationMs: Math.round(to - from),
        peakRssKb,
        peakPssKb,
        ratioRss: peakRssKb / steady.rssKb,
        ratioPss: peakPssKb / steady.pssKb,
        peakProcesses: Math.max(...ss.map((s) => s.processes)),
        peakPrimaries: Math.max(...ss.map((s) => s.primaries)),
        peakWorkers: Math.max(...ss.map((s) => s.workers)),
        peakDetail: ss.find((s) => s.rssKb === peakRssKb)!.detail.trim(),
      });
      await sleep(1000);
    };

    await measure('primary upgrade (SIGHUP)', async () => {
      const old = primary;
      process.kill(old, 'SIGHUP');
      primary = await waitFor('the new primary', () => {
        const p = readPid(pidFile);
        return p !== undefined && p !== old ? p : undefined;
      });
      await waitFor('the old primary to exit', () => tree.exited(old));
      await waitFor(`${WORKERS} new workers`, () => childrenOf(tree, primary).length === WORKERS);
    });
    await measure('rolling restart of the workers (SIGUSR2)', async () => {
      const before = childrenOf(tree, primary);
      process.kill(primary, 'SIGUSR2');
      await waitFor(`${WORKERS} replaced workers`, () => {
        const now = childrenOf(tree, primary);
        return now.length === WORKERS && now.every((p) => !before.includes(p));
      });
    });
    const [k, n] = await Promise.all([ka.stop(), nc.stop()]);
    const failed = (c: Counts): number => c.total - c.ok;
    const ok = failed(k.counts) === 0 && failed(n.counts) === 0 && phases.every((p) => p.ratioRss <= bound);
    return { maxSurge, maxUnavailable, bound, steady, phases, load: { keepalive: k.counts, newconn: n.counts }, ok };
  } finally {
    sampler?.stop();
    for (const pid of tree.scan()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const mib = (kb: number): string => `${(kb / 1024).toFixed(0)} MiB`;

function markdown(results: Scenario[]): string {
  const lines = [
    `# Worker pool memory during upgrades`,
    '',
    `examples/hello-http, WORKERS=${WORKERS}, BALLAST_MB=${BALLAST_MB} per worker (none in the primary), keep-alive (8) + new-connection (4) load,`,
    `RSS and PSS of every process of the service sampled every ${SAMPLE_MS} ms. Node ${process.version}, ${os.cpus().length} CPUs. ${new Date().toISOString()}.`,
    '',
    '| maxSurge | maxUnavailable | phase | steady RSS | peak RSS | RSS ratio | bound | steady PSS | peak PSS | PSS ratio | peak primaries / workers | ms |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    for (const p of r.phases) {
      lines.push(
        `| ${r.maxSurge} | ${r.maxUnavailable} | ${p.name} | ${mib(r.steady.rssKb)} | ${mib(p.peakRssKb)} | ${p.ratioRss.toFixed(3)} | ${r.bound} | ${mib(r.steady.pssKb)} | ${mib(p.peakPssKb)} | ${p.ratioPss.toFixed(3)} | ${p.peakPrimaries} / ${p.peakWorkers} | ${p.durationMs} |`,
      );
    }
  }
  lines.push('', '| maxSurge | primary RSS | worker RSS | keep-alive ok / failed | new-connection ok / failed | within bound, 0 failed |', '|---|---|---|---|---|---|');
  for (const r of results) {
    const k = r.load.keepalive;
    const n = r.load.newconn;
    lines.push(`| ${r.maxSurge} | ${mib(r.steady.primaryRssKb)} | ${mib(r.steady.workerRssKb)} | ${k.ok} / ${k.total - k.ok} | ${n.ok} / ${n.total - n.ok} | ${r.ok ? 'yes' : 'NO'} |`);
  }
  for (const r of results) {
    for (const p of r.phases.filter((ph) => ph.ratioRss > r.bound)) {
      lines.push(
        '',
        `maxSurge ${r.maxSurge}, ${p.name}: peak RSS ${p.ratioRss.toFixed(3)}x is above the ${r.bound}x bound. At the peak: ${p.peakPrimaries} primaries and ` +
          `${p.peakWorkers} workers (${p.peakDetail}). While the new primary takes over, both primaries are alive; the second one costs about ` +
          `${mib(r.steady.primaryRssKb)} of RSS (${((100 * r.steady.primaryRssKb) / r.steady.rssKb).toFixed(1)} % of steady), most of it the node binary's pages ` +
          `that every Node process shares, which is why PSS grows only ${p.ratioPss.toFixed(3)}x. Keeping ${WORKERS} workers available minus maxUnavailable ` +
          `while two primaries exist needs that memory; meeting the bound would take maxUnavailable 2 or workers adopted by the new primary.`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<number> {
  // The example imports the built package.
  const build = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) return 1;
  const only = process.env.POOL_MAX_SURGE;
  const results: Scenario[] = [];
  if (only === undefined || only === '1') results.push(await scenario(1, 0, 1.3));
  if (only === undefined || only === '0') results.push(await scenario(0, 1, 1.05));
  const out = path.join(ROOT, 'bench/results');
  mkdirSync(out, { recursive: true });
  writeFileSync(path.join(out, 'pool-memory.json'), `${JSON.stringify({ node: process.version, workers: WORKERS, ballastMb: BALLAST_MB, at: new Date().toISOString(), results }, null, 2)}\n`);
  const md = markdown(results);
  writeFileSync(path.join(out, 'pool-memory.md'), md);
  process.stdout.write(md);
  return results.every((r) => r.ok) ? 0 : 1;
}

process.exitCode = await main();
