/** examples/hello-http as the lab tests install it: its shipped unit files, pointed at the project in /project. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { type Container, scaled } from './lab/index.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

export const UNIT = 'hello-http.service';
export const SOCKET = 'hello-http.socket';
export const PIDFILE = '/run/hello-http/hello-http.pid';

/**
 * A shipped example unit file (`hello-http.service`, `hello-http.socket`), with /opt/sd-handoff -> /project; a service
 * also gets SLOW_MS (GET /slow) stretched by SDH_TIME_FACTOR, as every other wait of the tests is.
 */
export function exampleUnit(name: string): string {
  const text = readFileSync(path.join(ROOT, 'examples/hello-http', name), 'utf8').replaceAll('/opt/sd-handoff', '/project');
  return name.endsWith('.service') ? text.replace(/^\[Service\]\n/m, `[Service]\nEnvironment=SLOW_MS=${scaled(3000)}\n`) : text;
}

/** The unit's MainPID as systemd reports it. */
export async function mainPid(c: Container, unit = UNIT): Promise<number> {
  return Number((await c.show(unit, ['MainPID'])).MainPID);
}
