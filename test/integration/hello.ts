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
