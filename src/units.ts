/**
 * Renders the unit-file templates in `units/` (service.in, socket.in, instance@.service.in) for a service run by
 * sd-handoff, and checks the result with `systemd-analyze verify`. Two kinds of service: a Node.js service using the
 * Upgrader (the default: ExecStart= is the command itself, PIDFile= follows the handover), or, with `run`, any
 * program that reads LISTEN_FDS, started by `sd-handoff run` (ExecStart= is `SDH run ... -- COMMAND`; MainPID is
 * `run` for good, so no PIDFile=). The templates hold both (`@if RUN@` / `@if !RUN@`).
 *
 * Template syntax, kept small on purpose: `@KEY@` is replaced by a value (never re-scanned); a line holding a list
 * value is written once per element (and dropped for an empty list); `@if KEY@` / `@if !KEY@` ... `@end@` keep or
 * drop the lines between; `@include FILE@` inserts another template; `@comment@` lines are dropped. A key the
 * template uses and the renderer does not know is an error, so a template and its renderer cannot drift apart.
 *
 * Listeners: systemd gives one `FileDescriptorName=` per socket unit, so all listeners sharing a name (or having
 * none) go into one socket unit, `NAME.socket`; when listeners carry different names, each name gets its own socket
 * unit `NAME-FDNAME.socket` and the service lists them all in `Sockets=`.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sdError, show } from './errors.js';

/** Where the templates are: `units/` beside `src/` and `dist/`. */
export const TEMPLATE_DIR = fileURLToPath(new URL('../units/', import.meta.url));

/** One `--listen` address, parsed. */
export interface Listener {
  /** The directive: `ListenStream` or `ListenDatagram`. */
  directive: 'ListenStream' | 'ListenDatagram';
  /** The address as systemd reads it: `8080`, `127.0.0.1:8080`, `[::1]:8080`, `/run/x.sock`, `@name`. */
  address: string;
  /** The fd name (`=NAME` suffix), or undefined. */
  name?: string;
}

/** What `units render` renders. */
export interface RenderOptions {
  /** Unit name prefix: NAME.service, NAME.socket. */
  name: string;
  /** The ExecStart= command line. */
  exec: string;
  /** `--listen` addresses (see {@link parseListen}). */
  listen: string[];
  /** `Description=` (default: the name and how it runs). */
  description?: string;
  /** `User=` the service runs as (default: none, i.e. root). */
  user?: string;
  /** `Group=` (default: none, i.e. the user's group). */
  group?: string;
  /** Run a worker pool of this many workers (`WORKERS=` in the service's environment). */
  workers?: number;
  /** `Type=` (default `notify`; `notify-reload` needs systemd >= 253 and drops `ExecReload=`). */
  type?: 'notify' | 'notify-reload';
  /** Keep the listeners in systemd's fd store as well (`FileDescriptorStoreMax=`, and `FDSTORE=1` for the program). */
  fdstore?: boolean;
  /** WatchdogSec= in seconds. */
  watchdog?: number;
  /** `sd-handoff upgrade --timeout` in seconds (default 90); TimeoutStartSec= is 30 s more. */
  upgradeTimeout?: number;
  /** TimeoutStopSec= in seconds (default 45: longer than the default 30 s drain). */
  stopTimeout?: number;
  /** The command that runs the sd-handoff CLI in ExecReload= (default: this node and this package's dist/cli.js). */
  sdHandoff?: string;
  /** Render the template-unit form NAME@.service (units/instance@.service.in). */
  template?: boolean;
  /**
   * Any program that reads LISTEN_FDS, run by `sd-handoff run`: ExecStart= is `SDH run --ready MODE -- EXEC`. Not with
   * `workers`, `fdstore` or type `notify-reload` (run implements none of them).
   */
  run?: boolean;
  /** With `run`: when a new instance counts as ready, run's `--ready` (default `port`, run's default). */
  ready?: RunReady;
  /** With `run`: who answers WatchdogSec=, run's `--watchdog` (default `self`; `program` needs `ready: 'notify'` and `watchdog`). */
  runWatchdog?: 'self' | 'program';
}

/** `sd-handoff run --ready` modes (the same list as run's own, src/run/options.ts). */
export type RunReady = 'notify' | 'port' | 'delay';
const RUN_READY: readonly RunReady[] = ['notify', 'port', 'delay'];
/**
 * `sd-handoff run`'s defaults for what the rendered ExecStart= leaves out (--delay, --timeout, --drain): the template
 * comments state them, and ExecReload='s upgrade must wait longer than `timeoutS`, or a reload that run still completes
 * would be reported failed. The same values as RUN_DEFAULTS in src/run/options.ts (a unit test keeps them equal; not
 * imported, as run/options.ts imports this module).
 */
