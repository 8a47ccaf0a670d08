/**
 * The one implementation behind both `sd-handoff/auto` entry points: `--import` (./auto.ts, which waits for the
 * Upgrader with a top-level await) and `--require` / `require()` (./auto-require.ts, which cannot: require() of an
 * ES module refuses a top-level await). This module has none, so both can load it.
 *
 * The listen patch is installed synchronously and the Upgrader is created in the background: a listen that comes
 * before the Upgrader exists (possible only through require, where the application starts loading at once) waits
 * for it. One install per process, whichever entry comes first: the other gets the same run.
 */
import dns from 'node:dns/promises';
import net from 'node:net';
import { drainServer, trackConnections } from './drain.js';
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

/** The environment of sd-handoff/auto, checked before anything is patched or created. */
function readAutoEnv(env: NodeJS.ProcessEnv) {
  return {
    names: parseAutoNames(env.SDH_AUTO_NAMES),
    expected: intEnv(env, 'SDH_AUTO_LISTENERS'),
    delayMs: intEnv(env, 'SDH_AUTO_READY_DELAY_MS') ?? 100,
    drainTimeoutMs: intEnv(env, 'SDH_DRAIN_TIMEOUT_MS') ?? 30_000,
    drainGraceMs: Math.max(1, intEnv(env, 'SDH_DRAIN_GRACE_MS') ?? 1000),
    upgradeTimeoutMs: intEnv(env, 'SDH_UPGRADE_TIMEOUT_MS') ?? 60_000,
  };
}

type AutoEnv = ReturnType<typeof readAutoEnv>;

/** The listens taken over in this process, and when they make it ready. */
class AutoListens {
  upg: Upgrader | undefined;
  pending = 0;
  #listened = 0;
  #readyTimer: NodeJS.Timeout | undefined;
  readonly #used = new Map<string, number>();

  constructor(
    readonly cfg: AutoEnv,
    readonly created: Promise<Upgrader>,
    readonly original: ListenFn,
  ) {}

  /** True once the Upgrader exists and no longer serves: listens then go to Node as they are. */
  get gone(): boolean {
    const state = this.upg?.state;
    return state === 'draining' || state === 'stopping' || state === 'stopped';
  }

