/**
 * Zero-code adoption: `node --import sd-handoff/auto app.js` gives an unmodified application (plain `http`, Express,
 * Fastify, anything that ends in `net.Server#listen`) the Upgrader's zero-downtime upgrades under systemd.
 *
 * Before the application loads, this module creates the process's {@link Upgrader} and patches
 * `net.Server.prototype.listen`. When the application listens on a TCP port (or a unix path), the listener is
 * taken, in this order, from the upgrading parent (by name), from systemd (socket activation or the fd store: by
 * name, else the one inherited fd bound to that port), or bound fresh; the server then listens on that fd
 * (`listen({ fd })`), and its connections are tracked so that draining closes them without resets. Port 0 (an
 * ephemeral port) and `listen({ fd | handle })` are left alone.
 *
 * Ready (`READY=1`, or "ready" to the upgrading parent) is reported once every inherited listener was claimed, or
 * once `SDH_AUTO_LISTENERS` listeners are up when that is set, else `SDH_AUTO_READY_DELAY_MS` (default 100) after
 * the last listen. SIGHUP (or `sd-handoff upgrade` through `SDH_CONTROL_SOCKET`) upgrades: the same command line,
 * this module included, is started again and takes the listeners over; the old process drains and exits.
 *
 * Environment:
 *
 * | variable | meaning |
 * | --- | --- |
 * | `SDH_AUTO_NAMES` | listener names by port or path: `http=8080,admin=9090,api=/run/app/api.sock` (default `tcp-<port>` / `unix-<n>`; a second listen on the same port gets `-2`...) |
 * | `SDH_AUTO_LISTENERS` | how many listens make the application ready |
 * | `SDH_AUTO_READY_DELAY_MS` | default 100 |
 * | `SDH_PIDFILE` | PID file (`PIDFile=`), written before readiness |
 * | `SDH_FDSTORE=1` | keep the listeners in systemd's fd store |
 * | `SDH_DRAIN_TIMEOUT_MS`, `SDH_DRAIN_GRACE_MS`, `SDH_UPGRADE_TIMEOUT_MS` | the Upgrader's bounds |
 * | `SDH_CONTROL_SOCKET` | the control socket (read by the Upgrader) |
 *
 * and, through the Upgrader, `LISTEN_*`, `NOTIFY_SOCKET`, `WATCHDOG_*`, `SDH_UPGRADE`.
 *
 * This is the `import` entry: it waits (top-level await) until the Upgrader exists, so the application loads after
 * it and {@link upgrader} is there from its first line. `node --require sd-handoff/auto` and `require()` get
 * ./auto-require.ts instead, the same install without the await (docs/modules.md).
 *
 * @module sd-handoff/auto
 */
import { startAuto } from './auto-install.js';
import type { Upgrader } from './upgrade/upgrader.js';

const run = startAuto();

/** The Upgrader of this process (for applications that want to watch it: `upgrader.on('upgraded', ...)`). */
export const upgrader: Upgrader = await run.promise;

/**
 * The same Upgrader as a promise: the one form that reads the same from `import` and `require()` (where the
 * Upgrader is still being created when the application loads), for code shared between both.
 */
export function getUpgrader(): Promise<Upgrader> {
  return run.promise;
}
