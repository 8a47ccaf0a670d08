/**
 * A small HTTP/1.1 load generator that counts EVERY failed request by kind, for the demo, the process tests and the
 * upgrade-under-load benchmark.
 *
 * Why not autocannon or wrk: what we measure is "how many requests did an upgrade break, and how", one by one.
 * Measured here against a server that destroys the socket of every 50th request (-c 32, 3 s): autocannon 9.0
 * reported `errors: 0, resets: 0` with 38878 requests sent and 38070 answered, so the ~800 broken requests vanished
 * (it reconnects silently); this generator reported 336 `reset` out of 16801 (1 in 50) at 2.3x lower throughput.
 * autocannon also has no time series of failures against upgrade marks, and wrk counts "socket errors" in four
 * buckets only at the end and needs a C toolchain. Here every request ends in exactly one of ok / non2xx / refused / reset /
 * timeout / other (with its error code), never retried, recorded in time windows next to `mark()`ed events, so a
 * caller can compare "steady" with "during upgrade" windows. Throughput is lower than autocannon's (node:http
 * client, one thread), which is enough to keep a Node server on the same 2-core machine busy; if that ever stops
 * being true, run several generators in worker_threads and add their results.
 *
 * Modes: `keepalive`, C loops each sending one request after another on its own keep-alive connection (an Agent
 * with maxSockets 1, so a connection closed by the server is replaced by a new one, exactly as a real client pool
 * does); `newconn`, C loops each opening a fresh connection per request (`Connection: close`).
 * Latencies go into log buckets of 1 % width per time window (like HDR histograms), so any range of windows can
 * be merged exactly to within 1 % with {@link summarize}.
 *
 * It targets only loopback addresses (127.0.0.0/8, ::1) or a unix socket: it is not a tool to point at others'
 * hosts. CLI: `node --import tsx bench/load.ts --url http://127.0.0.1:PORT/ --mode keepalive -c 32 -d 10` prints JSON.
 */
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { sdError, show } from '../src/errors.js';

export type LoadMode = 'keepalive' | 'newconn';

export interface LoadOptions {
  /** `http://127.0.0.1:PORT/path` (or `http://[::1]:PORT/path`); with `socketPath`, the host only names the Host header. */
  url: string;
  /** Connect to this unix socket instead of the URL's host and port. */
  socketPath?: string;
  /** Default `keepalive`. */
  mode?: LoadMode;
  /** Concurrent request loops. Default 16. */
  connections?: number;
  /** How long to send requests. Required bound; at most one hour. */
  durationMs: number;
  /** A request not answered completely within this time is aborted and counted as `timeout`. Default 5000. */
  timeoutMs?: number;
  /** Width of a time window. Default 100. */
  windowMs?: number;
  /** Extra loops requesting a long-running path, counted separately under `slow`. */
  slow?: { path: string; connections: number };
  /** How many error messages to keep as samples. Default 20. */
  errorSamples?: number;
}