  holdReady(): void {
    if (this.#readyTimer) clearTimeout(this.#readyTimer);
  }

  maybeReady(): void {
    this.holdReady();
    const u = this.upg;
    if (!u || this.pending > 0 || u.state !== 'starting') return;
    const waitingFor = u.unclaimedListeners().filter((l) => l.name !== 'sdh-control');
    const go = (): void => {
      if (this.pending > 0 || u.state !== 'starting') return;
      u.ready(`serving ${this.#listened} listener(s)`).catch((err: Error) => {
        process.stderr.write(`sd-handoff/auto: ready failed: ${err.message}\n`);
        process.exitCode = 1;
      });
    };
    if (this.cfg.expected !== undefined) {
      if (this.#listened >= this.cfg.expected) setImmediate(go);
    } else if (waitingFor.length === 0) setImmediate(go);
    else this.#readyTimer = setTimeout(go, this.cfg.delayMs);
  }

  #nameFor(spec: Spec): string {
    const key = spec.path ?? String(spec.port);
    const base = this.cfg.names.get(key) ?? (spec.path ? `unix-${[...this.#used.keys()].filter((k) => k.startsWith('unix-')).length + 1}` : `tcp-${spec.port}`);
    const n = (this.#used.get(base) ?? 0) + 1;
    this.#used.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  }

  /** Takes `server`'s listener over (waiting for the Upgrader if need be) and serves it with `server`. */
  async serve(server: net.Server, spec: Spec): Promise<void> {
    const upg = (this.upg = await this.created);
    const { drainTimeoutMs, drainGraceMs } = this.cfg;
    let host = spec.host;
    // Node resolves a host name to its first address; so do we, to bind or match the same address.
    if (host !== undefined && net.isIP(host) === 0) host = (await dns.lookup(host)).address;
    const address: StreamAddress = spec.path !== undefined ? { path: spec.path } : host === undefined ? { port: spec.port! } : { port: spec.port!, host };
    const name = inheritedName(upg, this.#nameFor(spec), spec, host);
    const held = await upg.holdListener(name, address, spec.backlog === undefined ? {} : { backlog: spec.backlog });
    trackConnections(server);
    upg.onDrain(() => drainServer(server, { timeoutMs: drainTimeoutMs, graceMs: drainGraceMs }));
    // Node keeps the backlog of an fd only as listen()'s second argument.
    this.original.call(server, { fd: held.fd }, spec.backlog ?? 511);
    await new Promise<void>((resolve, reject) => {
      if (server.listening) return resolve();
      server.once('listening', () => resolve());
      server.once('error', reject);
    });
    this.#listened++;
  }
}

/**
 * Installs the listen patch at once and creates the Upgrader; exported for tests. Throws on a bad environment;
 * the promise rejects (and the patch is removed) when the Upgrader cannot be created.
 */
export function installAuto(env: NodeJS.ProcessEnv = process.env): Promise<Upgrader> {
  const cfg = readAutoEnv(env);
  const { drainTimeoutMs, drainGraceMs, upgradeTimeoutMs } = cfg;
  const created = Upgrader.create({ pidFile: env.SDH_PIDFILE || undefined, fdStore: env.SDH_FDSTORE === '1', drainTimeoutMs, drainGraceMs, upgradeTimeoutMs });
  const original = net.Server.prototype.listen as unknown as ListenFn;
  const listens = new AutoListens(cfg, created, original);
  const patched = function patchedListen(this: net.Server, ...args: unknown[]): net.Server {
    const spec = parseListenArgs(args);
    if (!spec || (this as unknown as Record<symbol, unknown>)[INTERNAL_LISTEN] || listens.gone) return original.apply(this, args);
    const server = this;
    listens.pending++;
    listens.holdReady();
    if (spec.callback) server.once('listening', spec.callback);
    listens
      .serve(server, spec)
      .catch((err: unknown) => server.emit('error', err))
      .finally(() => {
        listens.pending--;
        listens.maybeReady();
      });
    return server;
  } as typeof net.Server.prototype.listen;
  net.Server.prototype.listen = patched;
  // Without an Upgrader, listen() must behave as Node's own again (the error itself reaches the entry point).
  created.catch(() => {
    if (net.Server.prototype.listen === patched) net.Server.prototype.listen = original as unknown as typeof net.Server.prototype.listen;
  });
  return created;
}

/** The inherited listener for `spec`: by name, else the one inherited TCP fd on that port (any address). */
function inheritedName(upg: Upgrader, name: string, spec: Spec, host: string | undefined): string {
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
}

/** sd-handoff/auto in this process: the Upgrader being created, and once it is, the Upgrader itself. */
export interface AutoRun {
  readonly promise: Promise<Upgrader>;
  upgrader?: Upgrader;
}

// A global, not a module variable: the two entry points are two modules, and a CommonJS application preloaded with
// `--import sd-handoff/auto` that also calls require('sd-handoff/auto') must not get a second Upgrader.
const RUN = Symbol.for('sd-handoff.auto');

/** Starts sd-handoff/auto once per process (see the module comment); later calls return the same run. */
export function startAuto(env: NodeJS.ProcessEnv = process.env): AutoRun {
  const g = globalThis as { [RUN]?: AutoRun };
  const existing = g[RUN];
  if (existing) return existing;
  const run: { promise: Promise<Upgrader>; upgrader?: Upgrader } = { promise: installAuto(env) };
  run.promise.then(
    (u) => (run.upgrader = u),
    () => {},
  );
  g[RUN] = run;
  return run;
}
