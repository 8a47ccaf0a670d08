/**
 * sd-handoff's journal on real journald (systemd 247, 252, 257), read back with `journalctl -o json`: fields and
 * priorities, one entry for a multi-line message, a 1 MiB entry through the memfd path, pino through
 * `sd-handoff/pino`, the `<N>` stderr fallback when there is no journal stream, and attribution (`_PID`,
 * `_SYSTEMD_UNIT`) of a service's native entries after an upgrade handover and after journald restarts.
 *
 * Fixtures: test/fixtures/journal-service.mjs (one-shot modes) and journal-upgrade.mjs (an Upgrader service that
 * logs on request). Every entry carries SDH_TEST_RUN=<id of this run>, so the tests find their own entries.
 * What plain stdout lines do after a handover depends on the systemd version: journal-stdout-handover.test.ts.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startJournalUpgrade } from './journal-units.js';
import { describeEachSuite, type Container, type JournalEntry } from './lab/index.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const NODE = '/usr/local/bin/node';
const SERVICE = '/project/test/fixtures/journal-service.mjs';

/** A field as text: journalctl prints values that are not printable UTF-8 as byte arrays. */
function text(v: JournalEntry[string] | undefined): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (v.length > 0 && typeof v[0] === 'number') return Buffer.from(v as number[]).toString('utf8');
  throw new Error(`field holds several values: ${JSON.stringify(v).slice(0, 200)}`);
}

/** Every entry matching `matches` in the whole journal (no unit filter), after `journalctl --sync`. */
async function journalAll(c: Container, matches: string[], extra: string[] = []): Promise<JournalEntry[]> {
  await c.exec(['journalctl', '--sync']);
  const r = await c.exec(['journalctl', '--no-pager', '-q', '-o', 'json', ...extra, ...matches], { check: true });
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as JournalEntry);
}

function byMessage(entries: JournalEntry[], message: string): JournalEntry {
  const found = entries.filter((e) => text(e.MESSAGE) === message);
  if (found.length !== 1) {
    throw new Error(`expected one entry "${message}", found ${found.length} among: ${entries.map((e) => JSON.stringify(text(e.MESSAGE)?.slice(0, 80))).join(', ')}`);
  }
  return found[0]!;
}

/** The line (1-based) of `needle` in a fixture, for CODE_LINE. */
function lineOf(fixture: string, needle: string): number {
  const lines = readFileSync(path.join(ROOT, 'test/fixtures', fixture), 'utf8').split('\n');
  const i = lines.findIndex((l) => l.includes(needle));
  if (i < 0) throw new Error(`${needle} not in ${fixture}`);
  return i + 1;
}

