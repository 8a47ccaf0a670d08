/** examples/hello-http as the lab tests install it: its shipped unit files, pointed at the project in /project. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { type Container, TIME_FACTOR, scaled } from './lab/index.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

export const UNIT = 'hello-http.service';
export const SOCKET = 'hello-http.socket';
export const PIDFILE = '/run/hello-http/hello-http.pid';

/**
 * A shipped example unit file (`hello-http.service`, `hello-http.socket`), with /opt/sd-handoff -> /project. With
 * SDH_TIME_FACTOR set, the service's time limits (UPGRADE_TIMEOUT_MS, DRAIN_TIMEOUT_MS, TimeoutStartSec=,
 * TimeoutStopSec=, `upgrade --timeout`) are stretched by it, and so is GET /slow (SLOW_MS), as every other wait of the tests is.
 */
export function exampleUnit(name: string): string {
  const text = readFileSync(path.join(ROOT, 'examples/hello-http', name), 'utf8').replaceAll('/opt/sd-handoff', '/project');
  if (TIME_FACTOR === 1 || !name.endsWith('.service')) return text;
  return text
    .replace(/\b(UPGRADE_TIMEOUT_MS|DRAIN_TIMEOUT_MS)=(\d+)/g, (_, k: string, v: string) => `${k}=${scaled(Number(v))}`)
    .replace(/ --timeout (\d+)/g, (_, v: string) => ` --timeout ${scaled(Number(v))}`)
    .replace(/^(TimeoutStartSec|TimeoutStopSec)=(\d+)$/gm, (_, k: string, v: string) => `${k}=${scaled(Number(v))}`)
    .replace(/^\[Service\]\n/m, `[Service]\nEnvironment=SLOW_MS=${scaled(3000)}\n`);
}

/** The unit's MainPID as systemd reports it. */
export async function mainPid(c: Container, unit = UNIT): Promise<number> {
  return Number((await c.show(unit, ['MainPID'])).MainPID);
}

/**
 * `systemctl reload UNIT` that must succeed: a failure fails the test with what says why, systemd's error, the unit's
 * StatusText and its journal since `since` (the Upgrader's own account of the failed upgrade).
 */
export async function reloadOk(c: Container, unit: string, what: string, since = '-60s'): Promise<void> {
  const r = await c.systemctl(['reload', unit], { timeoutMs: 90_000 });
  if (r.code === 0) return;
  const status = (await c.show(unit, ['StatusText'])).StatusText;
  const log = (await c.journal(unit, { since })).map((e) => `${e._PID ?? ''} ${String(e.MESSAGE)}`).slice(-25).join('\n');
  throw new Error(`${what} failed: ${r.stderr.trim()}\nStatusText: ${status}\njournal:\n${log}`);
}