export const RUN_UNIT_DEFAULTS = { delayS: 1, timeoutS: 60, drainS: 30 } as const;

/** One rendered file. */
export interface RenderedUnit {
  /** File name: `NAME.service`, `NAME.socket`, `NAME-FDNAME.socket`... */
  file: string;
  /** The unit file's contents. */
  text: string;
}

const FD_NAME = /^[A-Za-z0-9_.\-]{1,255}$/;
const UNIT_PREFIX = /^[A-Za-z0-9:_.\\-]+$/;

function checkPort(port: string, arg: string, allowSpecifier: boolean): string {
  if (allowSpecifier && port === '%i') return port;
  const n = Number(port);
  if (!/^\d+$/.test(port) || n < 1 || n > 65535) throw sdError('SDH_INVALID_OPTION', `--listen ${show(arg)}: port ${show(port)} is not 1-65535`, { option: 'listen', value: arg });
  return port;
}

/**
 * Parses one `--listen` value: `PORT`, `HOST:PORT` (IPv4 literal), `[V6]:PORT`, `/path`, `@abstract`,
 * `udp:ADDR` (any IP form above, as ListenDatagram=), each optionally followed by `=NAME` (the fd name).
 * With `template`, `%i` may stand for the port or appear in a path.
 */
export function parseListen(arg: string, template = false): Listener {
  let spec = arg;
  let name: string | undefined;
  const eq = arg.lastIndexOf('=');
  if (eq >= 0) {
    name = arg.slice(eq + 1);
    spec = arg.slice(0, eq);
    if (!FD_NAME.test(name)) throw sdError('SDH_INVALID_OPTION', `--listen ${show(arg)}: fd name ${show(name)} must be 1-255 of A-Z a-z 0-9 _ . -`, { option: 'listen', value: arg });
  }
  const forms = 'forms: PORT, HOST:PORT, [V6]:PORT, /path, @abstract, udp:HOST:PORT, each optionally followed by =NAME';
  const bad = (why: string) => sdError('SDH_INVALID_OPTION', `--listen ${show(arg)}: ${why}; ${forms}`, { option: 'listen', value: arg });
  let directive: Listener['directive'] = 'ListenStream';
  if (spec.startsWith('udp:')) {
    directive = 'ListenDatagram';
    spec = spec.slice(4);
    if (spec.startsWith('/') || spec.startsWith('@')) throw bad('udp: takes an IP address or a port');
  }
  let address: string;
  let m: RegExpExecArray | null;
  if (/^(\d+|%i)$/.test(spec)) {
    address = checkPort(spec, arg, template);
  } else if ((m = /^\[([^\]]+)\]:([^:]+)$/.exec(spec))) {
    if (!net.isIPv6(m[1]!)) throw bad(`${show(m[1])} is not an IPv6 address`);
    address = `[${m[1]}]:${checkPort(m[2]!, arg, template)}`;
  } else if ((m = /^([^:/@\s]+):([^:/]+)$/.exec(spec))) {
    if (!net.isIPv4(m[1]!)) throw bad(`${show(m[1])} is not an IPv4 address (systemd does not resolve host names; write IPv6 as [ADDR]:PORT)`);
    address = `${m[1]}:${checkPort(m[2]!, arg, template)}`;
  } else if (spec.startsWith('/')) {
    if (spec.length > 107) throw bad('a unix socket path holds at most 107 bytes');
    address = spec;
  } else if (spec.startsWith('@') && spec.length > 1) {
    address = spec;
  } else {
    throw bad('not an address');
  }
  if (/[\s]/.test(address)) throw bad('no white space in an address');
  if (!template && address.includes('%')) throw bad('"%" is a systemd specifier: only with --template');
  return name === undefined ? { directive, address } : { directive, address, name };
}

type Value = string | string[] | boolean | undefined;

