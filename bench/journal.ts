/**
 * `npm run bench:journal` (`npx tsx bench/journal.ts`): how fast entries reach journald, and how much logging delays
 * the event loop, for sd-handoff's native journal vs pino writing to stderr that journald captures.
 *
 * For each suite (default all three: bullseye 247, bookworm 252, trixie 257; `--suites bookworm` for one) it boots a lab container of its own
 * (test/integration/lab, stopped in `finally`), turns journald's rate limit off (RateLimitIntervalSec=0: the default
 * 10,000 entries per 30 s per service would drop most of a burst) and runs test/fixtures/journal-bench.mjs as a
 * service once per variant:
 *   native       createJournal().info(message, 3 fields): datagrams to /run/systemd/journal/socket
 *   pino-native  pino through sd-handoff/pino (the same datagrams, plus pino's JSON serialisation and its parse)
 *   pino-stderr  pino.destination(2), synchronous writes to the stdout/stderr stream (StandardError=journal)
 * Each logs `--entries` entries as fast as it can, `--batch` per event-loop turn, with
 * perf_hooks.monitorEventLoopDelay (1 ms resolution) recording the loop's delay. The bench then waits until
 * `journalctl _SYSTEMD_INVOCATION_ID=<the run's>` holds every entry the producer did not report dropped.
 *
 * Reported per variant: producer entries/s (until the last entry was handed to the kernel: `flush()` resolved, or
 * the last synchronous write returned), delivered entries/s (from the first entry to journald's receive time of the
 * last, `__REALTIME_TIMESTAMP`), event-loop delay p50/p99/max, entries dropped. Writes bench/results/journal.json and
 * bench/results/journal.md. Exit 1 when an entry never arrived, 2 on bad options.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ALL_SUITES, bootContainer, type Container, type Suite } from '../test/integration/lab/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench/results');
const NODE = '/usr/local/bin/node';
const FIXTURE = '/project/test/fixtures/journal-bench.mjs';
const VARIANTS = ['native', 'pino-native', 'pino-stderr'] as const;
type Variant = (typeof VARIANTS)[number];

interface ProducerResult {
  variant: Variant;
  n: number;
  batch: number;
  startEpochMs: number;
  producerMs: number;
  loopDelayMs: { p50: number; p99: number; max: number; mean: number };
  stats: { sent: number; memfd: number; stderr: number; queued: number; dropped: number } | null;
}

interface Row {
  suite: Suite;
  systemd: string;
  variant: Variant;
  entries: number;
  delivered: number;
  dropped: number;
  producerMs: number;
  producerPerSec: number;
  deliveredMs: number;
  deliveredPerSec: number;
  loopDelayMs: ProducerResult['loopDelayMs'];
  /** Entries the native journal wrote to stderr instead (journald unreachable): 0 expected. */
  stderrFallback: number;
}

function usage(message: string): never {
  process.stderr.write(`bench/journal.ts: ${message}\nusage: npx tsx bench/journal.ts [--suites bullseye,bookworm,trixie] [--entries 50000] [--batch 100]\n`);
  process.exit(2);
}