/** Outcome counts; every request ends in exactly one of them. */
export interface Counts {
  ok: number;
  non2xx: number;
  /** ECONNREFUSED: nothing listening (or the backlog overflowed). */
  refused: number;
  /** ECONNRESET, EPIPE, "socket hang up": the server closed or reset a connection the request was on. */
  reset: number;
  /** No complete response within `timeoutMs`. */
  timeout: number;
  /** Any other error; see `otherCodes`. */
  other: number;
  total: number;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Latency histogram: bucket index -> count; a bucket `i` holds latencies in (1.01^(i-1), 1.01^i] µs. */
export type Histogram = Record<string, number>;

export interface LoadWindow {
  /** Window start, ms since the load started. */
  t: number;
  counts: Counts;
  /** Latency (ms) of the requests that got a response (ok and non2xx), completing in this window. */
  latency: LatencySummary;
  hist: Histogram;
}

export interface LoadMark {
  /** ms since the load started. */
  t: number;
  label: string;
}

export interface LoadResult {
  url: string;
  mode: LoadMode;
  connections: number;
  /** Epoch ms when the load started. */
  startedAt: number;
  durationMs: number;
  counts: Counts;
  /** Error code -> count, for `other`. */
  otherCodes: Record<string, number>;
  /** HTTP status -> count, for `non2xx`. */
  statusCodes: Record<string, number>;
  latency: LatencySummary;
  /** Requests by completion time. */
  windows: LoadWindow[];
  marks: LoadMark[];
  errorSamples: Array<{ t: number; kind: keyof Counts; code: string; message: string }>;
  /** The slow-path loops, when `slow` was given. */
  slow?: { counts: Counts; latency: LatencySummary };
}

type Kind = Exclude<keyof Counts, 'total'>;

const BUCKET_BASE = Math.log(1.01);

function zeroCounts(): Counts {
  return { ok: 0, non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0, total: 0 };
}

function bucketOf(ms: number): number {
  return Math.max(0, Math.ceil(Math.log(Math.max(1, ms * 1000)) / BUCKET_BASE));
}

function summarizeHist(hist: Histogram, max: number): LatencySummary {
  const entries = Object.entries(hist)
    .map(([k, v]) => [Number(k), v] as const)
    .sort((a, b) => a[0] - b[0]);
  const count = entries.reduce((n, [, v]) => n + v, 0);
  const at = (q: number): number => {
    if (count === 0) return 0;
    const rank = Math.ceil(q * count);
    let seen = 0;
    for (const [k, v] of entries) {
      seen += v;
      if (seen >= rank) return Math.min(max, Math.exp(k * BUCKET_BASE) / 1000);
    }
    return max;
  };
  const round = (x: number): number => Math.round(x * 100) / 100;
  return { count, p50: round(at(0.5)), p90: round(at(0.9)), p99: round(at(0.99)), max: round(max) };
}

function addCounts(into: Counts, from: Counts): void {
  for (const k of Object.keys(into) as Array<keyof Counts>) into[k] += from[k];
}

/**
 * Counts and latency over the windows that START in [fromMs, toMs): e.g. the windows between an `upgrade` mark and
 * the next `upgraded` mark, or everything before the first mark as the steady state.
 */
export function summarize(result: LoadResult, fromMs = 0, toMs = Infinity): { counts: Counts; latency: LatencySummary } {
  const counts = zeroCounts();
  const hist: Histogram = {};
  let max = 0;
  for (const w of result.windows) {
    if (w.t < fromMs || w.t >= toMs) continue;
    addCounts(counts, w.counts);
    for (const [k, v] of Object.entries(w.hist)) hist[k] = (hist[k] ?? 0) + v;
    max = Math.max(max, w.latency.max);
  }
  return { counts, latency: summarizeHist(hist, max) };
}

/** Classify a request error. */
export function classify(err: NodeJS.ErrnoException): { kind: Kind; code: string } {
  const code = err.code ?? (err.message === 'socket hang up' ? 'ECONNRESET' : 'UNKNOWN');
  if (code === 'ECONNREFUSED') return { kind: 'refused', code };
  // "socket hang up" (closed before a response) and "aborted" (response cut off mid-body) both carry ECONNRESET.
  if (code === 'ECONNRESET' || code === 'EPIPE') return { kind: 'reset', code };
  if (code === 'LOAD_TIMEOUT') return { kind: 'timeout', code };
  return { kind: 'other', code };
}

function checkTarget(url: string, socketPath: string | undefined): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw sdError('SDH_INVALID_OPTION', `url is not a URL: ${show(url)}`, { option: 'url', value: url });
  }
  if (u.protocol !== 'http:') {
    throw sdError('SDH_INVALID_OPTION', `url must be http:, got ${show(url)}`, { option: 'url', value: url });
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = (net.isIPv4(host) && host.startsWith('127.')) || host === '::1';
  if (!loopback) {
    throw sdError(
      'SDH_INVALID_OPTION',
      `the load generator only targets loopback addresses (127.0.0.0/8, ::1) or a unix socket; url host is ${show(u.hostname)}`,
      { option: 'url', value: url },
    );
  }
  if (socketPath !== undefined && (typeof socketPath !== 'string' || socketPath === '')) {
    throw sdError('SDH_INVALID_OPTION', `socketPath must be a non-empty path, got ${show(socketPath)}`, {
      option: 'socketPath',
      value: socketPath,
    });
  }
  return u;
}

function checkInt(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw sdError('SDH_INVALID_OPTION', `${name} must be an integer in [${min}, ${max}], got ${show(value)}`, {
      option: name,
      value,
    });
  }
  return value;
}

class TimeoutError extends Error {
  readonly code = 'LOAD_TIMEOUT';
}