/** Renders one template text with `vars` (see the module comment for the syntax). */
export function renderTemplate(text: string, vars: Record<string, Value>, load: (file: string) => string, file = 'template'): string {
  const out: string[] = [];
  const keep: boolean[] = [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  for (const [i, line] of lines.entries()) {
    const where = `${file}:${i + 1}`;
    let m: RegExpExecArray | null;
    if ((m = /^@if (!?)([A-Z_]+)@$/.exec(line))) {
      if (!(m[2]! in vars)) throw sdError('SDH_INVALID_OPTION', `${where}: unknown template key ${m[2]}`);
      const v = vars[m[2]!];
      const truthy = Array.isArray(v) ? v.length > 0 : Boolean(v);
      keep.push(m[1] === '!' ? !truthy : truthy);
      continue;
    }
    if (line === '@end@') {
      if (keep.pop() === undefined) throw sdError('SDH_INVALID_OPTION', `${where}: @end@ without @if@`);
      continue;
    }
    if (keep.includes(false)) continue;
    if (line.startsWith('@comment@')) continue;
    if ((m = /^@include ([\w@.\-]+)@$/.exec(line))) {
      out.push(renderTemplate(load(m[1]!), vars, load, m[1]).replace(/\n$/, ''));
      continue;
    }
    const keys = [...line.matchAll(/@([A-Z_]+)@/g)].map((k) => k[1]!);
    for (const k of keys) if (!(k in vars) || vars[k] === undefined) throw sdError('SDH_INVALID_OPTION', `${where}: template key ${k} has no value`);
    const list = keys.find((k) => Array.isArray(vars[k]));
    const elements = list ? (vars[list] as string[]) : [undefined];
    for (const el of elements) {
      out.push(line.replace(/@([A-Z_]+)@/g, (_, k: string) => (k === list ? el! : String(vars[k]))));
    }
  }
  if (keep.length > 0) throw sdError('SDH_INVALID_OPTION', `${file}: @if@ without @end@`);
  return `${out.join('\n')}\n`;
}

function defaultSdHandoff(): string {
  return `${process.execPath} ${fileURLToPath(new URL('./cli.js', import.meta.url)).replace(/\.ts$/, '.js').replace(`${path.sep}src${path.sep}`, `${path.sep}dist${path.sep}`)}`;
}

function positive(value: number | undefined, option: string): void {
  if (value !== undefined && !(Number.isFinite(value) && value > 0)) throw sdError('SDH_INVALID_OPTION', `--${option} must be a positive number, got ${show(value)}`, { option, value });
}

/** The checks of `run` mode: what run does not implement, and run's own rules, refused here rather than at start. */
function checkRun(o: RenderOptions): void {
  const invalid = (option: string, value: unknown, message: string) => sdError('SDH_INVALID_OPTION', message, { option, value });
  // systemd reads its prefixes (-, @, :, +, !, |) at the start of ExecStart= only: after `run --` they would be part
  // of the program's name.
  const prefix = /^\s*([-@:+!|]+)/.exec(o.exec);
  if (prefix) {
    throw invalid('exec', o.exec, `--exec ${show(o.exec)} starts with the ExecStart= prefix ${show(prefix[1])}: with --run the command line follows \`sd-handoff run --\`, where systemd reads no prefix; drop it`);
  }
  if (o.workers !== undefined) throw invalid('workers', o.workers, `--workers ${show(o.workers)} does not apply to --run: sd-handoff run starts one instance of the program (its --workers is refused for now; docs/cli.md)`);
  if (o.fdstore) throw invalid('fdstore', true, '--fdstore does not apply to --run: sd-handoff run keeps no fds in systemd\'s fd store (the socket units keep the listeners across restarts)');
  if (o.type === 'notify-reload') {
    throw invalid('type', o.type, '--type "notify-reload" does not apply to --run: sd-handoff run reloads through ExecReload= (`sd-handoff upgrade`) under Type=notify, which fails the reload honestly');
  }
  if (o.ready !== undefined && !RUN_READY.includes(o.ready)) throw invalid('ready', o.ready, `--ready must be one of ${RUN_READY.join(', ')}, got ${show(o.ready)}`);
  if (o.runWatchdog !== undefined && o.runWatchdog !== 'self' && o.runWatchdog !== 'program') {
    throw invalid('run-watchdog', o.runWatchdog, `--run-watchdog must be self or program, got ${show(o.runWatchdog)}`);
  }
  const ready = o.ready ?? 'port';
  if (o.runWatchdog === 'program') {
    if (ready !== 'notify') {
      throw invalid('run-watchdog', o.runWatchdog, `--run-watchdog "program" needs --ready notify: the program's WATCHDOG=1 pings reach systemd through the notify socket sd-handoff run gives it (this is --ready ${ready})`);
    }
    if (o.watchdog === undefined) throw invalid('run-watchdog', o.runWatchdog, '--run-watchdog "program" needs --watchdog S (WatchdogSec=): without it systemd asks for no watchdog and there is nothing to hand to the program');
  }
  if (ready === 'port') {
    const tcp = o.listen.some((l) => {
      const a = parseListen(l, o.template);
      return a.directive === 'ListenStream' && !a.address.startsWith('/') && !a.address.startsWith('@');
    });
    if (!tcp) throw invalid('ready', ready, `--ready "port"${o.ready === undefined ? ' (the default)' : ''} probes a TCP listener and none of --listen ${o.listen.join(', ')} is TCP: use --ready notify or --ready delay`);
  }
  const { timeoutS } = RUN_UNIT_DEFAULTS;
  if (o.upgradeTimeout !== undefined && o.upgradeTimeout <= timeoutS) {
    throw invalid(
      'upgrade-timeout',
      o.upgradeTimeout,
      `--upgrade-timeout ${show(o.upgradeTimeout)} must be more than ${timeoutS} with --run: sd-handoff run gives a new instance ${timeoutS} s to be ready, ` +
        'and `sd-handoff upgrade` in ExecReload= must wait for its answer, or a reload that still completes would be reported failed',
    );
  }
}

/** Renders NAME.service and its socket unit(s). Throws SDH_INVALID_OPTION naming the option for bad input. */
export function renderUnits(o: RenderOptions, load: (file: string) => string = (f) => readFileSync(path.join(TEMPLATE_DIR, f), 'utf8')): RenderedUnit[] {
  if (!o.name || !UNIT_PREFIX.test(o.name) || o.name.length > 200) {
    throw sdError('SDH_INVALID_OPTION', `--name ${show(o.name)} is not a unit name (letters, digits, ":", "_", ".", "\\", "-"; no "@")`, { option: 'name', value: o.name });
  }
  if (!o.exec?.trim()) throw sdError('SDH_INVALID_OPTION', '--exec is required: the command line of ExecStart=', { option: 'exec' });
  if (/[\n\r]/.test(o.exec)) throw sdError('SDH_INVALID_OPTION', `--exec ${show(o.exec)} holds a line break`, { option: 'exec', value: o.exec });
  if (o.listen.length === 0) throw sdError('SDH_INVALID_OPTION', '--listen is required (one or more addresses)', { option: 'listen' });
  if (o.type !== undefined && o.type !== 'notify' && o.type !== 'notify-reload') throw sdError('SDH_INVALID_OPTION', `--type must be notify or notify-reload, got ${show(o.type)}`, { option: 'type', value: o.type });
  if (o.workers !== undefined && !(Number.isInteger(o.workers) && o.workers >= 1)) throw sdError('SDH_INVALID_OPTION', `--workers must be a whole number >= 1, got ${show(o.workers)}`, { option: 'workers', value: o.workers });
  positive(o.watchdog, 'watchdog');
  positive(o.upgradeTimeout, 'upgrade-timeout');
  positive(o.stopTimeout, 'stop-timeout');
  for (const [opt, v] of [['user', o.user], ['group', o.group]] as const) {
    if (v !== undefined && !/^[A-Za-z_][A-Za-z0-9_.\-]{0,31}\$?$|^\d+$/.test(v)) throw sdError('SDH_INVALID_OPTION', `--${opt} ${show(v)} is not a user/group name or id`, { option: opt, value: v });
  }
  if (o.run) checkRun(o);
  else {
    for (const [opt, v] of [['ready', o.ready], ['run-watchdog', o.runWatchdog]] as const) {
      if (v !== undefined) throw sdError('SDH_INVALID_OPTION', `--${opt} ${show(v)} is for --run (an option of sd-handoff run; a Node.js service using the Upgrader reports ready and answers the watchdog itself)`, { option: opt, value: v });
    }
  }

  const listeners = o.listen.map((l) => parseListen(l, o.template));
  // One socket unit per distinct fd name: systemd has one FileDescriptorName= per socket unit.
  const names = [...new Set(listeners.map((l) => l.name ?? o.name))];
  const inst = o.template ? '@' : '';
  const service = o.template ? `${o.name}@%i.service` : `${o.name}.service`;
  const socketFile = (fdName: string) => (names.length === 1 ? `${o.name}${inst}.socket` : `${o.name}-${fdName}${inst}.socket`);
  const socketRef = (fdName: string) => socketFile(fdName).replace(/@\.socket$/, '@%i.socket');
  const upgradeTimeout = o.upgradeTimeout ?? 90;
  const ready = o.ready ?? 'port';
  const description = o.description ?? (o.run ? `${o.name} (run by sd-handoff run)` : `${o.name} (Node.js, upgraded by sd-handoff)`);
  if (/[\n\r]/.test(description)) throw sdError('SDH_INVALID_OPTION', '--description holds a line break', { option: 'description' });
  const fmt = (s: number) => String(Math.round(s * 1000) / 1000);
  const common = { NAME: o.name, DESCRIPTION: description };
  const serviceTemplate = o.template ? 'instance@.service.in' : 'service.in';
  const vars: Record<string, Value> = {
    ...common,
    UNIT: o.template ? `${o.name}@.service` : service,
    TEMPLATE: serviceTemplate,
    RUNTIME: o.template ? `${o.name}-%i` : o.name,
    EXEC: o.exec,
    SDH: o.sdHandoff ?? defaultSdHandoff(),
    UPGRADE_TIMEOUT: fmt(upgradeTimeout),
    START_TIMEOUT: fmt(upgradeTimeout + 30),
    STOP_TIMEOUT: fmt(o.stopTimeout ?? 45),
    SOCKET_UNITS: names.map(socketRef).join(' '),
    NOTIFY_RELOAD: o.type === 'notify-reload',
    FDSTORE: Boolean(o.fdstore),
    FDSTORE_MAX: String(Math.max(16, listeners.length * 2)),
    WATCHDOG: o.watchdog === undefined ? false : fmt(o.watchdog),
    WORKERS: o.workers === undefined ? false : String(o.workers),
    USER: o.user ?? false,
    GROUP: o.group ?? false,
    RUN: Boolean(o.run),
    RUN_OPTIONS: `--ready ${ready}${o.runWatchdog === 'program' ? ' --watchdog program' : ''}`,
    READY_NOTIFY: ready === 'notify',
    READY_PORT: ready === 'port',
    READY_DELAY: ready === 'delay',
    WATCHDOG_PROGRAM: o.runWatchdog === 'program',
    RUN_DELAY: String(RUN_UNIT_DEFAULTS.delayS),
    RUN_TIMEOUT: String(RUN_UNIT_DEFAULTS.timeoutS),
    RUN_DRAIN: String(RUN_UNIT_DEFAULTS.drainS),
  };
  const units: RenderedUnit[] = [{ file: o.template ? `${o.name}@.service` : service, text: renderTemplate(load(serviceTemplate), vars, load, serviceTemplate) }];
  for (const fdName of names) {
    const file = socketFile(fdName);
    const listen = listeners.filter((l) => (l.name ?? o.name) === fdName).map((l) => `${l.directive}=${l.address}`);
    units.push({ file, text: renderTemplate(load('socket.in'), { ...common, SOCKET: file, FDNAME: fdName, LISTEN: listen, SERVICE: service, RUN: Boolean(o.run) }, load, 'socket.in') });
  }
  return units;
}

/** What `systemd-analyze verify` said. */
export interface VerifyResult {
  /** False when systemd-analyze is not installed. */
  available: boolean;
  /** True when it ran, exited 0 and printed nothing. */
  ok: boolean;
  /** Every line it printed (warnings included). */
  output: string;
  /** Its exit status (null when it was killed or did not run). */
  exitCode: number | null;
}

/**
 * Runs `systemd-analyze verify` on unit files (bounded). Any line of output counts as a failure: systemd prints
 * warnings (unknown directives, bad values it ignores) with exit status 0.
 */
export function verifyUnits(files: string[], { timeoutMs = 30_000, command = 'systemd-analyze' }: { timeoutMs?: number; command?: string } = {}): Promise<VerifyResult> {
  return new Promise((resolve) => {
    // SYSTEMD_LOG_COLOR=0: plain text to compare; the unit files' directory is added to the search path by verify.
    const child = spawn(command, ['verify', ...files], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SYSTEMD_LOG_COLOR: '0', SYSTEMD_PAGER: '' } });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      output += `\n(systemd-analyze verify did not finish within ${timeoutMs} ms)`;
    }, timeoutMs);
    timer.unref();
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ available: err.code !== 'ENOENT', ok: false, output: err.code === 'ENOENT' ? '' : err.message, exitCode: null });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const text = output.trim();
      resolve({ available: true, ok: code === 0 && text === '', output: text, exitCode: code });
    });
  });
}

/**
 * Verifies rendered units in a temporary directory. Template units are verified as the instance `1` (a valid port
 * and name), since verify needs a concrete unit.
 */
export async function verifyRendered(units: RenderedUnit[], options?: { timeoutMs?: number; command?: string }): Promise<VerifyResult> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sd-handoff-verify-'));
  try {
    const files = units.map((u) => {
      const file = path.join(dir, u.file.replace(/@\./, '@1.'));
      writeFileSync(file, u.text);
      return file;
    });
    // The template files themselves must be there too, for the instances to load from.
    for (const u of units) if (u.file.includes('@.')) writeFileSync(path.join(dir, u.file), u.text);
    const r = await verifyUnits(files, options);
    return { ...r, output: r.output.split(dir + path.sep).join('') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
