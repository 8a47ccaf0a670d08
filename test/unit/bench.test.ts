/**
 * The benchmark's pure parts (bench/lib/report.ts, bench/lib/svg.ts) on made-up load results: which windows count
 * as steady and which as upgrading, errors per upgrade by kind, memory peak vs steady, the Markdown tables, and an
 * SVG timeline that is well-formed XML with one shaded mark per upgrade. The bench itself is not run here (too slow
 * and too noisy for CI).
 */
import { describe, expect, it } from 'vitest';
import type { Counts, LoadResult, LoadWindow } from '../../bench/load.js';
import {
  aggregateCase,
  casesTable,
  cell,
  errorsText,
  markdown,
  periods,
  stats,
  timeline,
  type BenchResults,
  type CaseInput,
  type CaseResult,
} from '../../bench/lib/report.js';
import { niceMax, timelineSvg } from '../../bench/lib/svg.js';

/** bench/load.ts's bucket of a latency: (1.01^(i-1), 1.01^i] µs. */
const bucket = (ms: number): number => Math.ceil(Math.log(ms * 1000) / Math.log(1.01));

function counts(partial: Partial<Counts>): Counts {
  const c = { ok: 0, non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0, ...partial, total: 0 };
  c.total = c.ok + c.non2xx + c.refused + c.reset + c.timeout + c.other;
  return c;
}

function window(t: number, ok: number, latencyMs: number, errors: Partial<Counts> = {}): LoadWindow {
  return {
    t,
    counts: counts({ ok, ...errors }),
    latency: { count: ok, p50: latencyMs, p90: latencyMs, p99: latencyMs, max: latencyMs },
    hist: ok ? { [bucket(latencyMs)]: ok } : {},
  };
}

/**
 * 3 s of 100 ms windows with 100 requests each answered in 2 ms, except during the upgrade (1000 to 1500 ms) where
 * they take 20 ms and the window at 1200 ms also has 3 resets and 1 refused.
 */
function fakeLoad(marks: LoadResult['marks'] = [{ t: 1000, label: 'upgrade 1' }, { t: 1500, label: 'done 1' }]): LoadResult {
  const windows: LoadWindow[] = [];
  for (let t = 0; t < 3000; t += 100) {
    const upgrading = t >= 1000 && t < 1500;
    windows.push(window(t, 100, upgrading ? 20 : 2, t === 1200 ? { reset: 3, refused: 1 } : {}));
  }
  const total = counts({ ok: 3000, reset: 3, refused: 1 });
  return {
    url: 'http://127.0.0.1:1/',
    mode: 'keepalive',
    connections: 8,
    startedAt: 0,
    durationMs: 3000,
    counts: total,
    otherCodes: {},
    statusCodes: {},
    latency: { count: 3000, p50: 2, p90: 2, p99: 20, max: 20 },
    windows,
    marks,
    errorSamples: [],
  };
}

function fakeInput(over: Partial<CaseInput> = {}): CaseInput {
  return {
    name: 'sd-handoff/keepalive/0MiB',
    target: 'sd-handoff',
    mode: 'keepalive',
    ballastMb: 0,
    workers: 0,
    upgradesAsked: 1,
    upgrades: [{ n: 1, oldPid: 10, newPid: 11, pidFileMs: 300, servingMs: 250, oldExitMs: 480, slowOk: true }],
    load: fakeLoad(),
    memory: [
      { t: 100, kb: 999_999, processes: 1 }, // warm-up: neither steady nor upgrading
      { t: 600, kb: 50_000, processes: 1 },
      { t: 800, kb: 52_000, processes: 1 },
      { t: 1100, kb: 101_000, processes: 2 },
      { t: 1300, kb: 104_000, processes: 2 },
      { t: 2000, kb: 51_000, processes: 1 },
    ],
    warmupMs: 500,
    binMs: 500,
    ...over,
  };
}