describeEachSuite('journal', (c, suite) => {
  const installed: string[] = [];
  const newRun = () => `${suite}-${randomUUID()}`;

  /**
   * Installs and runs a Type=oneshot unit of journal-service.mjs MODE; returns the unit and the run id. The process
   * lingers 1 s after logging: journald looks a native sender's unit up in /proc when it reads the datagram, and a
   * sender already reaped by then leaves its entries without _SYSTEMD_UNIT (seen on 247 under load; reproduced by
   * SIGSTOPping journald while a one-shot logs and exits).
   */
  async function oneshot(name: string, args: string, extra = ''): Promise<{ unit: string; run: string }> {
    const run = newRun();
    const unit = `sdh-j-${name}.service`;
    installed.push(unit);
    await c.installUnit(unit, `[Service]\nType=oneshot\nExecStart=${NODE} ${SERVICE} ${args}\nEnvironment=SDH_TEST_RUN=${run} SDH_LINGER_MS=1000\n${extra}`);
    await c.systemctl(['start', unit], { check: true, timeoutMs: 60_000 });
    return { unit, run };
  }

  afterAll(async () => {
    for (const u of installed.reverse()) await c.removeUnit(u);
  });

  it('fields and priorities arrive: PRIORITY, SYSLOG_IDENTIFIER, custom fields, EXCEPTION_* for an Error, CODE_* when asked', async () => {
    const { unit, run } = await oneshot('levels', 'levels');
    const entries = await c.journal(unit, { args: [`SDH_TEST_RUN=${run}`] });
    // Only native entries carry SDH_TEST_RUN.
    const native = entries.filter((e) => e._TRANSPORT === 'journal');
    expect(native).toHaveLength(entries.length);
    expect(native).toHaveLength(7);
    // One process wrote them all, as native entries of this unit.
    const pids = new Set(native.map((e) => e._PID));
    expect(pids.size).toBe(1);
    for (const e of native) {
      expect(e._SYSTEMD_UNIT).toBe(unit);
      expect(e.SYSLOG_IDENTIFIER).toBe('journal-service');
    }

    const info = byMessage(native, 'info line');
    expect(info).toMatchObject({ PRIORITY: '6', REQUEST_ID: 'r-1', COUNT: '42', OBJ: '{"a":1,"b":[2,3]}', FLAG: 'true' });
    expect(info.CODE_FILE).toBeUndefined();
    expect(info.EXCEPTION_TEXT).toBeUndefined();
    expect(byMessage(native, 'notice line').PRIORITY).toBe('5');
    expect(byMessage(native, 'warn line')).toMatchObject({ PRIORITY: '4', SLOW_MS: '1500' });
    expect(byMessage(native, 'debug line').PRIORITY).toBe('7');

    const err = byMessage(native, 'TypeError: boom');
    expect(err).toMatchObject({ PRIORITY: '3', EXCEPTION_NAME: 'TypeError', EXCEPTION_CODE: 'EBOOM', REQUEST_ID: 'r-2' });
    const stack = text(err.EXCEPTION_TEXT)!;
    expect(stack.split('\n')[0]).toBe('TypeError: boom');
    expect(stack).toMatch(/\n {4}at .*\/project\/test\/fixtures\/journal-service\.mjs:\d+:\d+/);
    expect(stack).toContain("code: 'EBOOM'");

    const wrapped = byMessage(native, 'wrapped');
    expect(wrapped).toMatchObject({ PRIORITY: '3', CAUSE: 'Error: disk full', EXCEPTION_NAME: 'Error', EXCEPTION_CODE: 'ENOSPC', ERRNO: '28' });

    const located = byMessage(native, 'located line');
    expect(located).toMatchObject({
      PRIORITY: '6',
      CODE_FILE: SERVICE,
      CODE_LINE: String(lineOf('journal-service.mjs', "located.info('located line')")),
      CODE_FUNC: 'logWithLocation',
    });

    // The fixture's report on stdout arrived through the stream, from the same process.
    const stream = (await c.journal(unit)).filter((e) => e._TRANSPORT === 'stdout');
    const last = JSON.parse(text(stream.at(-1)?.MESSAGE) ?? '{}') as { target?: string; stats?: { sent: number; stderr: number } };
    expect(last.target).toBe('journal');
    expect(last.stats).toMatchObject({ sent: 6, stderr: 0 });
    expect(stream.at(-1)?._PID).toBe([...pids][0]);
  });

  it('a 3-line message is one entry whose MESSAGE holds the newlines', async () => {
    const { unit, run } = await oneshot('multi', 'multi');
    const entries = await c.journal(unit, { args: [`SDH_TEST_RUN=${run}`] });
    expect(entries).toHaveLength(1);
    expect(text(entries[0]!.MESSAGE)).toBe('line one\nline two\nline three');
    expect(entries[0]).toMatchObject({ KIND: 'multi', PRIORITY: '6', _TRANSPORT: 'journal' });
    // No line of it was filed on its own.
    const all = await c.journal(unit);
    expect(all.filter((e) => text(e.MESSAGE) === 'line two')).toHaveLength(0);
  });

  it('a 1 MiB message arrives whole, through a sealed memfd (journalctl -o json prints it only with --all)', async () => {
    const size = 1024 * 1024;
    const { unit, run } = await oneshot('big', `big ${size}`);
    const entries = await c.journal(unit, { args: [`SDH_TEST_RUN=${run}`, '--all'] });
    const big = entries.find((e) => e.KIND === 'big');
    const message = text(big?.MESSAGE) ?? '';
    expect(message.length).toBe(size);
    const body = 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(Math.ceil(size / 36)).slice(0, size - 10);
    expect(message === `BEGIN-${body}-END`, `message starts ${message.slice(0, 20)} and ends ${message.slice(-20)}`).toBe(true);
    expect(big).toMatchObject({ _TRANSPORT: 'journal', _SYSTEMD_UNIT: unit, PRIORITY: '6' });
    const stats = JSON.parse(text(entries.find((e) => e.KIND === 'stats')?.STATS) ?? '{}') as { sent?: number; memfd?: number };
    expect(stats).toMatchObject({ sent: 1, memfd: 1 });
    // Without --all, journalctl's JSON output replaces fields of more than 4096 bytes with null.
    const plain = await c.journal(unit, { args: [`SDH_TEST_RUN=${run}`, 'KIND=big'] });
    expect(plain).toHaveLength(1);
    expect(plain[0]!.MESSAGE).toBeNull();
  });

  it('pino through sd-handoff/pino: levels as priorities, bindings and fields as fields, the error as EXCEPTION_*', async () => {
    const { unit, run } = await oneshot('pino', 'pino');
    const entries = (await c.journal(unit, { args: [`SDH_TEST_RUN=${run}`] })).filter((e) => e._TRANSPORT === 'journal');
    expect(entries.map((e) => [text(e.MESSAGE), e.PRIORITY])).toEqual([
      ['p-trace', '7'],
      ['p-debug', '7'],
      ['p-info world', '6'],
      ['p-warn', '4'],
      ['p-error', '3'],
      ['p-fatal', '2'],
    ]);
    expect(byMessage(entries, 'p-info world')).toMatchObject({ REQID: 'abc', USER: '{"name":"ann"}', SYSLOG_IDENTIFIER: 'journal-service' });
    expect(byMessage(entries, 'p-warn').COMPONENT).toBe('db');
    const err = byMessage(entries, 'p-error');
    expect(err).toMatchObject({ EXCEPTION_NAME: 'Error', EXCEPTION_CODE: 'EBROKEN' });
    expect(text(err.EXCEPTION_TEXT)).toMatch(/^Error: broken\n {4}at /);
    expect(JSON.parse(text(err.ERR)!)).toMatchObject({ type: 'Error', message: 'broken', code: 'EBROKEN' });
    for (const e of entries) {
      // pino's own time/pid/hostname are left to journald.
      expect(e.PID ?? e.HOSTNAME ?? e.TIME).toBeUndefined();
      expect(e._SYSTEMD_UNIT).toBe(unit);
    }
  });

  it('outside systemd (no JOURNAL_STREAM): `<N>` lines on stderr, nothing native in the journal', async () => {
    const run = newRun();
    const r = await c.node([SERVICE, 'fallback'], { env: { SDH_TEST_RUN: run }, check: true });
    expect(JSON.parse(r.stdout)).toMatchObject({ target: 'stderr', journalStream: null, stats: { sent: 0, stderr: 3 } });
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines.slice(0, 3)).toEqual([`<6>fallback info SDH_TEST_RUN=${run} REQUEST_ID=f-1`, `<4>fallback warn SDH_TEST_RUN=${run}`, `<3>RangeError: fallback boom SDH_TEST_RUN=${run} EXCEPTION_NAME=RangeError`]);
    expect(lines.length).toBeGreaterThan(3);
    for (const l of lines) expect(l).toMatch(/^<[0-7]>/);
    expect(await journalAll(c, [`SDH_TEST_RUN=${run}`])).toEqual([]);
  });

  it('JOURNAL_STREAM set but stdout and stderr redirected to files by the shell: `<N>` lines in the file, nothing native', async () => {
    const out = '/run/sdh-j-redirect.out';
    const errFile = '/run/sdh-j-redirect.err';
    const { unit, run } = await oneshot(
      'redirect',
      'fallback',
      // systemd sets JOURNAL_STREAM (stdout and stderr are the journal), then the shell points both elsewhere.
      `ExecStart=\nExecStart=/bin/sh -c 'exec ${NODE} ${SERVICE} fallback >${out} 2>${errFile}'\n`,
    );
    const report = JSON.parse(await c.readFile(out)) as { target: string; journalStream: string | null; stats: { stderr: number } };
    expect(report.journalStream).toMatch(/^\d+:\d+$/);
    expect(report).toMatchObject({ target: 'stderr', stats: { stderr: 3 } });
    const lines = (await c.readFile(errFile)).trimEnd().split('\n');
    expect(lines.slice(0, 3)).toEqual([`<6>fallback info SDH_TEST_RUN=${run} REQUEST_ID=f-1`, `<4>fallback warn SDH_TEST_RUN=${run}`, `<3>RangeError: fallback boom SDH_TEST_RUN=${run} EXCEPTION_NAME=RangeError`]);
    for (const l of lines) expect(l).toMatch(/^<[0-7]>/);
    expect(await journalAll(c, [`SDH_TEST_RUN=${run}`])).toEqual([]);
    expect((await c.journal(unit)).filter((e) => e._TRANSPORT !== 'journal' || e._PID !== '1')).toEqual([]);
  });

  it('StandardError=file: with stdout still the journal: JOURNAL_STREAM names stdout, so entries go native and the file stays empty', async () => {
    const errFile = '/run/sdh-j-stderr-file.err';
    const { unit, run } = await oneshot('stderrfile', 'fallback', `StandardError=file:${errFile}\n`);
    const entries = await c.journal(unit, { args: [`SDH_TEST_RUN=${run}`] });
    expect(entries.map((e) => [text(e.MESSAGE), e.PRIORITY, e._TRANSPORT])).toEqual([
      ['fallback info', '6', 'journal'],
      ['fallback warn', '4', 'journal'],
      ['RangeError: fallback boom', '3', 'journal'],
    ]);
    expect(await c.readFile(errFile)).toBe('');
  });

  describeUpgrade(c, newRun);
});