/** A running load. `mark()` while it runs; `done` resolves when it ends (at `durationMs`, or after `stop()`). */
export class Load {
  readonly done: Promise<LoadResult>;
  private readonly url: URL;
  private readonly mode: LoadMode;
  private readonly connections: number;
  private readonly durationMs: number;
  private readonly timeoutMs: number;
  private readonly windowMs: number;
  private readonly maxSamples: number;
  private readonly socketPath: string | undefined;
  private readonly slow: { path: string; connections: number } | undefined;
  private readonly t0 = performance.now();
  private readonly startedAt = Date.now();
  private stopping = false;
  private readonly windows: Array<LoadWindow & { maxRaw: number }> = [];
  private readonly marks: LoadMark[] = [];
  private readonly counts = zeroCounts();
  private readonly slowCounts = zeroCounts();
  private readonly slowHist: Histogram = {};
  private slowMax = 0;
  private readonly otherCodes: Record<string, number> = {};
  private readonly statusCodes: Record<string, number> = {};
  private readonly samples: LoadResult['errorSamples'] = [];
  private readonly agents: http.Agent[] = [];
  private readonly stopTimer: NodeJS.Timeout;
  private readonly wake = new Set<() => void>();

  constructor(options: LoadOptions) {
    this.url = checkTarget(options.url, options.socketPath);
    this.socketPath = options.socketPath;
    const mode = options.mode ?? 'keepalive';
    if (mode !== 'keepalive' && mode !== 'newconn') {
      throw sdError('SDH_INVALID_OPTION', `mode must be "keepalive" or "newconn", got ${show(mode)}`, { option: 'mode', value: mode });
    }
    this.mode = mode;
    this.connections = checkInt('connections', options.connections, 16, 1, 10_000);
    this.durationMs = checkInt('durationMs', options.durationMs, NaN, 1, 3_600_000);
    this.timeoutMs = checkInt('timeoutMs', options.timeoutMs, 5000, 1, 600_000);
    this.windowMs = checkInt('windowMs', options.windowMs, 100, 1, 60_000);
    this.maxSamples = checkInt('errorSamples', options.errorSamples, 20, 0, 10_000);
    if (options.slow) {
      checkInt('slow.connections', options.slow.connections, 0, 0, 10_000);
      if (typeof options.slow.path !== 'string' || !options.slow.path.startsWith('/')) {
        throw sdError('SDH_INVALID_OPTION', `slow.path must start with "/", got ${show(options.slow.path)}`, { option: 'slow.path' });
      }
    }
    this.slow = options.slow;

    this.stopTimer = setTimeout(() => this.stopping = true, this.durationMs);
    const loops: Array<Promise<void>> = [];
    for (let i = 0; i < this.connections; i++) loops.push(this.loop(this.url.pathname + this.url.search, false));
    for (let i = 0; i < (this.slow?.connections ?? 0); i++) loops.push(this.loop(this.slow!.path, true));
    this.done = Promise.all(loops).then(() => {
      clearTimeout(this.stopTimer);
      for (const a of this.agents) a.destroy();
      return this.result();
    });
  }

  /** Milliseconds since the load started. */
  elapsed(): number {
    return performance.now() - this.t0;
  }

  /** Record an event (an upgrade starting, a handover done...) at the current time. */
  mark(label: string): void {
    this.marks.push({ t: Math.round(this.elapsed() * 10) / 10, label });
  }

  /** Stop sending; requests in flight still finish (bounded by `timeoutMs`). */
  stop(): Promise<LoadResult> {
    this.stopping = true;
    return this.done;
  }

  private async loop(path: string, slow: boolean): Promise<void> {
    const agent = this.mode === 'keepalive' ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : undefined;
    if (agent) this.agents.push(agent);
    while (!this.stopping) await this.one(path, agent, slow);
  }

