/**
 * `npm run bench` (`-- --quick` for everyday use): upgrades under load, measured side by side with a naive restart,
 * plus the library's steady-state cost and three scale cases. Writes results.json, results.md and timeline.svg to
 * bench/results/ (a --quick run to bench/results/quick/, which git ignores).
 *
 *   1. Upgrades under load. For each target (examples/hello-http as one process; as a pool, WORKERS=2; the naive
 *      restart of bench/plain-server.mjs: SIGTERM, wait, start a new one on the same port), each load mode of
 *      bench/load.ts (keep-alive; a new connection per request) and each ballast (0 and 200 MiB per process): a
 *      steady baseline, then U upgrades T seconds apart, then a short tail. Per case: failed requests per upgrade by
 *      kind, p50/p99/max steady vs during upgrades, trigger -> new serving -> old exited, peak summed RSS of all the
 *      service's processes during upgrades vs steady, and whether a 3 s GET /slow started 200 ms before each trigger
 *      completed.
 *   2. Steady-state cost: requests/s of hello-http through sd-handoff vs plain-server.mjs (same handler, plain
 *      `listen(port)`), in turns plain, sd-handoff, sd-handoff, plain (twice) so a drift of the machine's load cancels out.
 *   3. Scale: 1000 listening sockets handed over in one upgrade (test/fixtures/multi.mjs, every port asked after);
 *      10 000 idle keep-alive connections open across an upgrade (each closed by the old process with a FIN after its
 *      grace, or reset, or left open); upgrade time and memory vs pool size 1, 2, 4, 8.
 *
 * Why bench/load.ts and not autocannon: it counts every failed request by kind and never retries (autocannon
 * reconnects silently and hid ~800 resets out of 38 878 requests in our check; see load.ts's header).
 *
 * Bounded: everything targets 127.0.0.1; every load has a time limit; every process the bench starts (and its
 * descendants, found through /proc by pid and start time) is ended by pid on success, failure, SIGINT, SIGTERM and
 * at the hard overall bound. Not run in CI: the numbers need a quiet machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { classify, startLoad, summarize, type LoadMode, type LoadResult } from './load.js';
import { ensureBuilt, freePort, ProcessTree, readPid, ROOT, rssKb, sleep, waitFor } from './lib/proc.js';
import {
  aggregateCase,
  failed,
  markdown,
  type BenchResults,
  type CaseResult,
  type IdleResult,
  type ListenersResult,
  type MemSample,
  type PoolSizeResult,
  type TargetKind,
  type ThroughputResult,
  type UpgradeTiming,
} from './lib/report.js';
import { timelineSvg } from './lib/svg.js';

const HELLO = path.join(ROOT, 'examples/hello-http/server.mjs');
const PLAIN = path.join(ROOT, 'bench/plain-server.mjs');
const MULTI = path.join(ROOT, 'test/fixtures/multi.mjs');

const WINDOW_MS = 100;
const WARMUP_MS = 500;
const SAMPLE_EVERY_MS = 50;
/** The 3 s request is started this long before each trigger. */
const SLOW_LEAD_MS = 200;
const WAIT_UPGRADE_MS = 30_000;

export interface Settings {
  quick: boolean;
  baselineS: number;
  upgrades: number;
  intervalS: number;
  tailS: number;
  connections: number;
  ballasts: number[];
  poolWorkers: number;
  throughputTurnS: number;
  /** Rounds of plain, sd-handoff, sd-handoff, plain. */
  throughputRounds: number;
  listeners: number;
  idleConnections: number;
  poolSizes: number[];
  poolSizeBallastMb: number;
  /** The hard overall bound. */
  boundS: number;
}

export function settingsFor(quick: boolean): Settings {
  return quick
    ? {
        quick, baselineS: 2, upgrades: 2, intervalS: 3.5, tailS: 1, connections: 8, ballasts: [0], poolWorkers: 2,
        throughputTurnS: 1.5, throughputRounds: 1, listeners: 200, idleConnections: 2000, poolSizes: [1, 2], poolSizeBallastMb: 0, boundS: 180,
      }
    : {
        quick, baselineS: 5, upgrades: 5, intervalS: 4, tailS: 2, connections: 16, ballasts: [0, 200], poolWorkers: 2,
        throughputTurnS: 2.5, throughputRounds: 2, listeners: 1000, idleConnections: 10_000, poolSizes: [1, 2, 4, 8], poolSizeBallastMb: 200, boundS: 1500,
      };
}