function options(): { suites: Suite[]; entries: number; batch: number } {
  let values;
  try {
    ({ values } = parseArgs({
      options: { suites: { type: 'string', default: ALL_SUITES.join(',') }, entries: { type: 'string', default: '50000' }, batch: { type: 'string', default: '100' } },
      strict: true,
    }));
  } catch (e) {
    usage((e as Error).message);
  }
  const suites = values.suites.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of suites) if (!(ALL_SUITES as readonly string[]).includes(s)) usage(`--suites: unknown suite ${JSON.stringify(s)} (known: ${ALL_SUITES.join(', ')})`);
  const int = (name: string, v: string, min: number, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
  return { suites: suites as Suite[], entries: int('entries', values.entries, 1, 1_000_000), batch: int('batch', values.batch, 1, 100_000) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Entries of the run that journald holds: messages "bench <i>" (pino-stderr's lines are JSON holding "msg":"bench <i>"). */
async function countDelivered(c: Container, unit: string): Promise<{ count: number; lastUs: number }> {
  await c.exec(['journalctl', '--sync']);
  const r = await c.sh(
    `journalctl --no-pager -q -o cat --output-fields=MESSAGE _SYSTEMD_UNIT=${unit} | grep -c 'bench [0-9]' || true; ` +
      `journalctl --no-pager -q -o json -n 1 --output-fields=MESSAGE _SYSTEMD_UNIT=${unit}`,
    { check: true, timeoutMs: 60_000 },
  );
  const [countLine, lastLine] = r.stdout.trim().split('\n');
  const last = lastLine ? (JSON.parse(lastLine) as { __REALTIME_TIMESTAMP?: string }) : {};
  return { count: Number(countLine), lastUs: Number(last.__REALTIME_TIMESTAMP ?? 0) };
}

async function runVariant(c: Container, variant: Variant, entries: number, batch: number): Promise<Row> {
  const unit = `sdh-bench-${variant}.service`;
  const result = `/run/sdh-bench/${variant}.json`;
  await c.installUnit(
    unit,
    [
      '[Service]',
      // The producer stays up until stopped, so journald still finds its unit for entries it reads late.
      'Type=exec',
      `ExecStart=${NODE} ${FIXTURE} ${variant} ${entries} ${batch} ${result}`,
      'StandardOutput=journal',
      'StandardError=journal',
      '',
    ].join('\n'),
  );
  await c.exec(['mkdir', '-p', '/run/sdh-bench'], { check: true });
  await c.systemctl(['start', unit], { check: true });
  await c.waitFor(async () => (await c.exec(['test', '-s', result])).code === 0, 120_000, { intervalMs: 100, what: `${variant}: ${result}` });
  const produced = JSON.parse(await c.readFile(result)) as ProducerResult;
  const dropped = produced.stats?.dropped ?? 0;
  const expected = entries - dropped;
  let seen = { count: 0, lastUs: 0 };
  const deadline = Date.now() + 60_000;
  for (;;) {
    seen = await countDelivered(c, unit);
    if (seen.count >= expected || Date.now() > deadline) break;
    await sleep(250);
  }
  const deliveredMs = seen.lastUs / 1000 - produced.startEpochMs;
  await c.removeUnit(unit);
  return {
    suite: c.suite,
    systemd: c.systemdVersionString,
    variant,
    entries,
    delivered: seen.count,
    dropped,
    producerMs: produced.producerMs,
    producerPerSec: Math.round((entries / produced.producerMs) * 1000),
    deliveredMs: Math.round(deliveredMs),
    deliveredPerSec: Math.round((seen.count / deliveredMs) * 1000),
    loopDelayMs: produced.loopDelayMs,
    stderrFallback: produced.stats?.stderr ?? 0,
  };
}

async function benchSuite(suite: Suite, entries: number, batch: number): Promise<Row[]> {
  const c = await bootContainer(suite, { log: (l) => process.stderr.write(`[lab] ${l}\n`) });
  try {
    await c.writeFile('/etc/systemd/journald.conf.d/sdh-bench.conf', '[Journal]\nRateLimitIntervalSec=0\nRateLimitBurst=0\n');
    await c.systemctl(['restart', 'systemd-journald.service'], { check: true });
    const rows: Row[] = [];
    for (const variant of VARIANTS) {
      const row = await runVariant(c, variant, entries, batch);
      process.stderr.write(`${suite} ${variant}: ${JSON.stringify(row)}\n`);
      rows.push(row);
    }
    return rows;
  } finally {
    await c.stop();
  }
}

const fmt = (n: number) => n.toLocaleString('en-US');

function markdown(rows: Row[], meta: Record<string, unknown>): string {
  const lines = [
    '# journald: native entries vs pino to a captured stderr',
    '',
    `\`npx tsx bench/journal.ts\` (${meta.date}): ${fmt(rows[0]?.entries ?? 0)} entries per variant, ${meta.batch} per event-loop turn, in a lab`,
    `container (systemd as PID 1, journald's rate limit off, journal on the container's tmpfs overlay); host: ${meta.cpus} CPUs (${meta.cpuModel}),`,
    `load average ${meta.loadavg} at the start, Node ${meta.node}, kernel ${meta.kernel}. One run: the host is shared, so read ratios, not absolutes.`,
    '',
    '| suite | variant | producer entries/s | delivered entries/s | loop delay p50 / p99 / max (ms) | delivered / dropped |',
    '| --- | --- | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.suite} (${r.systemd.replace(/^systemd /, '').split(' ')[0]}) | ${r.variant} | ${fmt(r.producerPerSec)} | ${fmt(r.deliveredPerSec)} | ${r.loopDelayMs.p50} / ${r.loopDelayMs.p99} / ${r.loopDelayMs.max} | ${fmt(r.delivered)} / ${fmt(r.dropped)} |`,
    ),
    '',
    '- native: `createJournal().info(message, { N, REQ_ID, ROUTE })`; pino-native: pino through `sd-handoff/pino`;',
    '  pino-stderr: `pino(pino.destination(2))` (synchronous writes) with `StandardError=journal`.',
    '- producer: until the last entry was handed to the kernel (`flush()` resolved, or the last write returned);',
    '  delivered: from the first entry to journald\'s receive time (`__REALTIME_TIMESTAMP`) of the last.',
    '- loop delay: `perf_hooks.monitorEventLoopDelay({ resolution: 1 })` while logging; a batch of entries runs per turn,',
    '  so p50 is about one batch\'s cost, and p99/max show the turns that waited for the log sink.',
    ...(rows.some((r) => r.variant === 'pino-stderr' && r.loopDelayMs.max >= 100)
      ? [
          '- pino-stderr\'s turns of 100 ms and more: the stream socket to journald was full, the write failed with EAGAIN and',
          '  sonic-boom (pino\'s destination) sleeps 100 ms (`BUSY_WRITE_TIMEOUT`) before it retries, blocking the loop. The native',
          '  journal queues in memory instead (up to 8 MiB) and retries on a timer, so its producer rate is journald\'s rate.',
        ]
      : []),
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const o = options();
  const t0 = Date.now();
  const meta = {
    date: new Date().toISOString(),
    entries: o.entries,
    batch: o.batch,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    loadavg: os.loadavg().map((l) => l.toFixed(2)).join(' '),
    node: process.version,
    kernel: os.release(),
  };
  const rows: Row[] = [];
  for (const suite of o.suites) rows.push(...(await benchSuite(suite, o.entries, o.batch)));
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(path.join(RESULTS, 'journal.json'), `${JSON.stringify({ ...meta, durationMs: Date.now() - t0, rows }, null, 2)}\n`);
  const md = markdown(rows, meta);
  writeFileSync(path.join(RESULTS, 'journal.md'), md);
  process.stdout.write(md);
  const missing = rows.filter((r) => r.delivered < r.entries - r.dropped);
  if (missing.length > 0) {
    process.stderr.write(`entries never arrived: ${missing.map((r) => `${r.suite} ${r.variant} ${r.delivered}/${r.entries - r.dropped}`).join(', ')}\n`);
    process.exitCode = 1;
  }
}

await main();
