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
 *   SDH_AUTO_NAMES          listener names by port or path: `http=8080,admin=9090,api=/run/app/api.sock`
 *                           (default `tcp-<port>` / `unix-<n>`; a second listen on the same port gets `-2`...)
 *   SDH_AUTO_LISTENERS      how many listens make the application ready
 *   SDH_AUTO_READY_DELAY_MS default 100
 *   SDH_PIDFILE             PID file (PIDFile=), written before readiness
 *   SDH_FDSTORE=1           keep the listeners in systemd's fd store
 *   SDH_DRAIN_TIMEOUT_MS, SDH_DRAIN_GRACE_MS, SDH_UPGRADE_TIMEOUT_MS
 *   SDH_CONTROL_SOCKET      the control socket (read by the Upgrader)
 * and, through the Upgrader, LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*, SDH_UPGRADE.
 */
import dns from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';
import { drain, drainNet, trackConnections } from './drain.js';
import { sdError, show } from './errors.js';
import { INTERNAL_LISTEN, type StreamAddress } from './upgrade/listeners.js';
import { Upgrader } from './upgrade/upgrader.js';

type ListenFn = (...args: unknown[]) => net.Server;

interface Spec {
  port?: number;
  host?: string;
  path?: string;
  backlog?: number;
  callback?: () => void;
}

function intEnv(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v)) throw sdError('SDH_INVALID_ENV', `${name}=${show(v)} is not a non-negative integer`, { variable: name, value: v });
  return Number(v);
}

/** Parses `SDH_AUTO_NAMES` (`name=port` or `name=/path`, comma-separated) into key (port or path) -> name. */
export function parseAutoNames(text: string | undefined): Map<string, string> {
  const map = new Map<string, string>();
  if (!text) return map;
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([^=:\s]+)=(\d+|\/\S+|@\S+)$/.exec(part);
    if (!m) throw sdError('SDH_INVALID_ENV', `SDH_AUTO_NAMES entry ${show(part)} is not name=port or name=/path`, { variable: 'SDH_AUTO_NAMES', value: text });
    map.set(m[2]!, m[1]!);
  }
  return map;
}

/** The arguments of `server.listen(...)` we take over; undefined for the forms we leave alone. */
export function parseListenArgs(args: unknown[]): Spec | undefined {
  const callback = typeof args[args.length - 1] === 'function' ? (args[args.length - 1] as () => void) : undefined;
  const rest = callback ? args.slice(0, -1) : args;
  const a0 = rest[0];
  const num = (v: unknown): number | undefined =>
    typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined;
  if (typeof a0 === 'object' && a0 !== null) {
    const o = a0 as Record<string, unknown>;
    if (o.fd !== undefined || o.handle !== undefined || o._handle !== undefined) return undefined;
    if (typeof o.path === 'string' && o.path !== '') return { path: o.path, backlog: num(o.backlog), callback };
    const port = num(o.port);
    if (port === undefined || port === 0) return undefined;
    return { port, host: typeof o.host === 'string' && o.host !== '' ? o.host : undefined, backlog: num(o.backlog), callback };
  }
  const port = num(a0);
  if (port !== undefined) {
    if (port === 0) return undefined;
    const host = typeof rest[1] === 'string' ? rest[1] : undefined;
    const backlog = num(host !== undefined ? rest[2] : rest[1]);
    return { port, host: host || undefined, backlog, callback };
  }
  if (typeof a0 === 'string' && a0 !== '') return { path: a0, backlog: num(rest[1]), callback };
  return undefined;
}