// ---------------------------------------------------------------------------------------------------------------
// Cleanup: every process started, ended by pid however the bench ends

const trees = new Set<ProcessTree>();
const tempDirs = new Set<string>();

function killEverything(): void {
  for (const tree of trees) {
    // Twice: a process may have spawned a child between the scan and the signal.
    for (let i = 0; i < 2; i++) if (tree.signalAll('SIGKILL').length === 0) break;
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

// ---------------------------------------------------------------------------------------------------------------
// Small HTTP helpers

/** GET `url` on a new connection: status and the pid of "hello from <pid>", or an error kind. */
function hello(url: string, timeoutMs = 2000): Promise<{ status: number; pid?: number; error?: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        const m = /hello from (\d+)/.exec(body);
        resolve({ status: res.statusCode ?? 0, ...(m ? { pid: Number(m[1]) } : {}) });
      });
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ status: 0, error: `${classify(err).kind} ${classify(err).code}` }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'LOAD_TIMEOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: 0, error: `${classify(err).kind} ${classify(err).code}` }));
  });
}

/** Polls GET / on new connections until a process not in `before` answers; resolves with its pid. */
async function firstNewResponder(url: string, before: Set<number>, timeoutMs: number): Promise<number> {
  return waitFor(
    'a response from a new process',
    async () => {
      const r = await hello(url, 1000);
      return r.status === 200 && r.pid !== undefined && !before.has(r.pid) ? r.pid : undefined;
    },
    timeoutMs,
    5,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Services

interface Service {
  readonly target: TargetKind;
  readonly url: string;
  readonly tree: ProcessTree;
  /** One upgrade (or naive restart), times from the trigger. */
  upgrade(n: number): Promise<UpgradeTiming>;
  memory(): { kb: number; processes: number };
  /** Graceful stop, bounded, then SIGKILL by pid. */
  stop(): Promise<void>;
  output(): string;
}

interface StartSpec {
  target: TargetKind;
  ballastMb: number;
  workers: number;
}

function collect(child: ChildProcess, into: { text: string }): void {
  const keep = (d: Buffer): void => {
    into.text = (into.text + d.toString()).slice(-65_536);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
}

function memoryOf(tree: ProcessTree): { kb: number; processes: number } {
  const live = tree.scan();
  return { kb: live.reduce((n, pid) => n + rssKb(pid), 0), processes: live.length };
}

async function stopTree(tree: ProcessTree): Promise<void> {
  tree.signalAll('SIGTERM');
  await waitFor('the service to stop', () => (tree.scan().length === 0 ? true : undefined), 10_000, 25).catch(() => {});
  for (let i = 0; i < 2; i++) if (tree.signalAll('SIGKILL').length === 0) break;
  trees.delete(tree);
}

/** examples/hello-http (one process, or a pool with `workers` > 0), upgraded by SIGHUP to the pid in its PID file. */
async function startHello(spec: StartSpec, port?: number): Promise<Service> {
  const dir = tempDir('sdh-bench-');
  const p = port ?? (await freePort());
  const pidFile = path.join(dir, 'hello.pid');
  const env: NodeJS.ProcessEnv = {
    // Only what it needs: no NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*, JOURNAL_STREAM, SDH_UPGRADE from our environment.
    PATH: process.env.PATH,
    HOST: '127.0.0.1',
    PORT: String(p),
    PIDFILE: pidFile,
    SDH_CONTROL_SOCKET: path.join(dir, 'control.sock'),
    BALLAST_MB: String(spec.ballastMb),
    UPGRADE_TIMEOUT_MS: '20000',
    DRAIN_TIMEOUT_MS: '15000',
    ...(spec.workers > 0 ? { WORKERS: String(spec.workers) } : {}),
  };
  // Its own session, so a Ctrl-C in the terminal reaches only the bench, which then ends the service by pid.
  const child = spawn(process.execPath, [HELLO], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const tree = new ProcessTree();
  trees.add(tree);
  if (child.pid !== undefined) tree.add(child.pid);
  const out = { text: '' };
  collect(child, out);
  const url = `http://127.0.0.1:${p}/`;
  try {
    await waitFor(
      'hello-http to write its PID file and answer GET /',
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`hello-http exited before it was ready:\n${out.text}`);
        return readPid(pidFile) === child.pid && (await hello(url)).status === 200 ? true : undefined;
      },
      60_000,
      25,
    );
  } catch (err) {
    await stopTree(tree);
    removeDir(dir);
    throw err;
  }
  const mainPid = (): number | undefined => {
    const pid = readPid(pidFile);
    if (pid !== undefined) tree.add(pid);
    return pid;
  };
  return {
    target: spec.workers > 0 ? 'pool' : 'sd-handoff',
    url,
    tree,
    memory: () => memoryOf(tree),
    output: () => out.text,
    stop: async () => {
      await stopTree(tree);
      child.stdout?.destroy();
      child.stderr?.destroy();
      removeDir(dir);
    },
    upgrade: async (n) => {
      const oldPid = mainPid()!;
      const before = new Set(tree.scan());
      const rec: UpgradeTiming = { n, oldPid };
      const t0 = performance.now();
      const since = (): number => Math.round(performance.now() - t0);
      process.kill(oldPid, 'SIGHUP');
      try {
        await Promise.all([
          waitFor(`the PID file to name a new pid (upgrade ${n})`, () => {
            const pid = mainPid();
            return pid !== undefined && pid !== oldPid ? pid : undefined;
          }, WAIT_UPGRADE_MS).then((pid) => {
            rec.newPid = pid;
            rec.pidFileMs = since();
          }),
          firstNewResponder(url, before, WAIT_UPGRADE_MS).then(() => (rec.servingMs = since())),
          waitFor(`every old process to exit (upgrade ${n})`, () => ([...before].every((pid) => tree.exited(pid)) ? true : undefined), WAIT_UPGRADE_MS).then(
            () => (rec.oldExitMs = since()),
          ),
        ]);
      } catch (err) {
        rec.error = (err as Error).message;
      }
      return rec;
    },
  };
}

/** bench/plain-server.mjs, restarted naively: SIGTERM, wait for it to exit, start a new one on the same port. */
async function startPlain(ballastMb: number, port?: number): Promise<Service> {
  const p = port ?? (await freePort());
  const url = `http://127.0.0.1:${p}/`;
  const tree = new ProcessTree();
  trees.add(tree);
  const out = { text: '' };
  let current: ChildProcess;
  const launch = (): ChildProcess => {
    const child = spawn(process.execPath, [PLAIN], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: String(p), BALLAST_MB: String(ballastMb) },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    if (child.pid !== undefined) tree.add(child.pid);
    collect(child, out);
    return child;
  };
  const ready = (child: ChildProcess): Promise<true> =>
    waitFor(
      'plain-server to answer GET /',
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`plain-server exited before it was ready:\n${out.text}`);
        const r = await hello(url, 1000);
        return r.status === 200 && r.pid === child.pid ? true : undefined;
      },
      WAIT_UPGRADE_MS,
      5,
    );
  current = launch();
  await ready(current).catch(async (err: unknown) => {
    await stopTree(tree);
    throw err;
  });
  return {
    target: 'naive',
    url,
    tree,
    memory: () => memoryOf(tree),
    output: () => out.text,
    stop: () => stopTree(tree),
    upgrade: async (n) => {
      const old = current;
      const oldPid = old.pid!;
      const rec: UpgradeTiming = { n, oldPid };
      const t0 = performance.now();
      const since = (): number => Math.round(performance.now() - t0);
      try {
        old.kill('SIGTERM');
        await waitFor(`plain-server ${oldPid} to exit`, () => (tree.exited(oldPid) ? true : undefined), WAIT_UPGRADE_MS, 2);
        rec.oldExitMs = since();
        current = launch();
        rec.newPid = current.pid;
        rec.pidFileMs = since();
        await ready(current);
        rec.servingMs = since();
      } catch (err) {
        rec.error = (err as Error).message;
      }
      return rec;
    },
  };
}

