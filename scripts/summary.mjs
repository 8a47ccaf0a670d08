#!/usr/bin/env node
// Counts what `npm test` ran from vitest's JSON reports and ends with one plain line `N passed, N failed[, N
// skipped]`; exits 1 when a report is missing, any test failed, or no test ran, so a CI run that executed nothing
// (or lost a whole run) cannot pass.
//
//   node scripts/summary.mjs                   the runs listed in test-results.runs.json (written by scripts/test.mjs),
//                                              else test-results.json alone
//   node scripts/summary.mjs REPORT.json...    these reports, added up
//
// With several runs, a line per run comes first (`node 22.23.5 · unit, native: 389 passed, 0 failed (74.0 s)`), and
// every failed test is listed with the run it failed in, so a failure says which Node it was on.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MANIFEST = 'test-results.runs.json';
const MAX_LISTED = 30;

/**
 * Counts of one vitest JSON report. A file that failed to load (syntax error, failing hook) has no failed test of
 * its own: it counts as one failed test.
 */
export function countReport(report) {
  const files = report.testResults ?? [];
  const brokenFiles = files.filter((f) => f.status === 'failed' && !(f.assertionResults ?? []).some((a) => a.status === 'failed'));
  const failedTests = files.flatMap((f) =>
    (f.assertionResults ?? []).filter((a) => a.status === 'failed').map((a) => `${f.name}: ${a.fullName}`),
  );
  return {
    passed: report.numPassedTests ?? 0,
    failed: (report.numFailedTests ?? 0) + brokenFiles.length,
    skipped: (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0),
    failures: [...failedTests, ...brokenFiles.map((f) => `${f.name}: did not run (${(f.message || 'failed to load').split('\n')[0]})`)],
  };
}

/**
 * One run's counts: its report read and counted, or, when the report is missing or unreadable (the run crashed,
 * its Node could not be installed), one failure that says why. A run that exited non-zero with no failed test in
 * its report (an unhandled error, a global teardown that failed) counts one failure too.
 */
export function countRun(run, readText = (f) => readFileSync(f, 'utf8')) {
  let report;
  try {
    report = JSON.parse(readText(run.report));
  } catch (err) {
    const why = run.error ?? `no test report at ${run.report}: ${err.message}`;
    return { passed: 0, failed: 1, skipped: 0, failures: [why] };
  }
  const c = countReport(report);
  if (typeof run.status === 'number' && run.status !== 0 && c.failed === 0) {
    c.failed = 1;
    c.failures.push(run.error ?? `vitest exited ${run.status} with no failed test in ${run.report}: an error outside the tests (see the run's output)`);
  }
  return c;
}

const plural = (c) => `${c.passed} passed, ${c.failed} failed${c.skipped ? `, ${c.skipped} skipped` : ''}`;

/** The lines to print and the exit status, for `runs` ({ label, report, wallMs?, error? }). */
export function summarize(runs, readText) {
  const lines = [];
  const total = { passed: 0, failed: 0, skipped: 0 };
  for (const run of runs) {
    const c = countRun(run, readText);
    total.passed += c.passed;
    total.failed += c.failed;
    total.skipped += c.skipped;
    if (runs.length > 1) {
      const wall = typeof run.wallMs === 'number' ? ` (${(run.wallMs / 1000).toFixed(1)} s)` : '';
      lines.push(`${run.label}: ${plural(c)}${wall}`);
    }
    const tag = runs.length > 1 ? `[${run.label}] ` : '';
    for (const f of c.failures.slice(0, MAX_LISTED)) lines.push(`  FAIL ${tag}${f}`);
    if (c.failures.length > MAX_LISTED) lines.push(`  ... and ${c.failures.length - MAX_LISTED} more in ${run.report}`);
  }
  lines.push(plural(total));
  return { lines, status: total.passed > 0 && total.failed === 0 ? 0 : 1, total };
}

/** The runs to count: the named reports, else the manifest's runs, else test-results.json. */
export function runsFromArgs(args, dir = process.cwd()) {
  if (args.length > 0) return args.map((f) => ({ label: f, report: f }));
  const manifest = path.join(dir, MANIFEST);
  if (existsSync(manifest)) {
    const runs = JSON.parse(readFileSync(manifest, 'utf8')).runs ?? [];
    return runs.map((r) => ({ ...r, report: path.resolve(dir, r.report) }));
  }
  return [{ label: 'test-results.json', report: path.join(dir, 'test-results.json') }];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  let runs;
  try {
    runs = runsFromArgs(process.argv.slice(2));
  } catch (err) {
    runs = [{ label: MANIFEST, report: '', error: `unreadable ${MANIFEST}: ${err.message}` }];
  }
  const { lines, status } = summarize(runs);
  console.log(lines.join('\n'));
  process.exit(status);
}