/** Installs the listen patch; exported for tests. Returns the Upgrader. */
export async function installAuto(env: NodeJS.ProcessEnv = process.env): Promise<Upgrader> {
  const names = parseAutoNames(env.SDH_AUTO_NAMES);
  const expected = intEnv(env, 'SDH_AUTO_LISTENERS');
  const delayMs = intEnv(env, 'SDH_AUTO_READY_DELAY_MS') ?? 100;
  const drainTimeoutMs = intEnv(env, 'SDH_DRAIN_TIMEOUT_MS') ?? 30_000;
  const drainGraceMs = intEnv(env, 'SDH_DRAIN_GRACE_MS') ?? 1000;
  const upg = await Upgrader.create({
    pidFile: env.SDH_PIDFILE || undefined,
    fdStore: env.SDH_FDSTORE === '1',
    drainTimeoutMs,
    drainGraceMs: Math.max(1, drainGraceMs),
    upgradeTimeoutMs: intEnv(env, 'SDH_UPGRADE_TIMEOUT_MS') ?? 60_000,
  });

  const original = net.Server.prototype.listen as unknown as ListenFn;
  const used = new Map<string, number>();
  let pending = 0;
  let listened = 0;
  let readyTimer: NodeJS.Timeout | undefined;

  const maybeReady = (): void => {
    if (readyTimer) clearTimeout(readyTimer);
    if (pending > 0 || upg.state !== 'starting') return;
    const waitingFor = upg.unclaimedListeners().filter((l) => l.name !== 'sdh-control');
    const go = (): void => {
      if (pending > 0 || upg.state !== 'starting') return;
      upg.ready(`serving ${listened} listener(s)`).catch((err: Error) => {
        process.stderr.write(`sd-handoff/auto: ready failed: ${err.message}\n`);
        process.exitCode = 1;
      });
    };
    if (expected !== undefined) {
      if (listened >= expected) setImmediate(go);
    } else if (waitingFor.length === 0) setImmediate(go);
    else readyTimer = setTimeout(go, delayMs);
  };

  const nameFor = (spec: Spec): string => {
    const key = spec.path ?? String(spec.port);
    const base = names.get(key) ?? (spec.path ? `unix-${[...used.keys()].filter((k) => k.startsWith('unix-')).length + 1}` : `tcp-${spec.port}`);
    const n = (used.get(base) ?? 0) + 1;
    used.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  };

  /** The inherited listener for `spec`: by name, else the one inherited TCP fd on that port (any address). */
  const inheritedName = (name: string, spec: Spec, host: string | undefined): string => {
    const free = upg.unclaimedListeners();
    if (free.some((l) => l.name === name)) return name;
    if (spec.port !== undefined) {
      const onPort = free.filter((l) => (l.family === 'inet' || l.family === 'inet6') && l.port === spec.port);
      const exact = onPort.filter((l) => host === undefined || l.address === host);
      const pick = exact.length === 1 ? exact[0] : onPort.length === 1 ? onPort[0] : undefined;
      if (pick) return pick.name;
    } else {
      const same = free.filter((l) => l.family === 'unix' && l.address === spec.path);
      if (same.length === 1) return same[0]!.name;
    }
    return name;
  };

  net.Server.prototype.listen = function patchedListen(this: net.Server, ...args: unknown[]): net.Server {
    const spec = parseListenArgs(args);
    if (!spec || (this as unknown as Record<symbol, unknown>)[INTERNAL_LISTEN] || upg.state === 'draining' || upg.state === 'stopping' || upg.state === 'stopped') return original.apply(this, args);
    const server = this;
    pending++;
    if (readyTimer) clearTimeout(readyTimer);
    if (spec.callback) server.once('listening', spec.callback);
    void (async () => {
      try {
        let host = spec.host;
        // Node resolves a host name to its first address; so do we, to bind or match the same address.
        if (host !== undefined && net.isIP(host) === 0) host = (await dns.lookup(host)).address;
        const address: StreamAddress = spec.path !== undefined ? { path: spec.path } : host === undefined ? { port: spec.port! } : { port: spec.port!, host };
        const name = inheritedName(nameFor(spec), spec, host);
        const held = await upg.holdListener(name, address, spec.backlog === undefined ? {} : { backlog: spec.backlog });
        const httpLike = server instanceof http.Server || typeof (server as http.Server).closeIdleConnections === 'function';
        trackConnections(server);
        upg.onDrain(() => (httpLike ? drain(server as http.Server, { timeoutMs: drainTimeoutMs, graceMs: drainGraceMs }) : drainNet(server, { timeoutMs: drainTimeoutMs })));
        // Node keeps the backlog of an fd only as listen()'s second argument.
        original.call(server, { fd: held.fd }, spec.backlog ?? 511);
        await new Promise<void>((resolve, reject) => {
          if (server.listening) return resolve();
          server.once('listening', () => resolve());
          server.once('error', reject);
        });
        listened++;
      } catch (err) {
        server.emit('error', err);
      } finally {
        pending--;
        maybeReady();
      }
    })();
    return server;
  } as typeof net.Server.prototype.listen;

  return upg;
}

/** The Upgrader of this process (for applications that want to watch it: `upgrader.on('upgraded', ...)`). */
export const upgrader: Upgrader = await installAuto();
