/**
 * The benchmark's pure parts (no processes, no clock): one case's load result, upgrade timings and memory samples
 * turned into the numbers the report shows, and the Markdown tables. bench/run.ts produces the inputs;
 * test/unit/bench.test.ts checks these functions on made-up inputs.
 */
import { summarize, type Counts, type LatencySummary, type LoadMode, type LoadResult } from '../load.js';

/** How the service is run and restarted. */
export type TargetKind = 'sd-handoff' | 'pool' | 'naive';

export const TARGET_TITLES: Record<TargetKind, string> = {
  'sd-handoff': 'sd-handoff (1 process)',
  pool: 'sd-handoff pool',
  naive: 'naive restart (kill + start)',
};

/** The error kinds of {@link Counts}, in the order the report lists them. */
export const ERROR_KINDS = ['refused', 'reset', 'timeout', 'non2xx', 'other'] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** One upgrade (or naive restart), times in ms from the trigger. */
export interface UpgradeTiming {
  n: number;
  oldPid: number;
  newPid?: number;
  /** Trigger -> the PID file names the new pid (sd-handoff); the new process was started (naive). */
  pidFileMs?: number;
  /** Trigger -> first response from a process that did not exist before the trigger. */
  servingMs?: number;
  /** Trigger -> every process that served before the trigger has exited. */
  oldExitMs?: number;
  /** A 3 s GET /slow started just before the trigger: did it complete with 200? */
  slowOk?: boolean;
  /** What became of it when not: an error kind and code, or the status. */
  slowOutcome?: string;
  error?: string;
}

/** Summed RSS of all the service's processes at time `t` (ms since the load started). */
export interface MemSample {
  t: number;
  kb: number;
  processes: number;
}

export interface CaseInput {
  name: string;
  target: TargetKind;
  mode: LoadMode;
  ballastMb: number;
  workers: number;
  upgradesAsked: number;
  upgrades: UpgradeTiming[];
  /** Marked `upgrade N` at each trigger and `done N` when its new process served and its old ones had exited. */
  load: LoadResult;
  memory: MemSample[];
  /** Windows before this (ms since the load started) are warm-up, neither steady nor upgrading. */
  warmupMs: number;
  /** Width of one point of the timeline. */
  binMs: number;
}

export interface Stats {
  min: number;
  median: number;
  max: number;
}

export interface Part {
  counts: Counts;
  latency: LatencySummary;
  seconds: number;
  /** Answered requests per second. */
  rps: number;
}

export interface TimelinePoint {
  /** Bin start, ms since the load started. */
  t: number;
  rps: number;
  p99: number;
  errors: number;
}

export interface CaseResult {
  name: string;
  target: TargetKind;
  mode: LoadMode;
  ballastMb: number;
  workers: number;
  connections: number;
  durationMs: number;
  upgradesAsked: number;
  upgradesDone: number;
  counts: Counts;
  otherCodes: Record<string, number>;
  /** Failed requests (all of them, steady or not) divided by the upgrades done, by kind. */
  errorsPerUpgrade: Record<ErrorKind | 'total', number>;
  steady: Part;
  during: Part;
  /** p99 during upgrades / p99 steady. */
  p99Ratio: number;
  upgradeMs: { pidFile: Stats | null; serving: Stats | null; oldExit: Stats | null };
  memory: { steadyKb: number; peakKb: number; ratio: number; peakProcesses: number };
  slow: { started: number; completed: number; outcomes: string[] };
  upgrades: UpgradeTiming[];
  /** Upgrade periods in the load's time: [trigger, done]. */
  periods: Array<[number, number]>;
  timeline: TimelinePoint[];
  errorSamples: LoadResult['errorSamples'];
}

export function stats(xs: number[]): Stats | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length / 2;
  // The median of an even count is the mean of the middle two.
  const median = s.length % 2 ? s[Math.floor(mid)]! : Math.round((s[mid - 1]! + s[mid]!) / 2);
  return { min: s[0]!, median, max: s[s.length - 1]! };
}

export function failed(c: Counts): number {
  return c.total - c.ok;
}

/** Upgrade periods from the marks: `upgrade N` to `done N` (or the load's end, when it never finished). */
export function periods(result: LoadResult): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const m of result.marks) {
    const n = /^upgrade (\d+)$/.exec(m.label)?.[1];
    if (n === undefined) continue;
    const end = result.marks.find((e) => e.label === `done ${n}`)?.t ?? result.durationMs;
    out.push([m.t, end]);
  }
  return out;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
const round2 = (x: number): number => Math.round(x * 100) / 100;

