/**
 * systemd's D-Bus API, the few calls a service's operator needs: load a unit, read its state, run a job
 * (start/stop/restart/reload) and wait for its result, watch its properties, read a socket unit's listen addresses.
 *
 * Talks to `org.freedesktop.systemd1` on the system bus through dbus-next (pure JavaScript, no libdbus), at the
 * address given, else `$DBUS_SYSTEM_BUS_ADDRESS`, else `unix:path=/run/dbus/system_bus_socket`.
 * See org.freedesktop.systemd1(5): https://www.freedesktop.org/software/systemd/man/latest/org.freedesktop.systemd1.html
 *
 * - Units are loaded with `LoadUnit`, not `GetUnit`, so inactive units (which systemd may have unloaded) work; a
 *   unit whose `LoadState` is `not-found` is reported as SDH_NO_SUCH_UNIT, as a bus `NoSuchUnit` error is.
 * - A job's end is the Manager's `JobRemoved(id, job, unit, result)` signal. We `Subscribe()` and add the match
 *   BEFORE asking for the job, and keep every `JobRemoved` seen until the call returns the job's path: a fast job
 *   can end before its reply is read.
 * - Every call and every wait is bounded by a timeout; failing to reach the bus, a bus error and a dropped
 *   connection all become {@link SdHandoffError}s (SDH_DBUS with `dbusName`, SDH_NO_SUCH_UNIT, SDH_JOB_FAILED,
 *   SDH_TIMEOUT).
 */
import { createRequire } from 'node:module';
import { SdHandoffError, sdError, show } from './errors.js';

const SYSTEMD = 'org.freedesktop.systemd1';
const MANAGER_PATH = '/org/freedesktop/systemd1';
const MANAGER = 'org.freedesktop.systemd1.Manager';
const UNIT = 'org.freedesktop.systemd1.Unit';
const PROPERTIES = 'org.freedesktop.DBus.Properties';
const DEFAULT_ADDRESS = 'unix:path=/run/dbus/system_bus_socket';

/** One method call, as the {@link Bus} sends it. */
export interface BusCall {
  destination: string;
  path: string;
  interface: string;
  member: string;
  signature?: string;
  body?: unknown[];
}

/** One signal received from the bus. */
export interface BusSignal {
  sender?: string;
  path: string;
  interface: string;
  member: string;
  body: unknown[];
}

/**
 * The transport {@link Systemd} uses: dbus-next's MessageBus behind {@link connectBus}, or a fake in tests.
 * `call` resolves with the reply's body or rejects with an error carrying the D-Bus error name in `type`.
 */
export interface Bus {
  call(msg: BusCall): Promise<unknown[]>;
  /** Every signal the bus delivers; returns the unsubscribe function. */
  onSignal(listener: (signal: BusSignal) => void): () => void;
  /** The connection broke (socket error, closed by the peer). */
  onError(listener: (err: Error) => void): () => void;
  close(): void;
}