  private one(path: string, agent: http.Agent | undefined, slow: boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const start = performance.now();
      let settled = false;
      const settle = (kind: Kind, code: string, message: string, status?: number): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.record(kind, code, message, performance.now() - start, slow, status);
        resolve();
      };
      const req = http.request({
        host: this.socketPath ? undefined : this.url.hostname.replace(/^\[|\]$/g, ''),
        port: this.socketPath ? undefined : this.url.port || 80,
        socketPath: this.socketPath,
        path,
        method: 'GET',
        agent: agent ?? false,
        headers: { host: this.url.host, ...(agent ? {} : { connection: 'close' }) },
      });
      const timer = setTimeout(() => req.destroy(new TimeoutError(`no response within ${this.timeoutMs} ms`)), this.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        const c = classify(err);
        settle(c.kind, c.code, err.message);
      });
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        res.on('error', (err: NodeJS.ErrnoException) => {
          const c = classify(err);
          settle(c.kind, c.code, err.message);
        });
        res.on('end', () => {
          if (status >= 200 && status < 300) settle('ok', '', '');
          else settle('non2xx', String(status), `HTTP ${status}`, status);
        });
        res.resume();
      });
      req.end();
    });
  }

  private record(kind: Kind, code: string, message: string, ms: number, slow: boolean, status?: number): void {
    const t = this.elapsed();
    const idx = Math.floor(t / this.windowMs);
    while (this.windows.length <= idx) {
      this.windows.push({
        t: this.windows.length * this.windowMs,
        counts: zeroCounts(),
        latency: { count: 0, p50: 0, p90: 0, p99: 0, max: 0 },
        hist: {},
        maxRaw: 0,
      });
    }
    const answered = kind === 'ok' || kind === 'non2xx';
    if (slow) {
      this.slowCounts[kind]++;
      this.slowCounts.total++;
      if (answered) {
        const b = bucketOf(ms);
        this.slowHist[b] = (this.slowHist[b] ?? 0) + 1;
        this.slowMax = Math.max(this.slowMax, ms);
      }
    } else {
      const w = this.windows[idx]!;
      w.counts[kind]++;
      w.counts.total++;
      this.counts[kind]++;
      this.counts.total++;
      if (answered) {
        const b = bucketOf(ms);
        w.hist[b] = (w.hist[b] ?? 0) + 1;
        w.maxRaw = Math.max(w.maxRaw, ms);
      }
    }
    if (kind === 'other') this.otherCodes[code] = (this.otherCodes[code] ?? 0) + 1;
    if (status !== undefined) this.statusCodes[status] = (this.statusCodes[status] ?? 0) + 1;
    if (!answered && this.samples.length < this.maxSamples) {
      this.samples.push({ t: Math.round(t), kind, code, message });
    }
  }

  private result(): LoadResult {
    const windows: LoadWindow[] = this.windows.map((w) => ({
      t: w.t,
      counts: w.counts,
      latency: summarizeHist(w.hist, w.maxRaw),
      hist: w.hist,
    }));
    const partial: LoadResult = {
      url: this.url.href,
      mode: this.mode,
      connections: this.connections,
      startedAt: this.startedAt,
      durationMs: Math.round(this.elapsed()),
      counts: this.counts,
      otherCodes: this.otherCodes,
      statusCodes: this.statusCodes,
      latency: { count: 0, p50: 0, p90: 0, p99: 0, max: 0 },
      windows,
      marks: this.marks,
      errorSamples: this.samples,
    };
    partial.latency = summarize(partial).latency;
    if (this.slow) partial.slow = { counts: this.slowCounts, latency: summarizeHist(this.slowHist, this.slowMax) };
    return partial;
  }
}

/** Start a load; see {@link Load}. */
export function startLoad(options: LoadOptions): Load {
  return new Load(options);
}

/** Run a load to its end and return its result. */
export function runLoad(options: LoadOptions): Promise<LoadResult> {
  return new Load(options).done;
}

async function cli(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      'socket-path': { type: 'string' },
      mode: { type: 'string', default: 'keepalive' },
      connections: { type: 'string', short: 'c', default: '16' },
      duration: { type: 'string', short: 'd', default: '10' },
      timeout: { type: 'string', default: '5000' },
      window: { type: 'string', default: '100' },
      'slow-path': { type: 'string' },
      'slow-connections': { type: 'string', default: '1' },
      hist: { type: 'boolean', default: false },
      'started-file': { type: 'string' },
    },
  });
  if (!values.url) throw sdError('SDH_INVALID_OPTION', '--url is required');
  const load = startLoad({
    url: values.url,
    socketPath: values['socket-path'],
    mode: values.mode as LoadMode,
    connections: Number(values.connections),
    durationMs: Math.round(Number(values.duration) * 1000),
    timeoutMs: Number(values.timeout),
    windowMs: Number(values.window),
    slow: values['slow-path'] ? { path: values['slow-path'], connections: Number(values['slow-connections']) } : undefined,
  });
  // SIGTERM / SIGINT end the run early (a test stops the load once its upgrades are done) and still print the result.
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => void load.stop());
  // Tells a caller that the load runs (and that SIGTERM is now handled): a slow start must not be mistaken for one.
  if (values['started-file']) writeFileSync(values['started-file'], `${process.pid}\n`);
  const result = await load.done;
  const out = values.hist ? result : { ...result, windows: result.windows.map(({ hist: _h, ...w }) => w) };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cli(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  });
}