function start(spec: StartSpec): Promise<Service> {
  return spec.target === 'naive' ? startPlain(spec.ballastMb) : startHello(spec);
}

/** One 3 s GET /slow on its own connection: did it complete with 200, and if not, how did it end. */
function slowRequest(url: string): Promise<{ ok: boolean; outcome: string }> {
  return new Promise((resolve) => {
    const req = http.get(new URL('/slow', url), { agent: false, timeout: 15_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ ok: res.statusCode === 200, outcome: `HTTP ${res.statusCode}` }));
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, outcome: `${classify(err).kind} ${classify(err).code}` }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'LOAD_TIMEOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, outcome: `${classify(err).kind} ${classify(err).code}` }));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Upgrades under load

interface CaseSpec extends StartSpec {
  name: string;
  mode: LoadMode;
  upgrades: number;
  connections: number;
}

async function runCase(spec: CaseSpec, s: Settings, log: (line: string) => void): Promise<CaseResult> {
  const svc = await start(spec);
  try {
    const boundMs = (s.baselineS + s.tailS + spec.upgrades * (s.intervalS + 10) + 30) * 1000;
    const load = startLoad({ url: svc.url, mode: spec.mode, connections: spec.connections, durationMs: Math.round(boundMs), windowMs: WINDOW_MS });
    const memory: MemSample[] = [];
    const sampler = setInterval(() => memory.push({ t: load.elapsed(), ...svc.memory() }), SAMPLE_EVERY_MS);
    const upgrades: UpgradeTiming[] = [];
    const slows: Array<Promise<void>> = [];
    try {
      await sleep(s.baselineS * 1000 - SLOW_LEAD_MS);
      let nextAt = performance.now();
      for (let n = 1; n <= spec.upgrades; n++) {
        await sleep(Math.max(0, nextAt - performance.now()));
        const slow = slowRequest(svc.url);
        await sleep(SLOW_LEAD_MS);
        load.mark(`upgrade ${n}`);
        nextAt = performance.now() + s.intervalS * 1000 - SLOW_LEAD_MS;
        const rec = await svc.upgrade(n);
        load.mark(`done ${n}`);
        upgrades.push(rec);
        slows.push(slow.then((r) => void Object.assign(rec, { slowOk: r.ok, ...(r.ok ? {} : { slowOutcome: r.outcome }) })));
        if (rec.error) {
          log(`  ${spec.name}: upgrade ${n} FAILED: ${rec.error}\n${svc.output().slice(-2000)}`);
          break;
        }
      }
      await sleep(s.tailS * 1000);
    } finally {
      load.stop();
    }
    const result = await load.done;
    clearInterval(sampler);
    await Promise.all(slows);
    const c = aggregateCase({
      name: spec.name,
      target: spec.target,
      mode: spec.mode,
      ballastMb: spec.ballastMb,
      workers: spec.workers,
      upgradesAsked: spec.upgrades,
      upgrades,
      load: result,
      memory,
      warmupMs: WARMUP_MS,
      binMs: 250,
    });
    log(
      `  ${spec.name}: ${c.upgradesDone}/${c.upgradesAsked} upgrades, failed ${failed(c.counts)}/${c.counts.total} ` +
        `(${c.errorsPerUpgrade.total}/upgrade), p99 ${c.steady.latency.p99} -> ${c.during.latency.p99} ms, ` +
        `serving ${c.upgradeMs.serving?.median ?? '-'} ms, old exited ${c.upgradeMs.oldExit?.median ?? '-'} ms, ` +
        `RSS ${Math.round(c.memory.steadyKb / 1024)} -> ${Math.round(c.memory.peakKb / 1024)} MiB, /slow ${c.slow.completed}/${c.slow.started}`,
    );
    return c;
  } finally {
    await svc.stop();
  }
}

export function matrix(s: Settings): CaseSpec[] {
  const out: CaseSpec[] = [];
  for (const ballastMb of s.ballasts) {
    for (const mode of ['keepalive', 'newconn'] as const) {
      for (const [target, workers] of [['sd-handoff', 0], ['pool', s.poolWorkers], ['naive', 0]] as const) {
        out.push({
          name: `${target === 'pool' ? `pool${workers}` : target}/${mode}/${ballastMb}MiB`,
          target,
          workers,
          mode,
          ballastMb,
          upgrades: s.upgrades,
          connections: s.connections,
        });
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Steady-state cost

function okRate(r: LoadResult): { ok: number; seconds: number; failed: number } {
  const s = summarize(r, WARMUP_MS);
  const seconds = r.windows.filter((w) => w.t >= WARMUP_MS).length * (WINDOW_MS / 1000);
  return { ok: s.counts.ok, seconds, failed: failed(r.counts) };
}

async function throughput(s: Settings, log: (line: string) => void): Promise<ThroughputResult[]> {
  const plain = await startPlain(0);
  const sdh = await startHello({ target: 'sd-handoff', ballastMb: 0, workers: 0 });
  const out: ThroughputResult[] = [];
  try {
    for (const mode of ['keepalive', 'newconn'] as const) {
      // ABBA, `throughputRounds` times: a drift of the machine's load over the turns hits both servers alike.
      const abba: Array<[string, Service]> = [['plain', plain], ['sd-handoff', sdh], ['sd-handoff', sdh], ['plain', plain]];
      const turns = Array.from({ length: s.throughputRounds }, () => abba).flat();
      const sum = { plain: { ok: 0, seconds: 0 }, 'sd-handoff': { ok: 0, seconds: 0 } } as Record<string, { ok: number; seconds: number }>;
      let failedAll = 0;
      for (const [name, svc] of turns) {
        const r = await startLoad({
          url: svc.url,
          mode,
          connections: s.connections,
          durationMs: Math.round((s.throughputTurnS + WARMUP_MS / 1000) * 1000),
          windowMs: WINDOW_MS,
        }).done;
        const k = okRate(r);
        sum[name]!.ok += k.ok;
        sum[name]!.seconds += k.seconds;
        failedAll += k.failed;
      }
      const plainRps = Math.round(sum.plain!.ok / sum.plain!.seconds);
      const sdRps = Math.round(sum['sd-handoff']!.ok / sum['sd-handoff']!.seconds);
      const row: ThroughputResult = {
        mode,
        connections: s.connections,
        secondsPerTurn: s.throughputTurnS,
        turns: turns.length,
        plainRps,
        sdHandoffRps: sdRps,
        ratio: Math.round((sdRps / plainRps) * 1000) / 1000,
        failed: failedAll,
      };
      log(`  throughput ${mode}: plain ${plainRps} req/s, sd-handoff ${sdRps} req/s, ratio ${row.ratio}`);
      out.push(row);
    }
  } finally {
    await Promise.all([plain.stop(), sdh.stop()]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Scale

/** Connects, reads until the peer ends, resolves with what it said (or the error code). */
function readAll(opts: net.NetConnectOpts): Promise<string> {
  return new Promise((resolve) => {
    let data = '';
    const s = net.connect(opts);
    s.setTimeout(5000, () => s.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    s.on('data', (d) => (data += d.toString()));
    s.on('end', () => resolve(data.trim()));
    s.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`));
  });
}

function udpAsk(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => (s.close(), resolve('error no UDP answer')), 5000);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m.toString().trim());
    });
    s.send('ping', port, '127.0.0.1');
  });
}

/** Runs `fns` with at most `limit` at once. */
async function pooled<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

async function listenersCase(count: number, log: (line: string) => void): Promise<ListenersResult> {
  const dir = tempDir('sdh-bench-multi-');
  const tree = new ProcessTree();
  trees.add(tree);
  const out = { text: '' };
  const child = spawn(process.execPath, [MULTI], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      COUNT: String(count),
      PIDFILE: path.join(dir, 'multi.pid'),
      CONTROL: path.join(dir, 'control.sock'),
      SOCK_DIR: dir,
      ABSTRACT: `sdh-bench-${process.pid}-${Date.now()}`,
      UPGRADE_TIMEOUT_MS: '60000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  if (child.pid !== undefined) tree.add(child.pid);
  collect(child, out);
  type Ready = { ready: number; ports: Record<string, number | string> };
  const readyAfter = (from: number, what: string): Promise<Ready> =>
    waitFor(what, () => {
      const line = out.text.slice(from).split('\n').find((l) => l.startsWith('{"ready"'));
      return line ? (JSON.parse(line) as Ready) : undefined;
    }, 90_000, 10);
  const failures: string[] = [];
  try {
    const first = await readyAfter(0, `multi.mjs with ${count} listeners to be ready`);
    log(`  listeners: ${JSON.stringify({ ready: first.ready, ports: `${Object.keys(first.ports).length} listeners` })}`);
    tree.add(first.ready);
    const from = out.text.length;
    const t0 = performance.now();
    process.kill(first.ready, 'SIGHUP');
    const second = await readyAfter(from, 'the upgraded multi.mjs ready line');
    const readyMs = Math.round(performance.now() - t0);
    tree.add(second.ready);
    await waitFor('the old multi.mjs to exit', () => (tree.exited(first.ready) ? true : undefined), 60_000, 5);
    const oldExitMs = Math.round(performance.now() - t0);
    log(`  listeners: ready line of the new process: {"ready":${second.ready},...} after ${readyMs} ms; old exited after ${oldExitMs} ms`);
    if (JSON.stringify(second.ports) !== JSON.stringify(first.ports)) failures.push('the new process reports other ports than the old one');
    const names = Object.keys(second.ports).filter((n) => n !== 'abstract');
    let answeredByNew = 0;
    const c0 = performance.now();
    await pooled(names, 100, async (name) => {
      const port = second.ports[name]!;
      const said =
        name === 'udp' ? await udpAsk(port as number)
        : name === 'unix' ? await readAll({ path: port as string })
        : name === 'v6' ? await readAll({ host: '::1', port: port as number })
        : await readAll({ host: '127.0.0.1', port: port as number });
      if (said === `${name} ${second.ready}`) answeredByNew++;
      else if (failures.length < 10) failures.push(`${name} answered ${JSON.stringify(said)}`);
    });
    const checkMs = Math.round(performance.now() - c0);
    return { listeners: Object.keys(second.ports).length, readyMs, oldExitMs, checked: names.length, answeredByNew, checkMs, failures };
  } finally {
    await stopTree(tree);
    child.stdout?.destroy();
    child.stderr?.destroy();
    removeDir(dir);
  }
}

interface IdleSocket {
  socket: net.Socket;
  responses: number;
  closed?: { how: 'fin' | 'error'; code?: string; at: number };
}

/** Opens `count` keep-alive connections, each sends a request, then idles; upgrades; sees how each one ended. */
async function idleCase(count: number, log: (line: string) => void): Promise<IdleResult> {
  const svc = await startHello({ target: 'sd-handoff', ballastMb: 0, workers: 0 });
  const port = Number(new URL(svc.url).port);
  const conns: IdleSocket[] = [];
  const failures: string[] = [];
  let clock0 = performance.now();
  const request = (c: IdleSocket): Promise<void> =>
    new Promise((resolve) => {
      const want = c.responses + 1;
      const check = (): void => {
        if (c.responses >= want || c.closed) {
          c.socket.off('data', check);
          c.socket.off('close', check);
          resolve();
        }
      };
      c.socket.on('data', check);
      c.socket.on('close', check);
      c.socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    });
  const open = (): Promise<void> =>
    new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const c: IdleSocket = { socket, responses: 0 };
      conns.push(c);
      let buf = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => {
        buf += d;
        // One response per "hello from <pid>\n" body (hello-http's answer to GET /).
        for (let m = /hello from \d+\n/.exec(buf); m; m = /hello from \d+\n/.exec(buf)) {
          c.responses++;
          buf = buf.slice(m.index + m[0].length);
        }
      });
      socket.on('end', () => (c.closed ??= { how: 'fin', at: performance.now() - clock0 }));
      socket.on('error', (err: NodeJS.ErrnoException) => (c.closed = { how: 'error', code: err.code ?? err.message, at: performance.now() - clock0 }));
      socket.on('connect', () => void request(c).then(resolve));
      socket.on('close', () => resolve());
    });
  try {
    const o0 = performance.now();
    await pooled(Array.from({ length: count }, (_, i) => i), 200, () => open());
    const openMs = Math.round(performance.now() - o0);
    // Node closes a keep-alive connection idle for keepAliveTimeout (5 s): ask once more on every connection right
    // before the upgrade, so all of them are idle for less than that when it starts.
    await pooled(conns.filter((c) => !c.closed), 500, (c) => request(c));
    const idle = conns.filter((c) => !c.closed && c.responses >= 2);
    log(`  idle: ${conns.length} connections opened in ${openMs} ms; ${idle.length} open and idle before the upgrade`);
    if (idle.length < count) failures.push(`${count - idle.length} of ${count} connections were not open and idle when the upgrade started`);
    const steadyKb = svc.memory().kb;
    let peakKb = steadyKb;
    const sampler = setInterval(() => (peakKb = Math.max(peakKb, svc.memory().kb)), SAMPLE_EVERY_MS);
    clock0 = performance.now();
    const rec = await svc.upgrade(1);
    if (rec.error) failures.push(`upgrade: ${rec.error}`);
    await waitFor('every idle connection to close', () => (idle.every((c) => c.closed) ? true : undefined), 20_000, 20).catch(() => {});
    clearInterval(sampler);
    const fin = idle.filter((c) => c.closed?.how === 'fin').length;
    const errors = idle.filter((c) => c.closed?.how === 'error');
    const reset = errors.filter((c) => c.closed!.code === 'ECONNRESET').length;
    const otherErrors: Record<string, number> = {};
    for (const c of errors) if (c.closed!.code !== 'ECONNRESET') otherErrors[c.closed!.code!] = (otherErrors[c.closed!.code!] ?? 0) + 1;
    const lastCloseMs = Math.round(Math.max(0, ...idle.map((c) => c.closed?.at ?? 0)));
    return {
      connections: count,
      idleAtUpgrade: idle.length,
      fin,
      reset,
      otherErrors,
      stillOpen: idle.filter((c) => !c.closed).length,
      drainMs: rec.oldExitMs ?? -1,
      lastCloseMs,
      servingMs: rec.servingMs ?? -1,
      peakKb,
      steadyKb,
      failures,
    };
  } finally {
    for (const c of conns) c.socket.destroy();
    await svc.stop();
  }
}

async function poolSizeCase(workers: number, s: Settings, log: (line: string) => void): Promise<PoolSizeResult> {
  const spec: CaseSpec = {
    name: `pool-size/${workers}`,
    target: 'pool',
    workers,
    ballastMb: s.poolSizeBallastMb,
    mode: 'keepalive',
    upgrades: 1,
    connections: 8,
  };
  try {
    const c = await runCase(spec, { ...s, baselineS: Math.min(s.baselineS, 3), tailS: 1 }, log);
    const u = c.upgrades[0];
    return {
      workers,
      ballastMb: s.poolSizeBallastMb,
      servingMs: u?.servingMs ?? null,
      pidFileMs: u?.pidFileMs ?? null,
      oldExitMs: u?.oldExitMs ?? null,
      steadyKb: c.memory.steadyKb,
      peakKb: c.memory.peakKb,
      ratio: c.memory.ratio,
      peakProcesses: c.memory.peakProcesses,
      requests: c.counts.total,
      failed: failed(c.counts),
      ...(u?.error ? { error: u.error } : {}),
    };
  } catch (err) {
    return {
      workers, ballastMb: s.poolSizeBallastMb, servingMs: null, pidFileMs: null, oldExitMs: null, steadyKb: 0, peakKb: 0, ratio: 0,
      peakProcesses: 0, requests: 0, failed: 0, error: (err as Error).message.split('\n')[0]!,
    };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// main

const USAGE = `usage: npm run bench -- [--quick] [--only REGEX] [--out DIR]
  --quick      about 2 minutes: ballast 0 only, 2 upgrades per case, smaller scale cases (written to bench/results/quick/)
  --only RE    run only the parts whose name matches: case names (sd-handoff/keepalive/0MiB, pool2/newconn/200MiB,
               naive/...), throughput, listeners, idle, pool-size/N
  --out DIR    where to write results.json, results.md and timeline.svg (default bench/results/)`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const s = settingsFor(values.quick);
  const only = values.only ? new RegExp(values.only) : undefined;
  const want = (name: string): boolean => !only || only.test(name);
  const outDir = path.resolve(values.out ?? path.join(ROOT, 'bench/results', s.quick ? 'quick' : ''));
  const log = (line: string): void => void process.stdout.write(`${line}\n`);
  const t0 = performance.now();
  const loadavgStart = os.loadavg();
  log(`sd-handoff bench${s.quick ? ' --quick' : ''}: load average ${loadavgStart.map((x) => x.toFixed(2)).join(' ')}, ${os.cpus().length} cpus, Node ${process.version}`);
  ensureBuilt(log);

  const results: BenchResults = {
    meta: {
      date: new Date().toISOString(),
      quick: s.quick,
      node: process.version,
      kernel: os.release(),
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
      memTotalMiB: Math.round(os.totalmem() / 2 ** 20),
      loadavgStart,
      loadavgEnd: [],
      durationMs: 0,
      settings: { ...s, ballasts: s.ballasts.join(','), poolSizes: s.poolSizes.join(',') },
    },
    cases: [],
    throughput: [],
    listeners: null,
    idle: null,
    poolSizes: [],
    failures: [],
  };
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      results.failures.push(`${what}: ${(err as Error).message.split('\n')[0]}`);
      log(`  ${what}: FAILED: ${(err as Error).message}`);
      return undefined;
    }
  };

  log('upgrades under load:');
  for (const spec of matrix(s).filter((c) => want(c.name))) {
    const c = await attempt(spec.name, () => runCase(spec, s, log));
    if (!c) continue;
    results.cases.push(c);
    if (c.target !== 'naive') {
      if (failed(c.counts) > 0) results.failures.push(`${c.name}: ${failed(c.counts)} of ${c.counts.total} requests failed`);
      if (c.slow.completed < c.slow.started) results.failures.push(`${c.name}: ${c.slow.started - c.slow.completed} of ${c.slow.started} /slow requests did not complete`);
    }
    if (c.upgradesDone < c.upgradesAsked) results.failures.push(`${c.name}: ${c.upgradesDone} of ${c.upgradesAsked} upgrades done`);
  }
  if (want('throughput')) {
    log('steady-state cost:');
    results.throughput = (await attempt('throughput', () => throughput(s, log))) ?? [];
  }
  if (want('listeners')) {
    log(`scale: ${s.listeners} listening sockets in one upgrade:`);
    results.listeners = (await attempt('listeners', () => listenersCase(s.listeners, log))) ?? null;
    if (results.listeners) results.failures.push(...results.listeners.failures.map((f) => `listeners: ${f}`));
  }
  if (want('idle')) {
    log(`scale: ${s.idleConnections} idle keep-alive connections across an upgrade:`);
    results.idle = (await attempt('idle', () => idleCase(s.idleConnections, log))) ?? null;
    if (results.idle) {
      const i = results.idle;
      log(`  idle: ${i.fin} FIN, ${i.reset} reset, ${JSON.stringify(i.otherErrors)} other, ${i.stillOpen} still open; old exited after ${i.drainMs} ms, last closed after ${i.lastCloseMs} ms`);
      results.failures.push(...i.failures.map((f) => `idle: ${f}`));
      if (i.reset > 0) results.failures.push(`idle: ${i.reset} idle connections were reset`);
    }
  }
  const sizes = s.poolSizes.filter((w) => want(`pool-size/${w}`));
  if (sizes.length) log(`scale: upgrade time and memory vs pool size (${s.poolSizeBallastMb} MiB per worker):`);
  for (const w of sizes) {
    const r = await poolSizeCase(w, s, log);
    results.poolSizes.push(r);
    if (r.error) results.failures.push(`pool-size/${w}: ${r.error}`);
  }

  results.meta.loadavgEnd = os.loadavg();
  results.meta.durationMs = Math.round(performance.now() - t0);
  mkdirSync(outDir, { recursive: true });
  const md = markdown(results);
  writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify(results, null, 1)}\n`);
  writeFileSync(path.join(outDir, 'results.md'), md);
  writeFileSync(
    path.join(outDir, 'timeline.svg'),
    timelineSvg(results.cases, { title: `sd-handoff: upgrades under load vs naive restart${s.quick ? ' (--quick)' : ''}, ${results.meta.date.slice(0, 10)}` }),
  );
  log(`\n${md}`);
  log(`wrote ${path.relative(process.cwd(), outDir) || '.'}/results.json, results.md, timeline.svg in ${(results.meta.durationMs / 1000).toFixed(0)} s`);
  if (results.failures.length) log(`FAILURES:\n${results.failures.map((f) => `  ${f}`).join('\n')}`);
  return results.failures.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const argv = process.argv.slice(2);
  const boundS = settingsFor(argv.includes('--quick')).boundS;
  const bound = setTimeout(() => {
    process.stderr.write(`bench: still running after ${boundS} s: ending every process it started\n`);
    killEverything();
    process.exit(1);
  }, boundS * 1000);
  for (const [sig, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(sig, () => {
      process.stderr.write(`bench: ${sig}: ending every process it started\n`);
      killEverything();
      process.exit(status);
    });
  }
  process.on('exit', killEverything);
  main(argv).then(
    (status) => {
      clearTimeout(bound);
      killEverything();
      process.exit(status);
    },
    (err: unknown) => {
      process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
      killEverything();
      process.exit(1);
    },
  );
}