/** Windows of `result` kept by `keep`, merged. */
function part(result: LoadResult, windowMs: number, keep: (t: number) => boolean): Part {
  const windows = result.windows.filter((w) => keep(w.t));
  const s = summarize({ ...result, windows });
  const seconds = (windows.length * windowMs) / 1000;
  return { ...s, seconds, rps: seconds > 0 ? Math.round((s.counts.ok + s.counts.non2xx) / seconds) : 0 };
}

/** The load's windows merged into bins of `binMs`: answered requests/s, p99 of the bin, failed requests in it. */
export function timeline(result: LoadResult, binMs: number): TimelinePoint[] {
  const out: TimelinePoint[] = [];
  for (let t = 0; t < result.durationMs; t += binMs) {
    const s = summarize(result, t, t + binMs);
    out.push({ t, rps: Math.round(((s.counts.ok + s.counts.non2xx) * 1000) / binMs), p99: s.latency.p99, errors: failed(s.counts) });
  }
  return out;
}

/** One case's numbers. A window belongs to "during" when any part of it overlaps an upgrade period. */
export function aggregateCase(input: CaseInput): CaseResult {
  const { load } = input;
  const windowMs = load.windows.length > 1 ? load.windows[1]!.t - load.windows[0]!.t : 100;
  const during = periods(load);
  const inUpgrade = (t: number, width: number): boolean => during.some(([a, b]) => t + width > a && t < b);
  const steady = part(load, windowMs, (t) => t >= input.warmupMs && !inUpgrade(t, windowMs));
  const upgrading = part(load, windowMs, (t) => inUpgrade(t, windowMs));

  const done = input.upgrades.filter((u) => u.servingMs !== undefined && u.oldExitMs !== undefined);
  const per = (n: number): number => (input.upgrades.length ? round1(n / input.upgrades.length) : n);
  const errorsPerUpgrade = Object.fromEntries([
    ...ERROR_KINDS.map((k) => [k, per(load.counts[k])]),
    ['total', per(failed(load.counts))],
  ]) as Record<ErrorKind | 'total', number>;

  const memSteady = input.memory.filter((m) => m.t >= input.warmupMs && !inUpgrade(m.t, 0)).map((m) => m.kb);
  const memDuring = input.memory.filter((m) => inUpgrade(m.t, 0));
  const steadyKb = stats(memSteady)?.median ?? 0;
  const peak = memDuring.reduce((best, m) => (m.kb > best.kb ? m : best), { t: 0, kb: 0, processes: 0 });

  const slow = input.upgrades.filter((u) => u.slowOk !== undefined);
  return {
    name: input.name,
    target: input.target,
    mode: input.mode,
    ballastMb: input.ballastMb,
    workers: input.workers,
    connections: load.connections,
    durationMs: load.durationMs,
    upgradesAsked: input.upgradesAsked,
    upgradesDone: done.length,
    counts: load.counts,
    otherCodes: load.otherCodes,
    errorsPerUpgrade,
    steady,
    during: upgrading,
    p99Ratio: steady.latency.p99 > 0 ? round2(upgrading.latency.p99 / steady.latency.p99) : 0,
    upgradeMs: {
      pidFile: stats(input.upgrades.flatMap((u) => (u.pidFileMs === undefined ? [] : [u.pidFileMs]))),
      serving: stats(input.upgrades.flatMap((u) => (u.servingMs === undefined ? [] : [u.servingMs]))),
      oldExit: stats(input.upgrades.flatMap((u) => (u.oldExitMs === undefined ? [] : [u.oldExitMs]))),
    },
    memory: { steadyKb, peakKb: peak.kb, ratio: steadyKb ? round2(peak.kb / steadyKb) : 0, peakProcesses: peak.processes },
    slow: {
      started: slow.length,
      completed: slow.filter((u) => u.slowOk).length,
      outcomes: slow.filter((u) => !u.slowOk).map((u) => u.slowOutcome ?? 'failed'),
    },
    upgrades: input.upgrades,
    periods: during,
    timeline: timeline(load, input.binMs),
    errorSamples: load.errorSamples,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Scale cases and the steady-state cost

export interface ThroughputResult {
  mode: LoadMode;
  connections: number;
  /** Seconds each server was loaded per turn (plus a 0.5 s warm-up not counted), in turns plain, sd-handoff, sd-handoff, plain... */
  secondsPerTurn: number;
  turns: number;
  plainRps: number;
  sdHandoffRps: number;
  /** sd-handoff / plain. */
  ratio: number;
  failed: number;
}

export interface ListenersResult {
  listeners: number;
  /** Trigger -> the new process printed its ready line. */
  readyMs: number;
  /** Trigger -> the old process exited. */
  oldExitMs: number;
  /** Listeners asked after the upgrade, and how many answered with the new pid. */
  checked: number;
  answeredByNew: number;
  checkMs: number;
  failures: string[];
}

export interface IdleResult {
  connections: number;
  /** Connections that were open and idle when the upgrade started. */
  idleAtUpgrade: number;
  /** Closed by the server with a FIN (`end`), with a reset, with another error, or still open at the end. */
  fin: number;
  reset: number;
  otherErrors: Record<string, number>;
  stillOpen: number;
  /** Trigger -> the old process exited (it had drained every idle connection). */
  drainMs: number;
  /** Trigger -> the last idle connection closed. */
  lastCloseMs: number;
  servingMs: number;
  peakKb: number;
  steadyKb: number;
  failures: string[];
}

export interface PoolSizeResult {
  workers: number;
  ballastMb: number;
  servingMs: number | null;
  pidFileMs: number | null;
  oldExitMs: number | null;
  steadyKb: number;
  peakKb: number;
  ratio: number;
  peakProcesses: number;
  requests: number;
  failed: number;
  error?: string;
}

export interface BenchResults {
  meta: {
    date: string;
    quick: boolean;
    node: string;
    kernel: string;
    cpus: number;
    cpuModel: string;
    memTotalMiB: number;
    loadavgStart: number[];
    loadavgEnd: number[];
    durationMs: number;
    /** What the cases were run with. */
    settings: Record<string, number | string | boolean>;
  };
  cases: CaseResult[];
  throughput: ThroughputResult[];
  listeners: ListenersResult | null;
  idle: IdleResult | null;
  poolSizes: PoolSizeResult[];
  failures: string[];
}

// ---------------------------------------------------------------------------------------------------------------
// Markdown

function msText(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export function mibText(kb: number): string {
  return `${Math.round(kb / 1024)} MiB`;
}

/** `0`, or the non-zero kinds: `refused 120, reset 3.5`. */
export function errorsText(e: Record<ErrorKind | 'total', number>): string {
  const parts = ERROR_KINDS.filter((k) => e[k] > 0).map((k) => `${k} ${e[k]}`);
  return parts.length ? `**${e.total}** (${parts.join(', ')})` : '0';
}

const medianText = (s: Stats | null): string => (s ? String(s.median) : '-');

/** Escapes what would break a Markdown table cell. */
export function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`)].join('\n');
}

export function casesTable(cases: CaseResult[]): string {
  return table(
    [
      'target', 'load', 'ballast', 'upgrades', 'errors / upgrade', 'req/s steady → upgrading', 'p50 ms', 'p99 ms', 'max ms',
      'trigger → serving → old exited ms', 'peak RSS upgrading / steady', '3 s request across upgrade',
    ],
    cases.map((c) => [
      c.target === 'pool' ? `${TARGET_TITLES.pool} (${c.workers} workers)` : TARGET_TITLES[c.target],
      c.mode === 'keepalive' ? `keep-alive ×${c.connections}` : `new conn ×${c.connections}`,
      `${c.ballastMb} MiB`,
      `${c.upgradesDone}/${c.upgradesAsked}`,
      errorsText(c.errorsPerUpgrade),
      `${c.steady.rps} → ${c.during.rps}`,
      `${msText(c.steady.latency.p50)} → ${msText(c.during.latency.p50)}`,
      `${msText(c.steady.latency.p99)} → ${msText(c.during.latency.p99)}`,
      `${msText(c.steady.latency.max)} → ${msText(c.during.latency.max)}`,
      `${medianText(c.upgradeMs.serving)} → ${medianText(c.upgradeMs.oldExit)}`,
      `${mibText(c.memory.peakKb)} / ${mibText(c.memory.steadyKb)} (×${c.memory.ratio.toFixed(2)})`,
      `${c.slow.completed}/${c.slow.started} completed`,
    ]),
  );
}

export function throughputTable(rows: ThroughputResult[]): string {
  return table(
    ['load', 'turns', 'plain listen() req/s', 'sd-handoff req/s', 'sd-handoff / plain', 'failed'],
    rows.map((r) => [
      r.mode === 'keepalive' ? `keep-alive ×${r.connections}` : `new conn ×${r.connections}`,
      `${r.turns} × ${r.secondsPerTurn} s`,
      String(r.plainRps),
      String(r.sdHandoffRps),
      r.ratio.toFixed(3),
      String(r.failed),
    ]),
  );
}

export function scaleTables(r: Pick<BenchResults, 'listeners' | 'idle' | 'poolSizes'>): string {
  const out: string[] = [];
  if (r.listeners) {
    const l = r.listeners;
    out.push(
      table(
        ['listening sockets', 'trigger → new ready ms', 'trigger → old exited ms', 'answered by the new pid after', 'checking took ms'],
        [[String(l.listeners), String(l.readyMs), String(l.oldExitMs), `${l.answeredByNew}/${l.checked}`, String(l.checkMs)]],
      ),
    );
  }
  if (r.idle) {
    const i = r.idle;
    const other = Object.entries(i.otherErrors).map(([k, v]) => `${k} ${v}`).join(', ') || '0';
    out.push(
      table(
        ['idle keep-alive connections', 'closed with FIN', 'reset', 'other errors', 'still open', 'trigger → new serving ms', 'trigger → last closed ms', 'trigger → old exited (drained) ms', 'peak RSS upgrading / steady'],
        [[String(i.idleAtUpgrade), String(i.fin), String(i.reset), other, String(i.stillOpen), String(i.servingMs), String(i.lastCloseMs), String(i.drainMs), `${mibText(i.peakKb)} / ${mibText(i.steadyKb)}`]],
      ),
    );
  }
  if (r.poolSizes.length) {
    out.push(
      table(
        ['pool size', 'ballast / worker', 'trigger → new serving ms', 'trigger → PID file ms', 'trigger → all old exited ms', 'peak RSS upgrading / steady', 'peak processes', 'failed / requests'],
        r.poolSizes.map((p) => [
          String(p.workers),
          `${p.ballastMb} MiB`,
          p.servingMs === null ? '-' : String(p.servingMs),
          p.pidFileMs === null ? '-' : String(p.pidFileMs),
          p.oldExitMs === null ? (p.error ? `failed: ${p.error}` : '-') : String(p.oldExitMs),
          `${mibText(p.peakKb)} / ${mibText(p.steadyKb)} (×${p.ratio.toFixed(2)})`,
          String(p.peakProcesses),
          `${p.failed} / ${p.requests}`,
        ]),
      ),
    );
  }
  return out.join('\n\n');
}

/** Cases where p99 during upgrades exceeds `factor` × steady, for the notes under the table. */
export function slowerDuringUpgrades(cases: CaseResult[], factor = 1.2): CaseResult[] {
  return cases.filter((c) => c.p99Ratio > factor);
}

export function markdown(r: BenchResults): string {
  const m = r.meta;
  const s = m.settings;
  const lines = [
    `# sd-handoff benchmark${m.quick ? ' (--quick)' : ''}`,
    '',
    `${m.date}; Node ${m.node}, Linux ${m.kernel}, ${m.cpus} × ${m.cpuModel}, ${m.memTotalMiB} MiB RAM. Client and server share the ${m.cpus} cores;`,
    `load average ${m.loadavgStart.map((x) => x.toFixed(2)).join(' ')} at the start, ${m.loadavgEnd.map((x) => x.toFixed(2)).join(' ')} at the end; the run took ${(m.durationMs / 1000).toFixed(0)} s.`,
    '',
    'Load: bench/load.ts, our own generator, because it counts every failed request by kind (refused / reset / timeout / non-2xx / other),',
    'never retries, and records them in 100 ms windows next to the upgrade marks; autocannon reconnects silently and hid ~800 resets',
    'out of 38 878 requests in our check (see the header of bench/load.ts). Everything runs on 127.0.0.1.',
    '',
    `Each case: ${s.baselineS} s steady, then ${s.upgrades} upgrades ${s.intervalS} s apart (trigger to trigger; never before the previous one finished), then ${s.tailS} s.`,
    'An upgrade of sd-handoff is SIGHUP to the pid in the PID file; a naive restart is SIGTERM to the plain server (bench/plain-server.mjs,',
    'the same handler on a plain `listen(port)`), wait for it to exit, start a new one on the same port. "Serving" is the first response from a',
    'process that did not exist before the trigger; "old exited" is when every process that existed before it has exited. Errors per upgrade',
    'count every failed request of the case divided by the upgrades. RSS is summed over all the service\'s processes (sampled every 50 ms).',
    'One 3 s `GET /slow` is started 200 ms before each trigger.',
    '',
    '## Upgrades under load',
    '',
    casesTable(r.cases),
    '',
  ];
  const slower = slowerDuringUpgrades(r.cases);
  if (slower.length) {
    lines.push(
      `p99 during upgrades above 1.2 × steady: ${slower.map((c) => `${c.name} (×${c.p99Ratio.toFixed(2)})`).join(', ')}.`,
      '',
    );
  }
  lines.push('## Steady-state cost of the library', '', throughputTable(r.throughput), '');
  lines.push('## Scale', '', scaleTables(r), '');
  if (r.failures.length) lines.push('## Failures', '', ...r.failures.map((f) => `- ${f}`), '');
  lines.push('Timeline: [timeline.svg](timeline.svg) (requests/s, p99 and failed requests per bin; upgrades shaded).', '');
  return lines.join('\n');
}