describe('aggregation', () => {
  it('upgrade periods run from "upgrade N" to "done N", or to the end of the load when it never finished', () => {
    expect(periods(fakeLoad())).toEqual([[1000, 1500]]);
    expect(periods(fakeLoad([{ t: 1000, label: 'upgrade 1' }, { t: 1500, label: 'done 1' }, { t: 2000, label: 'upgrade 2' }]))).toEqual([
      [1000, 1500],
      [2000, 3000],
    ]);
  });

  it('splits steady from upgrading windows, skips the warm-up, and counts errors per upgrade by kind', () => {
    const c = aggregateCase(fakeInput());
    // Steady: 500..1000 and 1500..3000 = 20 windows; upgrading: 1000..1500 = 5 windows.
    expect(c.steady.seconds).toBe(2);
    expect(c.during.seconds).toBe(0.5);
    expect(c.steady.rps).toBe(1000);
    expect(c.during.rps).toBe(1000);
    // Latency buckets are 1 % wide.
    expect(c.steady.latency.p99).toBeCloseTo(2, 1);
    expect(c.during.latency.p99).toBeGreaterThan(19.7);
    expect(c.during.latency.p99).toBeLessThanOrEqual(20.01);
    expect(c.p99Ratio).toBeGreaterThan(9.5);
    expect(c.errorsPerUpgrade).toEqual({ refused: 1, reset: 3, timeout: 0, non2xx: 0, other: 0, total: 4 });
    expect(c.during.counts.reset).toBe(3);
    expect(c.steady.counts.reset).toBe(0);
    expect(c.upgradesDone).toBe(1);
    expect(c.upgradeMs.serving).toEqual({ min: 250, median: 250, max: 250 });
    expect(c.slow).toEqual({ started: 1, completed: 1, outcomes: [] });
  });

  it('memory: steady is the median outside upgrades (after warm-up), peak the largest sample during one', () => {
    const c = aggregateCase(fakeInput());
    expect(c.memory.steadyKb).toBe(51_000);
    expect(c.memory.peakKb).toBe(104_000);
    expect(c.memory.peakProcesses).toBe(2);
    expect(c.memory.ratio).toBeCloseTo(2.04, 2);
  });

  it('errors per upgrade divide by the upgrades, and an unfinished upgrade is not "done"', () => {
    const c = aggregateCase(
      fakeInput({
        upgradesAsked: 2,
        upgrades: [
          { n: 1, oldPid: 10, servingMs: 100, oldExitMs: 5, slowOk: false, slowOutcome: 'reset ECONNRESET' },
          { n: 2, oldPid: 11, error: 'timed out' },
        ],
      }),
    );
    expect(c.errorsPerUpgrade.total).toBe(2);
    expect(c.errorsPerUpgrade.reset).toBe(1.5);
    expect(c.upgradesDone).toBe(1);
    expect(c.slow).toEqual({ started: 1, completed: 0, outcomes: ['reset ECONNRESET'] });
  });

  it('timeline bins hold requests/s, p99 and failed requests', () => {
    const points = timeline(fakeLoad(), 500);
    expect(points).toHaveLength(6);
    expect(points[0]).toMatchObject({ t: 0, rps: 1000, errors: 0 });
    expect(points[2]).toMatchObject({ t: 1000, rps: 1000, errors: 4 });
    expect(points[2]!.p99).toBeGreaterThan(19.7);
    expect(points[3]!.p99).toBeCloseTo(2, 1);
  });

  it('the median of an even count is the mean of the middle two', () => {
    expect(stats([4, 1, 3, 2])).toEqual({ min: 1, median: 3, max: 4 });
    expect(stats([5])).toEqual({ min: 5, median: 5, max: 5 });
    expect(stats([])).toBeNull();
  });
});

