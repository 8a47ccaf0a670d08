/**
 * Plain stdout lines of a service after an upgrade handover, next to its native entries: the difference systemd
 * v244 made (systemd#13708, fixed by #13771: journald re-reads the sender's SCM_CREDENTIALS on stdout streams).
 *
 * The new process writes to the stdout stream systemd opened for the OLD one (the Upgrader dup2()s it onto fd 1/2
 * at handover). Before v244 journald kept the credentials of whoever connected the stream: lines after the
 * handover carry the old `_PID`, and once journald restarts (and the old process is gone) they lose
 * `_SYSTEMD_UNIT` and drop out of `journalctl -u`. Native entries carry credentials on every datagram and are
 * right on every version.
 *
 * In the lab (247, 252, 257) the `< 244` test is skipped with that reason and the `>= 244` one asserts that the
 * stream lines ARE attributed to the new process and the unit; the Vagrant matrix (Ubuntu 18.04, systemd 237) runs
 * the other.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startJournalUpgrade } from './journal-units.js';
import { describeEachSuite, type Container, type JournalEntry } from './lab/index.js';

/** The first systemd whose journald refreshes a stdout stream's credentials per message. */
const FIXED_IN = 244;

/** Every entry whose MESSAGE is exactly `message`, in the whole journal (not only `-u`). */
async function byMessage(c: Container, message: string): Promise<JournalEntry[]> {
  await c.exec(['journalctl', '--sync']);
  const r = await c.exec(['journalctl', '--no-pager', '-q', '-o', 'json', `MESSAGE=${message}`], { check: true });
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as JournalEntry);
}

describeEachSuite('journal: stdout stream vs native after an upgrade handover', (c, suite) => {
  const unit = 'sdh-j-stdout.service';
  const port = 8392;
  const run = `${suite}-${randomUUID()}`;
  let oldPid = 0;
  let newPid = 0;
  /** Tags logged after the handover (old process gone) and after journald restarted. */
  const tags = { handover: `handover-${run}`, restart: `restart-${run}` };

  beforeAll(async () => {
    await startJournalUpgrade(c, unit, port, run);
    oldPid = Number((await c.show(unit, ['MainPID'])).MainPID);
    const r = await c.systemctl(['reload', unit], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`systemctl reload ${unit} failed: ${r.stderr}`);
    newPid = Number((await c.show(unit, ['MainPID'])).MainPID);
    if (newPid === oldPid) throw new Error(`MainPID still ${oldPid} after the reload`);
    await c.waitFor(async () => (await c.exec(['kill', '-0', String(oldPid)])).code !== 0, 15_000, { what: `old pid ${oldPid} to exit` });
    await c.exec(['curl', '-sf', `http://127.0.0.1:${port}/log?tag=${tags.handover}`], { check: true });
    await c.systemctl(['restart', 'systemd-journald.service'], { check: true });
    await c.exec(['curl', '-sf', `http://127.0.0.1:${port}/log?tag=${tags.restart}`], { check: true });
  });
  afterAll(async () => {
    await c.removeUnit(unit);
  });

  /** The native entry and the stdout line the service wrote for `tag`, each exactly once. */
  async function lines(tag: string): Promise<{ native: JournalEntry; stdout: JournalEntry }> {
    const native = await byMessage(c, `native ${tag} from ${newPid}`);
    const stdout = await byMessage(c, `stdout ${tag} from ${newPid}`);
    expect(native, `native ${tag}`).toHaveLength(1);
    expect(stdout, `stdout ${tag}`).toHaveLength(1);
    expect(native[0]!._TRANSPORT).toBe('journal');
    expect(stdout[0]!._TRANSPORT).toBe('stdout');
    return { native: native[0]!, stdout: stdout[0]! };
  }

  it.skipIf(c.systemdVersion < FIXED_IN)(
    `systemd >= ${FIXED_IN}: stdout lines after the handover carry the new _PID and the unit, also after journald restarts (${c.label})`,
    async () => {
      for (const tag of [tags.handover, tags.restart]) {
        const { native, stdout } = await lines(tag);
        expect(native).toMatchObject({ _PID: String(newPid), _SYSTEMD_UNIT: unit });
        expect(stdout, tag).toMatchObject({ _PID: String(newPid), _SYSTEMD_UNIT: unit });
      }
      // And `journalctl -u` finds the stream lines.
      const messages = (await c.journal(unit)).map((e) => e.MESSAGE);
      expect(messages).toContain(`stdout ${tags.restart} from ${newPid}`);
    },
  );

  it.skipIf(c.systemdVersion >= FIXED_IN)(
    `systemd < ${FIXED_IN} (systemd#13708): native entries keep the new _PID and the unit; stdout lines carry the old _PID and lose _SYSTEMD_UNIT after journald restarts (${c.label})`,
    async () => {
      for (const tag of [tags.handover, tags.restart]) {
        const { native } = await lines(tag);
        expect(native).toMatchObject({ _PID: String(newPid), _SYSTEMD_UNIT: unit });
      }
      const handover = (await lines(tags.handover)).stdout;
      expect(handover._PID).toBe(String(oldPid));
      const restart = (await lines(tags.restart)).stdout;
      expect(restart._SYSTEMD_UNIT).toBeUndefined();
      const messages = (await c.journal(unit)).map((e) => e.MESSAGE);
      expect(messages).not.toContain(`stdout ${tags.restart} from ${newPid}`);
      expect(messages).toContain(`native ${tags.restart} from ${newPid}`);
    },
  );
});