/** Options of {@link Systemd.connect}. */
export interface ConnectOptions {
  /** D-Bus address (`unix:path=...`); default `$DBUS_SYSTEM_BUS_ADDRESS`, else the standard system bus socket. */
  address?: string;
  /** Bound on connecting and on every call (default 25 000 ms, as libdbus's default). */
  timeoutMs?: number;
  /** @internal Test seam: use this transport instead of connecting. */
  bus?: Bus;
  /** @internal Environment to read the address from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** A unit's state as the CLI and users need it. Service-only fields are 0 / '' for other unit types. */
export interface UnitState {
  /** The unit's primary name (`Id`), which may differ from the name asked for (an alias). */
  id: string;
  /** Its D-Bus object path. */
  path: string;
  /** Its `Description=`. */
  description: string;
  /** `loaded`, `not-found`, `bad-setting`, `error`, `masked`. */
  loadState: string;
  /** `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`. */
  activeState: string;
  /** Type-specific: `running`, `dead`, `listening`, `reload`... */
  subState: string;
  /** `success`, or why the unit last failed (`exit-code`, `signal`, `timeout`, `watchdog`...). '' when the type has none. */
  result: string;
  /** A service's last reload result (`success`, `exit-code`...; systemd >= 246), else ''. */
  reloadResult: string;
  /** Main process, 0 when there is none. */
  mainPid: number;
  /** The service's last `STATUS=`. */
  statusText: string;
  /** How many fds the service has in systemd's fd store. */
  nFileDescriptorStore: number;
  /** Exit status (or signal number) of the last main process. */
  execMainStatus: number;
  /** `CLD_EXITED` = 1, `CLD_KILLED` = 2, `CLD_DUMPED` = 3, or 0. */
  execMainCode: number;
  /** Units that can activate this one (its socket units among them). */
  triggeredBy: string[];
  /** Units this one activates (for a socket unit: its service). */
  triggers: string[];
  /** The service's `Environment=` as `KEY=VALUE` strings. */
  environment: string[];
}

/** One `ListenStream=`, `ListenDatagram=`... of a socket unit, as its `Listen` property holds it. */
export interface ListenAddress {
  /** `Stream`, `Datagram`, `SequentialPacket`, `FIFO`, `Netlink`... */
  type: string;
  /** The address as systemd prints it: `127.0.0.1:8080`, `[::]:80`, `/run/app.sock`... */
  address: string;
}

/** Options of the job methods. */
export interface JobOptions {
  /** systemd's job mode (default `replace`). */
  mode?: 'replace' | 'fail' | 'isolate' | 'ignore-dependencies' | 'ignore-requirements';
  /** How long to wait for the job to finish (default 90 000 ms). */
  timeoutMs?: number;
}

/** What a finished job reports. */
export interface JobResult {
  /** The unit the job was for. */
  unit: string;
  /** The job's D-Bus object path. */
  job: string;
  /** Always `done`: any other result rejects with SDH_JOB_FAILED. */
  result: string;
  /** From queueing the job to its end, in ms. */
  durationMs: number;
}

/** A change of a unit's properties: the interface, the new values and the names that changed without a value. */
export interface PropertiesChange {
  /** The D-Bus interface whose properties changed (`org.freedesktop.systemd1.Unit`, `...Service`). */
  interface: string;
  /** New values by property name, as plain JavaScript values. */
  changed: Record<string, unknown>;
  /** Properties that changed but whose new value was not sent. */
  invalidated: string[];
}

interface DBusNextError extends Error {
  type?: string;
  text?: string;
}

/** The D-Bus error as a typed error: NoSuchUnit is SDH_NO_SUCH_UNIT, everything else SDH_DBUS with `dbusName`. */
export function busError(err: unknown, what: string, unit?: string): SdHandoffError {
  if (err instanceof SdHandoffError) return err;
  const e = err as DBusNextError;
  const dbusName = typeof e?.type === 'string' ? e.type : undefined;
  const text = e?.text ?? e?.message ?? String(err);
  if (dbusName === 'org.freedesktop.systemd1.NoSuchUnit' && unit !== undefined) {
    return sdError('SDH_NO_SUCH_UNIT', `no such unit: ${unit}`, { unit, dbusName, cause: err });
  }
  return sdError('SDH_DBUS', `${what}: ${text}${dbusName ? ` (${dbusName})` : ''}`, { dbusName, ...(unit !== undefined ? { unit } : {}), cause: err });
}

/** Unwraps dbus-next Variants (recursively) and turns uint64/int64 (BigInt) into numbers when they fit. */
export function plain(value: unknown): unknown {
  if (typeof value === 'bigint') return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(value) : value;
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') {
    const v = value as { signature?: unknown; value?: unknown };
    if (typeof v.signature === 'string' && 'value' in v && Object.keys(v).length === 2) return plain(v.value);
    if (Buffer.isBuffer(value)) return value;
    return Object.fromEntries(Object.entries(value).map(([k, x]) => [k, plain(x)]));
  }
  return value;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(sdError('SDH_TIMEOUT', `${what}: no answer within ${ms} ms`, { timeoutMs: ms })), ms);
    timer.unref();
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** The D-Bus interface holding a unit type's own properties: `x.service` -> `org.freedesktop.systemd1.Service`. */
export function unitInterface(name: string): string | undefined {
  const suffix = /\.(service|socket|target|device|mount|automount|swap|timer|path|slice|scope)$/.exec(name)?.[1];
  return suffix ? `${SYSTEMD}.${suffix[0]!.toUpperCase()}${suffix.slice(1)}` : undefined;
}