describe('markdown', () => {
  it('one row per case with errors by kind, latencies steady → upgrading and memory', () => {
    const ok = aggregateCase(fakeInput({ load: { ...fakeLoad(), counts: counts({ ok: 3000 }) } }));
    const bad = aggregateCase(fakeInput({ name: 'naive/keepalive/0MiB', target: 'naive' }));
    const md = casesTable([ok, bad]);
    const lines = md.split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[1]).toMatch(/^\|(---\|)+$/);
    // Every row has as many cells as the header.
    const cells = (l: string): number => l.split(/(?<!\\)\|/).length;
    for (const l of lines) expect(cells(l)).toBe(cells(lines[0]!));
    expect(lines[2]).toContain('sd-handoff (1 process)');
    expect(lines[2]).toContain('| 0 |');
    expect(lines[3]).toContain('naive restart');
    expect(lines[3]).toContain('**4** (refused 1, reset 3)');
    expect(lines[3]).toContain('1/1 completed');
    expect(lines[3]).toContain('102 MiB / 50 MiB (×2.04)');
  });

  it('errors text lists only the kinds that happened; cells escape pipes', () => {
    expect(errorsText({ refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0, total: 0 })).toBe('0');
    expect(errorsText({ refused: 2, reset: 0, timeout: 1, non2xx: 0, other: 0, total: 3 })).toBe('**3** (refused 2, timeout 1)');
    expect(cell('a|b\nc')).toBe('a\\|b c');
  });

  it('the report names the machine, the load averages and notes slower p99 during upgrades', () => {
    const c = aggregateCase(fakeInput());
    const results: BenchResults = {
      meta: {
        date: '2026-01-01T00:00:00.000Z', quick: true, node: 'v20.20.2', kernel: '6.1.0', cpus: 2, cpuModel: 'CPU', memTotalMiB: 1024,
        loadavgStart: [0.5, 0.4, 0.3], loadavgEnd: [1, 0.9, 0.8], durationMs: 90_000,
        settings: { baselineS: 2, upgrades: 1, intervalS: 3, tailS: 1 },
      },
      cases: [c],
      throughput: [{ mode: 'keepalive', connections: 8, secondsPerTurn: 2, turns: 4, plainRps: 1000, sdHandoffRps: 990, ratio: 0.99, failed: 0 }],
      listeners: { listeners: 1004, readyMs: 900, oldExitMs: 950, checked: 1003, answeredByNew: 1003, checkMs: 400, failures: [] },
      idle: null,
      poolSizes: [],
      failures: [],
    };
    const md = markdown(results);
    expect(md).toContain('load average 0.50 0.40 0.30 at the start, 1.00 0.90 0.80 at the end');
    expect(md).toContain('Client and server share the 2 cores');
    expect(md).toContain('autocannon');
    expect(md).toMatch(/p99 during upgrades above 1.2 × steady: sd-handoff\/keepalive\/0MiB \(×\d+\.\d\d\)/);
    expect(md).toContain('| keep-alive ×8 | 4 × 2 s | 1000 | 990 | 0.990 | 0 |');
    expect(md).toContain('| 1004 | 900 | 950 | 1003/1003 | 400 |');
  });
});

