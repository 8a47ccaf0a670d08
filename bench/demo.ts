/**
 * `npm run demo`: examples/hello-http upgraded N times by SIGHUP under load, and a table of what its clients saw.
 *
 * What it does, on 127.0.0.1 only and without systemd (NOTIFY_SOCKET and the other systemd variables are not
 * passed on: the service runs as "not under systemd"):
 *   1. compiles dist/ when dist/index.js is missing or older than src/ (the example imports `sd-handoff`, i.e. dist/);
 *   2. starts hello-http on a free port, with PIDFILE and SDH_CONTROL_SOCKET in a temporary directory;
 *   3. drives keep-alive and new-connection load at once (bench/load.ts) plus two loops on /slow (3 s requests);
 *      after a steady baseline, upgrades it N times by SIGHUP to the pid its PID file names, one after another
 *      about `--interval` seconds apart: an upgrade lasts from the signal until the old process has exited;
 *   4. samples every 50 ms the RSS of every process of the service (the pids it started and their descendants,
 *      found through /proc/<pid>/stat; a pid is identified by pid and start time, so a reused pid is never
 *      mistaken for ours);
 *   5. prints per load mode the requests and every failure by kind, latency steady vs during upgrades, upgrade
 *      durations, /slow requests completed, memory steady vs peak, the pids; exits 1 if any request failed or an
 *      upgrade failed or timed out, 2 on bad options, 0 otherwise.
 * Every process it started is ended by pid (pid + start time checked) on success, failure, Ctrl-C, SIGTERM and
 * after a hard overall bound; the temporary directory is removed.
 *
 * `--systemd` will run the same measurement against the real-systemd lab (`systemctl reload`, MainPID, the
 * unit's cgroup): that is a {@link Target}; the lab's one is not written yet.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { controlRequest } from '../src/upgrade/control.js';
import { startLoad, summarize, type Counts, type LatencySummary, type Load, type LoadResult } from './load.js';
import { ensureBuilt, freePort, get, ProcessTree, readPid, ROOT, rssKb, sleep, waitFor } from './lib/proc.js';

/** Moved to bench/lib/proc.ts (shared with bench/run.ts); re-exported for the scripts that import it from here. */
export { ProcessTree };

const HELLO = path.join(ROOT, 'examples/hello-http/server.mjs');

/** Steady load before the first upgrade, and after the last one. */
const BASELINE_MS = 3000;
const TAIL_MS = 1000;
/** Windows in the first half second (connections being opened, code not yet optimised) are not "steady". */
const WARMUP_MS = 500;
const SAMPLE_EVERY_MS = 50;
const SLOW_LOOPS = 2;
/** The service's own bounds (its defaults are 60 s and 30 s); the demo's waits are longer, so the service reports first. */
const SERVICE_UPGRADE_TIMEOUT_MS = 20_000;
const SERVICE_DRAIN_TIMEOUT_MS = 10_000;
const WAIT_NEW_PID_MS = 30_000;
const WAIT_OLD_EXIT_MS = 20_000;

export interface DemoOptions {
  upgrades: number;
  intervalMs: number;
  connections: number;
  ballastMb: number;
  json: boolean;
  systemd: boolean;
}

/** A bad command line: exit status 2, the message names the option and the value. */
export class UsageError extends Error {}

/** The target cannot be measured here (yet): exit status 2. */
export class NotAvailableError extends Error {}

const USAGE = `usage: npm run demo -- [--upgrades N] [--interval S] [--connections C] [--ballast MB] [--json] [--systemd]
  --upgrades N     upgrades by SIGHUP (default 5)
  --interval S     seconds from one upgrade's signal to the next (default 2); an upgrade never starts before the
                   previous old process has exited
  --connections C  request loops per load mode: C on keep-alive connections and C opening a new connection per
                   request (default 8), plus ${SLOW_LOOPS} loops on /slow
  --ballast MB     MiB of resident memory each service process holds (BALLAST_MB; default 0)
  --json           also print the whole report as one JSON line, last
  --systemd        the same under real systemd: hello-http's units in a lab container (bookworm, or
                   $SDH_DEMO_SUITE), upgraded by \`systemctl reload\`; needs root`;