/**
 * Loads dbus-next, an optional peer dependency: a service that uses only the library never installs it (nor its
 * xml2js and usocket trees); `Systemd` and the CLI's `reload`/`status` need it and say how to get it.
 * `load` is a seam for tests. It returns `unknown` so the published types never name
 * dbus-next's (a TypeScript user without dbus-next would otherwise fail to compile); {@link connectBus} casts.
 * @internal
 */
export function loadDbusNext(load: (id: string) => unknown = createRequire(import.meta.url)): unknown {
  try {
    return load('dbus-next');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // Only dbus-next itself missing: a module dbus-next fails to find names dbus-next in its require stack, not here.
    if (e.code !== 'MODULE_NOT_FOUND' || !String(e.message).startsWith("Cannot find module 'dbus-next'")) throw err;
    throw sdError(
      'SDH_MISSING_DEPENDENCY',
      "sd-handoff talks to systemd's D-Bus API (Systemd, `sd-handoff reload`, `sd-handoff status`) through the optional package dbus-next, which is not installed: run `npm install dbus-next`",
      { package: 'dbus-next', cause: err },
    );
  }
}

/**
 * Connects to a D-Bus address with dbus-next and resolves once the bus has answered `Hello`. dbus-next is loaded
 * here, on first use, so importing sd-handoff never needs it.
 */
export async function connectBus(address: string, timeoutMs: number): Promise<Bus> {
  const dbus = loadDbusNext() as typeof import('dbus-next');
  // sessionBus() is dbus-next's "connect to this address"; systemBus() would ignore an address given.
  const mb = dbus.sessionBus({ busAddress: address });
  const errorListeners = new Set<(err: Error) => void>();
  mb.on('error', (err: Error) => {
    for (const l of errorListeners) l(err);
  });
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        errorListeners.delete(onError);
        reject(err);
      };
      errorListeners.add(onError);
      mb.once('connect', () => {
        errorListeners.delete(onError);
        resolve();
      });
    }),
    timeoutMs,
    `connecting to the D-Bus system bus at ${address}`,
  ).catch((err: NodeJS.ErrnoException) => {
    mb.disconnect();
    if (err instanceof SdHandoffError) throw sdError('SDH_DBUS', err.message, { address, cause: err });
    throw sdError('SDH_DBUS', `cannot connect to the D-Bus system bus at ${address}: ${err.code ? `${err.code} (${err.message})` : err.message}`, {
      address,
      errnoName: err.code,
      cause: err,
    });
  });
  return {
    async call(msg) {
      const reply = await mb.call(new dbus.Message({ ...msg, signature: msg.signature ?? '', body: msg.body ?? [] }));
      return reply?.body ?? [];
    },
    onSignal(listener) {
      const fn = (m: import('dbus-next').Message): void => {
        if (m.type === dbus.MessageType.SIGNAL) listener({ sender: m.sender, path: m.path, interface: m.interface, member: m.member, body: m.body });
      };
      mb.on('message', fn);
      return () => void mb.off('message', fn);
    },
    onError(listener) {
      errorListeners.add(listener);
      return () => void errorListeners.delete(listener);
    },
    close() {
      mb.disconnect();
    },
  };
}

/** A connection to systemd. Create with {@link Systemd.connect}; {@link Systemd.close} it when done. */
export class Systemd {
  readonly #bus: Bus;
  readonly #timeoutMs: number;
  #subscribed: Promise<void> | undefined;
  readonly #matches = new Map<string, number>();
  readonly #pending = new Set<(err: Error) => void>();
  #closed = false;
  #broken: Error | undefined;

