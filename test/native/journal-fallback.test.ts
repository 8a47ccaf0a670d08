/**
 * Logs outside journald, as a container or a terminal gets them: a real pino logger writing through
 * `sd-handoff/pino` in a real process with no journal stream, read from its stderr.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

const SCRIPT = `
import pino from 'pino';
import { journalDestination } from 'sd-handoff/pino';
const log = pino({ level: 'debug' }, journalDestination());
log.info({ user: 'ada', attempt: 2 }, 'signed in');
const err = Object.assign(new Error('failed'), { code: 'E_DB' });
log.error(err);
log.warn({ err: new TypeError('bad input'), path: '/srv/my app' }, 'request rejected');
`;

describe('stderr fallback through pino', () => {
  it('keeps the message, the fields and the whole stack of log.error(err), one record per entry', () => {
    const env = { ...process.env };
    delete env.JOURNAL_STREAM;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', SCRIPT], { cwd: ROOT, env, encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(0);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines[0]).toBe('<6>signed in USER=ada ATTEMPT=2');
    // log.error(err): the message, the error's fields, then its stack, every line of it kept and indented.
    expect(lines[1]).toMatch(/^<3>failed EXCEPTION_NAME=Error EXCEPTION_CODE=E_DB ERR="\{.*\\"code\\":\\"E_DB\\".*\}"$/);
    expect(lines[2]).toBe('<3>  Error: failed');
    const stack = lines.slice(3).filter((l) => l.startsWith('<3>  '));
    expect(stack.length).toBeGreaterThan(2);
    expect(stack.every((l) => /^<3> {6}at /.test(l))).toBe(true);
    // The next entry starts unindented: a reader joining indented lines gets one record per entry.
    const warn = lines.findIndex((l) => l.startsWith('<4>'));
    expect(lines[warn]).toMatch(/^<4>request rejected EXCEPTION_NAME=TypeError ERR="\{.*\}" PATH="\/srv\/my app"$/);
    expect(lines[warn + 1]).toBe('<4>  TypeError: bad input');
    expect(lines.filter((l) => /^<\d>[^ ]/.test(l))).toHaveLength(3);
  });
});