function numberOption(name: string, text: string | undefined, fallback: number, min: number, max: number, integer: boolean): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${JSON.stringify(text)}`);
  }
  return v;
}

export function parseOptions(argv: string[]): DemoOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        upgrades: { type: 'string' },
        interval: { type: 'string' },
        connections: { type: 'string' },
        ballast: { type: 'string' },
        json: { type: 'boolean', default: false },
        systemd: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) throw new UsageError(USAGE);
  return {
    upgrades: numberOption('upgrades', values.upgrades, 5, 1, 100, true),
    intervalMs: Math.round(numberOption('interval', values.interval, 2, 0, 60, false) * 1000),
    connections: numberOption('connections', values.connections, 8, 1, 256, true),
    ballastMb: numberOption('ballast', values.ballast, 0, 0, 4096, true),
    json: values.json,
    systemd: values.systemd,
  };
}

/** The overall bound: generous for the upgrades asked for, and 120 s with the defaults. */
export function hardTimeoutMs(o: DemoOptions): number {
  return 60_000 + o.upgrades * (o.intervalMs + 10_000);
}

// ---------------------------------------------------------------------------------------------------------------
// Targets: where the service runs

/** A running service under measurement, however it was started. */
export interface Service {
  /** Base URL on 127.0.0.1 (or naming only the Host header, with socketPath). */
  readonly url: string;
  /** A unix socket to connect to instead of the URL's host (the lab container's socket, reached from the host). */
  readonly socketPath?: string;
  /** What it is, for the header line. */
  readonly description: string;
  /** Its PID file and control socket are here; removed at the end. */
  readonly workDir?: string;
  /** The main pid as the service publishes it now (its PID file). */
  mainPid(): number | undefined;
  /** Starts an upgrade of the main process `pid`. */
  trigger(pid: number): void;
  /** The service's own report of an upgrade failed since `sinceEpochMs`, if it can tell. */
  upgradeFailure(sinceEpochMs: number): Promise<string | undefined>;
  /** True once `pid` has exited. */
  exited(pid: number): boolean;
  /** Resident memory of all its processes now (KiB), and how many there are. */
  memory(): { kb: number; processes: number };
  /** Every pid of the service seen so far. */
  pids(): number[];
  /** Graceful stop, bounded; then {@link kill}. */
  stop(): Promise<void>;
  /** Ends every process of the service now, by pid. Synchronous, so exit and signal handlers can call it. */
  kill(): void;
  /** The last lines it printed. */
  output(): string;
}

export interface Target {
  readonly name: string;
  start(options: DemoOptions, log: (line: string) => void): Promise<Service>;
}

/** hello-http as a local process tree, upgraded by SIGHUP, PID file and control socket in a temporary directory. */
class LocalService implements Service {
  readonly description: string;
  readonly #tree = new ProcessTree();
  readonly #pidFile: string;
  readonly #control: string;
  readonly #child: ChildProcess;
  #output = '';

  private constructor(
    readonly url: string,
    readonly workDir: string,
    child: ChildProcess,
    ballastMb: number,
  ) {
    this.#pidFile = path.join(workDir, 'hello.pid');
    this.#control = path.join(workDir, 'control.sock');
    this.#child = child;
    this.description = `examples/hello-http on ${new URL(url).host}${ballastMb ? ` (${ballastMb} MiB ballast per process)` : ''}`;
    if (child.pid) this.#tree.add(child.pid);
    const keep = (d: Buffer): void => {
      this.#output = (this.#output + d.toString()).slice(-16_384);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
  }

  static async start(options: DemoOptions, dir: string): Promise<LocalService> {
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {
      // Only what it needs: no NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*, JOURNAL_STREAM, SDH_UPGRADE from our environment.
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: String(port),
      PIDFILE: path.join(dir, 'hello.pid'),
      SDH_CONTROL_SOCKET: path.join(dir, 'control.sock'),
      BALLAST_MB: String(options.ballastMb),
      UPGRADE_TIMEOUT_MS: String(SERVICE_UPGRADE_TIMEOUT_MS),
      DRAIN_TIMEOUT_MS: String(SERVICE_DRAIN_TIMEOUT_MS),
    };
    // Its own session, so a Ctrl-C in the terminal reaches only the demo, which then ends the service itself.
    const child = spawn(process.execPath, [HELLO], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const service = new LocalService(`http://127.0.0.1:${port}/`, dir, child, options.ballastMb);
    if (child.pid === undefined) {
      await new Promise((r) => child.once('error', r));
      throw new Error(`could not start ${HELLO}`);
    }
    try {
      await waitFor(
        'hello-http to write its PID file and answer GET /',
        async () => {
          if (child.exitCode !== null || child.signalCode !== null) {
            throw new Error(`hello-http exited (${child.signalCode ?? `status ${child.exitCode}`}) before it was ready`);
          }
          return service.mainPid() === child.pid && (await get(service.url)) === 200 ? true : undefined;
        },
        20_000,
        25,
      );
    } catch (err) {
      service.kill();
      throw new Error(`${(err as Error).message}; it printed:\n${service.output() || '(nothing)'}`);
    }
    return service;
  }

  mainPid(): number | undefined {
    const pid = readPid(this.#pidFile);
    if (pid !== undefined) this.#tree.add(pid);
    return pid;
  }

  trigger(pid: number): void {
    if (this.#tree.exited(pid)) throw new Error(`cannot upgrade: pid ${pid} is not running`);
    process.kill(pid, 'SIGHUP');
  }

  async upgradeFailure(sinceEpochMs: number): Promise<string | undefined> {
    try {
      const status = await controlRequest(this.#control, 'status', { timeoutMs: 1000 });
      const last = status.lastUpgrade as { ok: boolean; at: string; error?: string } | null;
      if (last && !last.ok && Date.parse(last.at) >= sinceEpochMs - 5) return last.error ?? 'upgrade failed';
    } catch {
      /* the control socket is between owners, or busy: ask again later */
    }
    return undefined;
  }

  exited(pid: number): boolean {
    return this.#tree.exited(pid);
  }

  memory(): { kb: number; processes: number } {
    const live = this.#tree.scan();
    return { kb: live.reduce((n, pid) => n + rssKb(pid), 0), processes: live.length };
  }

  pids(): number[] {
    return [...this.#tree.seen.keys()];
  }

  async stop(): Promise<void> {
    this.#tree.signalAll('SIGTERM');
    await waitFor('the service to stop', () => (this.#tree.scan().length === 0 ? true : undefined), 5000, 25).catch(() => {});
    this.kill();
  }

  kill(): void {
    // Twice: a process may have spawned a child between the scan and the signal.
    for (let i = 0; i < 2; i++) if (this.#tree.signalAll('SIGKILL').length === 0) break;
    this.#child.stdout?.destroy();
    this.#child.stderr?.destroy();
  }

  output(): string {
    return this.#output;
  }
}

const localTarget: Target = {
  name: 'local',
  start: async (options) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'sdh-demo-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const service = await LocalService.start(options, dir);
    cleanups.unshift(() => service.kill());
    return service;
  },
};

/**
 * The hook for the real-systemd lab (test/integration/lab): a {@link Service} whose trigger is `systemctl reload`,
 * whose main pid is the unit's MainPID and whose memory is the unit's cgroup.
 */
const systemdTarget: Target = {
  name: 'systemd',
  start: async (options, log) => {
    if (process.getuid?.() !== 0) throw new NotAvailableError('--systemd boots the real-systemd lab, which needs root (and debootstrap, systemd-nspawn)');
    const { SystemdService } = await import('./lib/systemd-target.js');
    const service = await SystemdService.start(
      { ballastMb: options.ballastMb, upgradeTimeoutMs: SERVICE_UPGRADE_TIMEOUT_MS, drainTimeoutMs: SERVICE_DRAIN_TIMEOUT_MS, suite: process.env.SDH_DEMO_SUITE },
      log,
    );
    return service;
  },
};

/** Run on every exit path, first to last: end the service's processes, then remove the temporary directory. */
const cleanups: Array<() => void> = [];

function cleanup(): void {
  for (const fn of cleanups.splice(0)) {
    try {
      fn();
    } catch {
      /* keep cleaning */
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The measurement

interface UpgradeRecord {
  n: number;
  oldPid: number;
  newPid?: number;
  /** Signal -> the PID file names the new pid. */
  pidFileMs?: number;
  /** Signal -> the old pid has exited. */
  oldExitMs?: number;
  error?: string;
}

interface ModeReport {
  mode: string;
  connections: number;
  counts: Counts;
  failed: number;
  otherCodes: Record<string, number>;
  statusCodes: Record<string, number>;
  steady: { counts: Counts; latency: LatencySummary; seconds: number };
  during: { counts: Counts; latency: LatencySummary; seconds: number };
  errorSamples: LoadResult['errorSamples'];
}

export interface DemoReport {
  ok: boolean;
  failures: string[];
  options: DemoOptions;
  target: string;
  url: string;
  tmpDir: string | null;
  durationMs: number;
  pids: { initial: number; upgrades: number[]; all: number[] };
  upgrades: UpgradeRecord[];
  upgradeMs: { pidFile: Stats | null; oldExit: Stats | null };
  modes: { keepalive: ModeReport; newconn: ModeReport };
  slow: { started: number; completed: number; counts: Counts; latency: LatencySummary };
  memory: { steadyKb: number; steadyMaxKb: number; peakKb: number; ratio: number; peakProcesses: number; samples: number };
}

interface Stats {
  min: number;
  median: number;
  max: number;
}

function stats(xs: number[]): Stats | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length / 2;
  const median = s.length % 2 ? s[Math.floor(mid)]! : Math.round((s[mid - 1]! + s[mid]!) / 2);
  return { min: s[0]!, median, max: s[s.length - 1]! };
}

function failedCount(c: Counts): number {
  return c.total - c.ok;
}

/** Upgrade periods in a load's own timeline: from the `upgrade N` mark to the `exited N` mark (or the load's end). */
function periods(result: LoadResult): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const m of result.marks) {
    const n = /^upgrade (\d+)$/.exec(m.label)?.[1];
    if (n === undefined) continue;
    const end = result.marks.find((e) => e.label === `exited ${n}`)?.t ?? result.durationMs;
    out.push([m.t, end]);
  }
  return out;
}

function modeReport(result: LoadResult, windowMs: number): ModeReport {
  const during = periods(result);
  // A window counts as "during" when any part of it overlaps an upgrade.
  const inUpgrade = (t: number): boolean => during.some(([a, b]) => t + windowMs > a && t < b);
  const pick = (keep: (t: number) => boolean): { counts: Counts; latency: LatencySummary; seconds: number } => {
    const windows = result.windows.filter((w) => keep(w.t));
    return { ...summarize({ ...result, windows }), seconds: (windows.length * windowMs) / 1000 };
  };
  return {
    mode: result.mode,
    connections: result.connections,
    counts: result.counts,
    failed: failedCount(result.counts),
    otherCodes: result.otherCodes,
    statusCodes: result.statusCodes,
    steady: pick((t) => t >= WARMUP_MS && !inUpgrade(t)),
    during: pick(inUpgrade),
    errorSamples: result.errorSamples,
  };
}

async function measure(target: Target, service: Service, options: DemoOptions, log: (line: string) => void): Promise<DemoReport> {
  const started = performance.now();
  const failures: string[] = [];
  const initial = service.mainPid()!;
  const windowMs = 100;

  // Memory, every 50 ms, with the time it was taken; upgrade periods in the same clock.
  const samples: Array<{ t: number; kb: number; processes: number }> = [];
  const upgradePeriods: Array<[number, number]> = [];
  const sampler = setInterval(() => {
    const m = service.memory();
    samples.push({ t: performance.now(), ...m });
  }, SAMPLE_EVERY_MS);

  const common = { url: service.url, ...(service.socketPath ? { socketPath: service.socketPath } : {}), connections: options.connections, durationMs: hardTimeoutMs(options), windowMs };
  const keepalive = startLoad({ ...common, mode: 'keepalive', slow: { path: '/slow', connections: SLOW_LOOPS } });
  const newconn = startLoad({ ...common, mode: 'newconn' });
  const loads: Load[] = [keepalive, newconn];
  const upgrades: UpgradeRecord[] = [];
  try {
    await sleep(BASELINE_MS);
    let pid = initial;
    let nextAt = performance.now();
    for (let n = 1; n <= options.upgrades; n++) {
      await sleep(Math.max(0, nextAt - performance.now()));
      const rec: UpgradeRecord = { n, oldPid: pid };
      upgrades.push(rec);
      for (const l of loads) l.mark(`upgrade ${n}`);
      const t0 = performance.now();
      const epoch0 = Date.now();
      nextAt = t0 + options.intervalMs;
      const period: [number, number] = [t0, Infinity];
      upgradePeriods.push(period);
      try {
        service.trigger(pid);
        let asked = t0;
        const newPid = await waitFor(
          `the PID file to name a new process after upgrade ${n} (old pid ${pid})`,
          async () => {
            const p = service.mainPid();
            if (p !== undefined && p !== pid) return p;
            if (performance.now() - asked >= 200) {
              asked = performance.now();
              const failure = await service.upgradeFailure(epoch0);
              if (failure) throw new Error(`upgrade ${n} of pid ${pid} failed: ${failure}`);
            }
            return undefined;
          },
          WAIT_NEW_PID_MS,
        );
        rec.newPid = newPid;
        rec.pidFileMs = Math.round(performance.now() - t0);
        await waitFor(`old pid ${pid} to exit after upgrade ${n}`, () => (service.exited(pid) ? true : undefined), WAIT_OLD_EXIT_MS);
        rec.oldExitMs = Math.round(performance.now() - t0);
        period[1] = performance.now();
        for (const l of loads) l.mark(`exited ${n}`);
        log(`upgrade ${n}/${options.upgrades}: pid ${pid} -> ${newPid}: PID file after ${rec.pidFileMs} ms, old pid exited after ${rec.oldExitMs} ms`);
        pid = newPid;
      } catch (err) {
        period[1] = performance.now();
        for (const l of loads) l.mark(`exited ${n}`);
        rec.error = (err as Error).message;
        failures.push(rec.error);
        log(`upgrade ${n}/${options.upgrades}: FAILED: ${rec.error}`);
        break;
      }
    }
    await sleep(TAIL_MS);
  } finally {
    for (const l of loads) l.stop();
  }
  const [ka, nc] = await Promise.all(loads.map((l) => l.done));
  clearInterval(sampler);

  const inUpgrade = (t: number): boolean => upgradePeriods.some(([a, b]) => t >= a && t <= b);
  const steadySamples = samples.filter((s) => s.t - started >= WARMUP_MS && !inUpgrade(s.t)).map((s) => s.kb);
  const duringSamples = samples.filter((s) => inUpgrade(s.t));
  const steadyKb = stats(steadySamples)?.median ?? 0;
  const peak = duringSamples.reduce((best, s) => (s.kb > best.kb ? s : best), { t: 0, kb: 0, processes: 0 });

  const modes = { keepalive: modeReport(ka!, windowMs), newconn: modeReport(nc!, windowMs) };
  for (const m of Object.values(modes)) {
    if (m.failed > 0) failures.push(`${m.failed} of ${m.counts.total} ${m.mode} requests failed`);
  }
  const slowCounts = ka!.slow!.counts;
  if (slowCounts.ok !== slowCounts.total) failures.push(`${slowCounts.total - slowCounts.ok} of ${slowCounts.total} /slow requests failed`);
  const done = upgrades.filter((u) => u.oldExitMs !== undefined);
  if (done.length < options.upgrades && !upgrades.some((u) => u.error)) failures.push(`${done.length} of ${options.upgrades} upgrades done`);
  const newPids = done.map((u) => u.newPid!);
  if (new Set([initial, ...newPids]).size !== newPids.length + 1) failures.push(`an upgrade did not give a new pid: ${[initial, ...newPids].join(' -> ')}`);

  return {
    ok: failures.length === 0,
    failures,
    options,
    target: target.name,
    url: service.url,
    tmpDir: service.workDir ?? null,
    durationMs: Math.round(performance.now() - started),
    pids: { initial, upgrades: newPids, all: service.pids() },
    upgrades,
    upgradeMs: { pidFile: stats(done.map((u) => u.pidFileMs!)), oldExit: stats(done.map((u) => u.oldExitMs!)) },
    modes,
    slow: { started: slowCounts.total, completed: slowCounts.ok, counts: slowCounts, latency: ka!.slow!.latency },
    memory: {
      steadyKb,
      steadyMaxKb: Math.max(0, ...steadySamples),
      peakKb: peak.kb,
      ratio: steadyKb ? Math.round((peak.kb / steadyKb) * 100) / 100 : 0,
      peakProcesses: peak.processes,
      samples: samples.length,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The table

function mib(kb: number): string {
  return `${(kb / 1024).toFixed(1)} MiB`;
}

function ms(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export function formatReport(r: DemoReport, service: { description: string }): string {
  const { keepalive: ka, newconn: nc } = r.modes;
  const rows: Array<[string, string, string]> = [
    ['requests', String(ka.counts.total), String(nc.counts.total)],
    ['  ok', String(ka.counts.ok), String(nc.counts.ok)],
    ['  refused', String(ka.counts.refused), String(nc.counts.refused)],
    ['  reset', String(ka.counts.reset), String(nc.counts.reset)],
    ['  timeout', String(ka.counts.timeout), String(nc.counts.timeout)],
    ['  non2xx', String(ka.counts.non2xx), String(nc.counts.non2xx)],
    ['  other', String(ka.counts.other), String(nc.counts.other)],
    ['failed during upgrades', String(failedCount(ka.during.counts)), String(failedCount(nc.during.counts))],
    ['req/s steady | upgrading', ...([ka, nc].map((m) => `${rate(m.steady)} | ${rate(m.during)}`) as [string, string])],
    ['p50 ms steady | upgrading', ...([ka, nc].map((m) => `${ms(m.steady.latency.p50)} | ${ms(m.during.latency.p50)}`) as [string, string])],
    ['p99 ms steady | upgrading', ...([ka, nc].map((m) => `${ms(m.steady.latency.p99)} | ${ms(m.during.latency.p99)}`) as [string, string])],
    ['max ms steady | upgrading', ...([ka, nc].map((m) => `${ms(m.steady.latency.max)} | ${ms(m.during.latency.max)}`) as [string, string])],
  ];
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max('keep-alive'.length, ...rows.map((x) => x[1].length));
  const w2 = Math.max('new connection'.length, ...rows.map((x) => x[2].length));
  const line = (a: string, b: string, c: string): string => `  ${a.padEnd(w0)}  ${b.padStart(w1)}  ${c.padStart(w2)}`;
  const st = (s: Stats | null): string => (s ? `min ${s.min}  median ${s.median}  max ${s.max} ms` : 'none completed');
  const o = r.options;
  const out = [
    '',
    `sd-handoff demo: ${service.description}`,
    `  ${o.upgrades} upgrade(s) by ${r.target === 'systemd' ? 'systemctl reload' : 'SIGHUP'} about ${o.intervalMs / 1000} s apart; load: ${o.connections} keep-alive + ${o.connections} new-connection loops, ${SLOW_LOOPS} /slow loops; ${(r.durationMs / 1000).toFixed(1)} s`,
    '',
    line('', 'keep-alive', 'new connection'),
    ...rows.map((x) => line(...x)),
    '',
    `  upgrade, signal -> PID file names the new pid   ${st(r.upgradeMs.pidFile)}`,
    `  upgrade, signal -> old pid exited               ${st(r.upgradeMs.oldExit)}`,
    `  /slow requests (3 s each) completed / started   ${r.slow.completed} / ${r.slow.started}`,
    `  memory, RSS of all service processes            steady ${mib(r.memory.steadyKb)}, peak during upgrades ${mib(r.memory.peakKb)} (${r.memory.peakProcesses} processes), ratio ${r.memory.ratio.toFixed(2)}`,
    `  pids                                            ${[r.pids.initial, ...r.pids.upgrades].join(' -> ')}`,
    '',
    r.ok
      ? `PASS: ${r.pids.upgrades.length} upgrades, 0 failed requests of ${ka.counts.total + nc.counts.total + r.slow.started}`
      : `FAIL: ${r.failures.join('; ')}`,
  ];
  const samples = [...ka.errorSamples, ...nc.errorSamples];
  if (samples.length) {
    out.push('  first failures (ms since the load started):');
    for (const s of samples.slice(0, 10)) out.push(`    ${s.t} ${s.kind} ${s.code} ${s.message}`);
  }
  return `${out.join('\n')}\n`;
}

function rate(part: { counts: Counts; seconds: number }): string {
  return part.seconds > 0 ? String(Math.round(part.counts.total / part.seconds)) : '-';
}

// ---------------------------------------------------------------------------------------------------------------
// main

/** Runs the demo; resolves with the exit status. Ends everything it started before it resolves. */
export async function main(argv: string[]): Promise<number> {
  const out = (s: string): void => void process.stdout.write(s);
  const log = (line: string): void => out(`${line}\n`);
  let options: DemoOptions;
  try {
    options = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`demo: ${err.message}\n`);
    return 2;
  }
  const target = options.systemd ? systemdTarget : localTarget;
  let service: Service | undefined;
  try {
    if (target === localTarget) ensureBuilt(log);
    service = await target.start(options, log);
    log(`${service.description}: pid ${service.mainPid()} ready${service.workDir ? ` (PID file and control socket in ${service.workDir})` : ''}; baseline ${BASELINE_MS / 1000} s, then ${options.upgrades} upgrade(s)`);
    const report = await measure(target, service, options, log);
    out(formatReport(report, service));
    if (!report.ok && service.output()) process.stderr.write(`\nlast lines the service printed:\n${service.output()}\n`);
    await service.stop();
    if (options.json) log(JSON.stringify(report));
    return report.ok ? 0 : 1;
  } catch (err) {
    if (err instanceof NotAvailableError) {
      process.stderr.write(`demo: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    if (service?.output()) process.stderr.write(`last lines the service printed:\n${service.output()}\n`);
    return 1;
  } finally {
    cleanup();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const argv = process.argv.slice(2);
  let bound: NodeJS.Timeout | undefined;
  try {
    bound = setTimeout(() => {
      process.stderr.write(`demo: still running after ${hardTimeoutMs(parseOptions(argv)) / 1000} s: ending every process it started\n`);
      cleanup();
      process.exit(1);
    }, hardTimeoutMs(parseOptions(argv)));
  } catch {
    /* bad options: main() reports them */
  }
  for (const [sig, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(sig, () => {
      process.stderr.write(`demo: ${sig}: ending every process it started\n`);
      cleanup();
      process.exit(status);
    });
  }
  process.on('exit', cleanup);
  main(argv).then(
    (status) => {
      clearTimeout(bound);
      process.exit(status);
    },
    (err: unknown) => {
      process.stderr.write(`demo: ${err instanceof Error ? err.stack : String(err)}\n`);
      cleanup();
      process.exit(1);
    },
  );
}