  private constructor(bus: Bus, timeoutMs: number) {
    this.#bus = bus;
    this.#timeoutMs = timeoutMs;
    // A broken connection fails every wait under way at once rather than at its timeout.
    bus.onError((err) => {
      this.#broken = sdError('SDH_DBUS', `the D-Bus connection broke: ${err.message}`, { cause: err });
      for (const fail of [...this.#pending]) fail(this.#broken);
    });
  }

  /**
   * Connects to the system bus (bounded by `timeoutMs`). Needs the optional dependency dbus-next.
   *
   * @throws {@link SdHandoffError} `SDH_DBUS` when the bus cannot be reached, `SDH_TIMEOUT` past the bound
   */
  static async connect(options: ConnectOptions = {}): Promise<Systemd> {
    const timeoutMs = options.timeoutMs ?? 25_000;
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw sdError('SDH_INVALID_OPTION', `timeoutMs must be a positive number, got ${show(timeoutMs)}`);
    const env = options.env ?? process.env;
    const bus = options.bus ?? (await connectBus(options.address ?? (env.DBUS_SYSTEM_BUS_ADDRESS || DEFAULT_ADDRESS), timeoutMs));
    return new Systemd(bus, timeoutMs);
  }

  /** A bounded call; bus errors become typed errors naming `what`. */
  async #call(msg: BusCall, what: string, unit?: string): Promise<unknown[]> {
    if (this.#closed) throw sdError('SDH_DBUS', `${what}: the connection is closed`);
    if (this.#broken) throw this.#broken;
    let fail!: (err: Error) => void;
    const broken = new Promise<never>((_, reject) => {
      fail = reject;
    });
    this.#pending.add(fail);
    try {
      return await withTimeout(Promise.race([this.#bus.call(msg), broken]), this.#timeoutMs, what);
    } catch (err) {
      throw busError(err, what, unit);
    } finally {
      this.#pending.delete(fail);
    }
  }

  #manager(member: string, signature: string, body: unknown[], what: string, unit?: string): Promise<unknown[]> {
    return this.#call({ destination: SYSTEMD, path: MANAGER_PATH, interface: MANAGER, member, signature, body }, what, unit);
  }

  /** Subscribe() once per connection: without a subscriber systemd sends neither JobRemoved nor PropertiesChanged. */
  #subscribe(): Promise<void> {
    this.#subscribed ??= this.#manager('Subscribe', '', [], 'Subscribe').then(
      () => undefined,
      (err: unknown) => {
        this.#subscribed = undefined;
        throw err;
      },
    );
    return this.#subscribed;
  }

  /** AddMatch, reference-counted per rule. */
  async #addMatch(rule: string): Promise<void> {
    const n = this.#matches.get(rule) ?? 0;
    this.#matches.set(rule, n + 1);
    if (n > 0) return;
    try {
      await this.#call({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: [rule] }, 'AddMatch');
    } catch (err) {
      this.#matches.delete(rule);
      throw err;
    }
  }

  async #removeMatch(rule: string): Promise<void> {
    const n = this.#matches.get(rule) ?? 0;
    if (n > 1) {
      this.#matches.set(rule, n - 1);
      return;
    }
    this.#matches.delete(rule);
    if (n === 0 || this.#closed || this.#broken) return;
    await this.#call({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'RemoveMatch', signature: 's', body: [rule] }, 'RemoveMatch').catch(
      () => {},
    );
  }

  /** The unit's object path, loading it if needed (LoadUnit). A unit that does not exist is SDH_NO_SUCH_UNIT. */
  async loadUnit(name: string): Promise<string> {
    const [path] = await this.#manager('LoadUnit', 's', [name], `LoadUnit ${name}`, name);
    const loadState = await this.property(String(path), UNIT, 'LoadState', name);
    if (loadState === 'not-found') throw sdError('SDH_NO_SUCH_UNIT', `no such unit: ${name}`, { unit: name });
    return String(path);
  }

  /** One property of an object (`Get`), plain (variants unwrapped, 64-bit numbers as numbers when they fit). */
  async property(path: string, iface: string, name: string, unit?: string): Promise<unknown> {
    const [v] = await this.#call({ destination: SYSTEMD, path, interface: PROPERTIES, member: 'Get', signature: 'ss', body: [iface, name] }, `Get ${iface}.${name}`, unit);
    return plain(v);
  }

  /** Every property of an interface of an object (`GetAll`), plain. */
  async properties(path: string, iface: string, unit?: string): Promise<Record<string, unknown>> {
    const [v] = await this.#call({ destination: SYSTEMD, path, interface: PROPERTIES, member: 'GetAll', signature: 's', body: [iface] }, `GetAll ${iface}`, unit);
    return (plain(v) ?? {}) as Record<string, unknown>;
  }

  /** The unit's state: `Unit` properties, and for a service its main pid, status text, fd store, exit status. */
  async getUnit(name: string): Promise<UnitState> {
    const path = await this.loadUnit(name);
    const u = await this.properties(path, UNIT, name);
    const typeIface = unitInterface(String(u.Id ?? name));
    const t = typeIface ? await this.properties(path, typeIface, name) : {};
    const str = (v: unknown): string => (typeof v === 'string' ? v : '');
    const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
    const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
    return {
      id: str(u.Id) || name,
      path,
      description: str(u.Description),
      loadState: str(u.LoadState),
      activeState: str(u.ActiveState),
      subState: str(u.SubState),
      result: str(t.Result),
      reloadResult: str(t.ReloadResult),
      mainPid: num(t.MainPID),
      statusText: str(t.StatusText),
      nFileDescriptorStore: num(t.NFileDescriptorStore),
      execMainStatus: num(t.ExecMainStatus),
      execMainCode: num(t.ExecMainCode),
      triggeredBy: list(u.TriggeredBy),
      triggers: list(u.Triggers),
      environment: list(t.Environment),
    };
  }

  /** A socket unit's listen addresses (its `Listen` property, `a(ss)`). */
  async listenAddresses(socketUnit: string): Promise<ListenAddress[]> {
    const path = await this.loadUnit(socketUnit);
    const v = await this.property(path, `${SYSTEMD}.Socket`, 'Listen', socketUnit);
    return (Array.isArray(v) ? v : []).map((pair) => ({ type: String((pair as unknown[])[0]), address: String((pair as unknown[])[1]) }));
  }

  /** Starts unit `name` (`systemctl start`) and waits for the job; see the job rules below. */
  start(name: string, options?: JobOptions): Promise<JobResult> {
    return this.#job('StartUnit', name, options);
  }
  /** Stops unit `name` (`systemctl stop`) and waits for the job. */
  stop(name: string, options?: JobOptions): Promise<JobResult> {
    return this.#job('StopUnit', name, options);
  }
  /** Restarts unit `name` (`systemctl restart`) and waits for the job. */
  restart(name: string, options?: JobOptions): Promise<JobResult> {
    return this.#job('RestartUnit', name, options);
  }
  /**
   * Reloads unit `name` (`systemctl reload`) and waits for the job. For an sd-handoff service whose `ExecReload=` is
   * `sd-handoff upgrade`, this is an upgrade, and a failed upgrade rejects with `SDH_JOB_FAILED`.
   */
  reload(name: string, options?: JobOptions): Promise<JobResult> {
    return this.#job('ReloadUnit', name, options);
  }

  /**
   * Queues a job and waits for its JobRemoved. Resolves for `done`; rejects with SDH_JOB_FAILED (`result` set:
   * `failed`, `timeout`, `canceled`, `dependency`, `skipped`...) for anything else, SDH_TIMEOUT past the timeout.
   */
  async #job(method: 'StartUnit' | 'StopUnit' | 'RestartUnit' | 'ReloadUnit', name: string, options: JobOptions = {}): Promise<JobResult> {
    const mode = options.mode ?? 'replace';
    const timeoutMs = options.timeoutMs ?? 90_000;
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw sdError('SDH_INVALID_OPTION', `timeoutMs must be a positive number, got ${show(timeoutMs)}`);
    const verb = method.slice(0, -'Unit'.length).toLowerCase();
    const rule = `type='signal',sender='${SYSTEMD}',path='${MANAGER_PATH}',interface='${MANAGER}',member='JobRemoved'`;
    // Listen first: everything removed before we know our job's path is kept and looked at afterwards.
    const seen = new Map<string, { unit: string; result: string }>();
    let waiting: ((r: { unit: string; result: string }) => void) | undefined;
    let jobPath: string | undefined;
    const off = this.#bus.onSignal((s) => {
      if (s.interface !== MANAGER || s.member !== 'JobRemoved' || s.path !== MANAGER_PATH) return;
      const [, job, unit, result] = s.body as [number, string, string, string];
      if (jobPath === undefined) seen.set(String(job), { unit: String(unit), result: String(result) });
      else if (job === jobPath) waiting?.({ unit: String(unit), result: String(result) });
    });
    const started = performance.now();
    try {
      await this.#subscribe();
      await this.#addMatch(rule);
      try {
        const [path] = await this.#manager(method, 'ss', [name, mode], `${method} ${name}`, name);
        jobPath = String(path);
        const early = seen.get(jobPath);
        seen.clear();
        const removed =
          early ??
          (await new Promise<{ unit: string; result: string }>((resolve, reject) => {
            const finish = (err?: Error, r?: { unit: string; result: string }): void => {
              clearTimeout(timer);
              this.#pending.delete(fail);
              if (err) reject(err);
              else resolve(r!);
            };
            const fail = (err: Error): void => finish(err);
            this.#pending.add(fail);
            const timer = setTimeout(
              () => finish(sdError('SDH_TIMEOUT', `the ${verb} job of ${name} (${jobPath}) did not finish within ${timeoutMs} ms`, { unit: name, job: jobPath, timeoutMs })),
              timeoutMs,
            );
            timer.unref();
            waiting = (r) => finish(undefined, r);
          }));
        const durationMs = Math.round(performance.now() - started);
        if (removed.result !== 'done') {
          throw sdError('SDH_JOB_FAILED', `the ${verb} job of ${name} finished with result "${removed.result}"`, { unit: name, job: jobPath, result: removed.result, durationMs });
        }
        return { unit: removed.unit, job: jobPath, result: removed.result, durationMs };
      } finally {
        await this.#removeMatch(rule);
      }
    } finally {
      off();
    }
  }

  /**
   * Calls `listener` for every PropertiesChanged of the unit's object (on any of its interfaces). Resolves once the
   * match is in place with the function that removes it.
   */
  async watch(name: string, listener: (change: PropertiesChange) => void): Promise<() => Promise<void>> {
    const path = await this.loadUnit(name);
    const rule = `type='signal',sender='${SYSTEMD}',path='${path}',interface='${PROPERTIES}',member='PropertiesChanged'`;
    const off = this.#bus.onSignal((s) => {
      if (s.path !== path || s.interface !== PROPERTIES || s.member !== 'PropertiesChanged') return;
      const [iface, changed, invalidated] = s.body as [string, Record<string, unknown>, string[]];
      listener({ interface: String(iface), changed: (plain(changed) ?? {}) as Record<string, unknown>, invalidated: Array.isArray(invalidated) ? invalidated.map(String) : [] });
    });
    try {
      await this.#subscribe();
      await this.#addMatch(rule);
    } catch (err) {
      off();
      throw err;
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      off();
      await this.#removeMatch(rule);
    };
  }

  /** Closes the connection (idempotent); waits under way fail with SDH_DBUS. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = sdError('SDH_DBUS', 'the D-Bus connection was closed');
    for (const fail of [...this.#pending]) fail(err);
    this.#bus.close();
  }
}