/** A running journal-upgrade.mjs service, upgraded once by `systemctl reload`, then journald restarted. */
function describeUpgrade(c: Container, newRun: () => string): void {
  const unit = 'sdh-j-upgrade.service';
  const port = 8391;
  const run = newRun();
  let oldPid = 0;
  let newPid = 0;
  let invocation = '';

  const logLine = async (tag: string): Promise<number> => {
    const r = await c.exec(['curl', '-sf', `http://127.0.0.1:${port}/log?tag=${tag}`], { check: true });
    return Number(r.stdout.trim());
  };
  const nativeEntry = async (tag: string): Promise<JournalEntry> => {
    const found = await c.journal(unit, { args: [`SDH_TEST_RUN=${run}`, `SDH_TEST_TAG=${tag}`] });
    expect(found, `native entries tagged ${tag}`).toHaveLength(1);
    return found[0]!;
  };

  beforeAll(async () => {
    await startJournalUpgrade(c, unit, port, run);
    const s = await c.show(unit, ['MainPID', 'InvocationID']);
    oldPid = Number(s.MainPID);
    invocation = s.InvocationID;
  });
  afterAll(async () => {
    await c.removeUnit(unit);
  });

  it('after an upgrade whose old process exited, the new process logs natively with its own _PID and the unit; upgrade-ready names both pids', async () => {
    expect(await logLine('before')).toBe(oldPid);
    expect(await nativeEntry('before')).toMatchObject({ _PID: String(oldPid), _SYSTEMD_UNIT: unit, _TRANSPORT: 'journal' });

    const r = await c.systemctl(['reload', unit], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    newPid = Number((await c.show(unit, ['MainPID'])).MainPID);
    expect(newPid).not.toBe(oldPid);
    await c.waitFor(async () => (await c.exec(['kill', '-0', String(oldPid)])).code !== 0, 15_000, { what: `old pid ${oldPid} to exit` });

    expect(await logLine('after-upgrade')).toBe(newPid);
    expect(await nativeEntry('after-upgrade')).toMatchObject({
      _PID: String(newPid),
      _SYSTEMD_UNIT: unit,
      _SYSTEMD_INVOCATION_ID: invocation,
      _TRANSPORT: 'journal',
      MESSAGE: `native after-upgrade from ${newPid}`,
    });

    // The Upgrader's own events, found the way an operator would look for them.
    const ready = await c.journal(unit, { args: ['SDH_EVENT=upgrade-ready', `_SYSTEMD_INVOCATION_ID=${invocation}`] });
    expect(ready).toHaveLength(1);
    expect(ready[0]).toMatchObject({ SDH_NEW_PID: String(newPid), SDH_OLD_PID: String(oldPid), _PID: String(oldPid), PRIORITY: '5' });
    const tookOver = await c.journal(unit, { args: ['SDH_EVENT=upgrade-took-over', `_SYSTEMD_INVOCATION_ID=${invocation}`] });
    expect(tookOver).toHaveLength(1);
    expect(tookOver[0]).toMatchObject({ SDH_NEW_PID: String(newPid), SDH_OLD_PID: String(oldPid), _PID: String(newPid), SDH_UPGRADE: ready[0]!.SDH_UPGRADE });
  });

  it('after `systemctl restart systemd-journald`, the new process still logs natively with its _PID and the unit', async () => {
    expect(newPid).toBeGreaterThan(0);
    const before = (await c.show('systemd-journald.service', ['MainPID'])).MainPID;
    await c.systemctl(['restart', 'systemd-journald.service'], { check: true });
    const after = (await c.show('systemd-journald.service', ['MainPID', 'ActiveState'])) as { MainPID: string; ActiveState: string };
    expect(after.ActiveState).toBe('active');
    expect(after.MainPID).not.toBe(before);

    expect(await logLine('after-journald-restart')).toBe(newPid);
    expect(await nativeEntry('after-journald-restart')).toMatchObject({
      _PID: String(newPid),
      _SYSTEMD_UNIT: unit,
      _SYSTEMD_INVOCATION_ID: invocation,
      _TRANSPORT: 'journal',
    });
  });
}