/** A small XML well-formedness check: balanced tags, one root, quoted attributes, no raw `<` or bare `&` in text. */
function checkXml(text: string): { elements: Array<{ name: string; attrs: Record<string, string>; text: string }> } {
  const elements: Array<{ name: string; attrs: Record<string, string>; text: string }> = [];
  const stack: Array<{ name: string; attrs: Record<string, string>; text: string }> = [];
  let roots = 0;
  const entity = /&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/;
  const tokens = text.replace(/^<\?xml[^>]*\?>\s*/, '').match(/<!--[\s\S]*?-->|<[^>]*>|[^<]+/g) ?? [];
  for (const tok of tokens) {
    if (tok.startsWith('<!--')) continue;
    if (!tok.startsWith('<')) {
      if (entity.test(tok)) throw new Error(`bare & in text ${JSON.stringify(tok)}`);
      if (stack.length === 0 && tok.trim()) throw new Error(`text outside the root: ${JSON.stringify(tok)}`);
      if (stack.length) stack[stack.length - 1]!.text += tok;
      continue;
    }
    const close = /^<\/([A-Za-z][\w:-]*)\s*>$/.exec(tok);
    if (close) {
      const open = stack.pop();
      if (open?.name !== close[1]) throw new Error(`</${close[1]}> closes <${open?.name}>`);
      continue;
    }
    const m = /^<([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>$/.exec(tok);
    if (!m) throw new Error(`malformed tag ${JSON.stringify(tok)}`);
    const attrs: Record<string, string> = {};
    for (const a of m[2]!.matchAll(/([\w:-]+)="([^"]*)"/g)) {
      if (a[1]! in attrs) throw new Error(`attribute ${a[1]} twice in ${tok}`);
      if (entity.test(a[2]!)) throw new Error(`bare & in attribute ${a[1]}`);
      attrs[a[1]!] = a[2]!;
    }
    const el = { name: m[1]!, attrs, text: '' };
    elements.push(el);
    if (stack.length === 0) roots++;
    if (m[3] !== '/') stack.push(el);
  }
  if (stack.length) throw new Error(`unclosed <${stack.map((e) => e.name).join('> <')}>`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
  return { elements };
}

describe('SVG timeline', () => {
  it('the checker itself rejects broken XML', () => {
    expect(() => checkXml('<svg><g></svg>')).toThrow(/closes/);
    expect(() => checkXml('<svg><text>a & b</text></svg>')).toThrow(/bare &/);
    expect(() => checkXml('<svg x=1></svg>')).toThrow(/malformed/);
    expect(() => checkXml('<a/><b/>')).toThrow(/2 root/);
  });

  it('is well-formed XML with one shaded, titled mark per upgrade and escaped names', () => {
    const one = aggregateCase(fakeInput({ name: 'a<b>&"c"' }));
    const two = aggregateCase(
      fakeInput({
        target: 'naive',
        load: fakeLoad([
          { t: 1000, label: 'upgrade 1' },
          { t: 1500, label: 'done 1' },
          { t: 2000, label: 'upgrade 2' },
          { t: 2200, label: 'done 2' },
        ]),
      }),
    );
    const svg = timelineSvg([one, two] as CaseResult[], { title: 'R&D <test>' });
    const { elements } = checkXml(svg);
    expect(elements[0]!.name).toBe('svg');
    expect(elements[0]!.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    // 3 panels per case, one mark per upgrade in each.
    const marks = elements.filter((e) => e.attrs.class === 'upgrade');
    expect(marks).toHaveLength(3 * (1 + 2));
    const titles = elements.filter((e) => e.name === 'title').map((e) => e.text);
    expect(titles).toContain('upgrade 1: 1 s to 1.5 s');
    expect(titles).toContain('restart 2: 2 s to 2.2 s');
    // Marks sit where the upgrade was: at 1/3 and 2/3 of the (shared) 3 s axis.
    const x = marks.map((e) => Number(e.attrs.x));
    const panel0 = elements.filter((e) => e.name === 'rect' && e.attrs.stroke === '#ccc')[0]!;
    expect(x[0]).toBeCloseTo(Number(panel0.attrs.x) + Number(panel0.attrs.width) / 3, 0);
    expect(svg).toContain('data-name="a&lt;b&gt;&amp;&quot;c&quot;"');
    expect(svg).toContain('R&amp;D &lt;test&gt;');
    // Three line or bar series per case: requests/s and p99 as polylines.
    expect(elements.filter((e) => e.name === 'polyline')).toHaveLength(4);
  });

  it('an empty run is still a well-formed SVG', () => {
    expect(() => checkXml(timelineSvg([]))).not.toThrow();
  });

  it('axis bounds are 1, 2 or 5 × 10^k', () => {
    expect([niceMax(0), niceMax(0.3), niceMax(7), niceMax(1000), niceMax(1001), niceMax(2600)]).toEqual([1, 0.5, 10, 1000, 2000, 5000]);
  });
});
