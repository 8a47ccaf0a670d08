/**
 * The options of `sd-handoff run`, parsed and checked without touching the world: the listen addresses (with the one
 * `--listen` parser, {@link parseListen} of units.ts, so `run` and `units render` accept exactly the same forms), the
 * readiness mode and its bounds, and the program with its arguments, which pass through untouched.
 */
import net from 'node:net';
import { sdError, show } from '../errors.js';
import type { PacketAddress, StreamAddress } from '../upgrade/listeners.js';
import { parseListen } from '../units.js';

/** How `run` decides that a started program is ready. */
export type ReadyMode = 'notify' | 'port' | 'delay';
export const READY_MODES: readonly ReadyMode[] = ['notify', 'port', 'delay'];

/**
 * Who answers systemd's watchdog (`WatchdogSec=`): `self`, `run` pings for itself (a hung program goes unnoticed);
 * `program`, the program gets `WATCHDOG_USEC`/`WATCHDOG_PID` and its `WATCHDOG=1` pings reach systemd through the
 * notify proxy, so a program that stops pinging is what the watchdog sees (needs `--ready notify`).
 */
export type WatchdogMode = 'self' | 'program';
export const WATCHDOG_MODES: readonly WatchdogMode[] = ['self', 'program'];

/** One `--listen` value, as an address to bind or to find among systemd's fds. */
export type RunListen =
  | { spec: string; name?: string; kind: 'stream'; address: StreamAddress }
  | { spec: string; name?: string; kind: 'packet'; address: PacketAddress };

/** Everything `run` needs to know. */
export interface RunOptions {
  listen: RunListen[];
  ready: ReadyMode;
  /** `--ready delay`: how long the program must stay up. */
  delayMs: number;
  /** How long a program may take to become ready before it is killed. */
  timeoutMs: number;
  /** How long a program told to stop may drain before it is killed. */
  drainMs: number;
  /** Who answers systemd's watchdog (default `self`). */
  watchdog?: WatchdogMode;
  /** The control socket `sd-handoff upgrade` talks to (`--control-socket`, else `$SDH_CONTROL_SOCKET`). */
  controlSocket?: string;
  command: string;
  args: string[];
}

/** What the CLI's parseArgs produced, before checking. */
export interface RunValues {
  listen?: string[];
  ready?: string;
  delay?: string;
  timeout?: string;
  drain?: string;
  workers?: string;
  watchdog?: string;
  'control-socket'?: string;
}

export const RUN_DEFAULTS = { delayS: 1, timeoutS: 60, drainS: 30 } as const;

const invalid = (option: string, value: unknown, message: string) => sdError('SDH_INVALID_OPTION', message, { option, value });

/**
 * Parses one `--listen` value (`PORT`, `HOST:PORT`, `[V6]:PORT`, `/path`, `@abstract`, `udp:HOST:PORT`, each with an
 * optional `=NAME`) into what to bind. Throws SDH_INVALID_OPTION naming the value and the accepted forms.
 */
export function parseRunListen(spec: string): RunListen {
  const l = parseListen(spec);
  const named = l.name === undefined ? {} : { name: l.name };
  const a = l.address;
  let m: RegExpExecArray | null;
  if (l.directive === 'ListenDatagram') {
    if (/^\d+$/.test(a)) return { spec, ...named, kind: 'packet', address: { port: Number(a) } };
    if ((m = /^\[([^\]]+)\]:(\d+)$/.exec(a))) return { spec, ...named, kind: 'packet', address: { host: m[1]!, port: Number(m[2]), type: 'udp6' } };
    m = /^([^:]+):(\d+)$/.exec(a)!;
    return { spec, ...named, kind: 'packet', address: { host: m[1]!, port: Number(m[2]), type: 'udp4' } };
  }
  if (a.startsWith('/') || a.startsWith('@')) return { spec, ...named, kind: 'stream', address: { path: a } };
  if (/^\d+$/.test(a)) return { spec, ...named, kind: 'stream', address: { port: Number(a) } };
  if ((m = /^\[([^\]]+)\]:(\d+)$/.exec(a))) return { spec, ...named, kind: 'stream', address: { host: m[1]!, port: Number(m[2]) } };
  m = /^([^:]+):(\d+)$/.exec(a)!;
  return { spec, ...named, kind: 'stream', address: { host: m[1]!, port: Number(m[2]) } };
}

function seconds(option: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback * 1000;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n <= 0) throw invalid(option, text, `--${option} must be a positive number of seconds, got ${show(text)}`);
  return Math.round(n * 1000);
}

/** True when the listener is TCP (what `--ready port` can probe). */
export function isTcp(l: RunListen): boolean {
  return l.kind === 'stream' && 'port' in l.address;
}

/**
 * Checks the parsed values and the program (everything after `--`). Throws SDH_INVALID_OPTION with a message naming
 * the option and the value. `env` gives the default control socket.
 */
export function checkRunOptions(values: RunValues, command: string[], env: NodeJS.ProcessEnv = {}): RunOptions {
  if (values.workers !== undefined) {
    throw invalid(
      'workers',
      values.workers,
      `--workers is not supported yet: sd-handoff's worker pool (WorkerPool) runs worker scripts written against its Worker API (Worker.connect()), ` +
        `not an unmodified program, and \`run\` starts programs it knows nothing about. A Node program written for the pool runs ` +
        `under systemd by itself (see examples/hello-http, WORKERS=N); for others, run one instance per unit for now`,
    );
  }
  const listen = (values.listen ?? []).map(parseRunListen);
  const ready = (values.ready ?? 'port') as ReadyMode;
  if (!READY_MODES.includes(ready)) throw invalid('ready', values.ready, `--ready must be one of ${READY_MODES.join(', ')}, got ${show(values.ready)}`);
  if (values.delay !== undefined && ready !== 'delay') throw invalid('delay', values.delay, `--delay is for --ready delay (this is --ready ${ready})`);
  const watchdog = (values.watchdog ?? 'self') as WatchdogMode;
  if (!WATCHDOG_MODES.includes(watchdog)) throw invalid('watchdog', values.watchdog, `--watchdog must be one of ${WATCHDOG_MODES.join(', ')}, got ${show(values.watchdog)}`);
  if (watchdog === 'program' && ready !== 'notify') {
    throw invalid('watchdog', watchdog, `--watchdog program needs --ready notify: the program's WATCHDOG=1 pings reach systemd through the notify socket run gives it (this is --ready ${ready})`);
  }
  if (ready === 'port' && listen.length > 0 && !listen.some(isTcp)) {
    throw invalid('ready', ready, `--ready port probes a TCP listener and none of --listen ${listen.map((l) => l.spec).join(', ')} is TCP: use --ready notify or --ready delay`);
  }
  const names = new Map<string, string>();
  for (const l of listen) {
    if (l.name === undefined) continue;
    const seen = names.get(l.name);
    if (seen !== undefined) throw invalid('listen', l.spec, `--listen ${show(l.spec)}: the name ${show(l.name)} is already given to --listen ${show(seen)}`);
    names.set(l.name, l.spec);
    if (l.kind === 'stream' && 'port' in l.address && l.address.host !== undefined && net.isIP(l.address.host) === 0) {
      throw invalid('listen', l.spec, `--listen ${show(l.spec)}: not an IP address`);
    }
  }
  if (command.length === 0 || command[0] === '') throw invalid('command', command[0], 'no program to run: sd-handoff run [options] -- CMD ARGS...');
  const controlSocket = values['control-socket'] ?? (env.SDH_CONTROL_SOCKET || undefined);
  if (controlSocket !== undefined && !controlSocket.startsWith('/') && !controlSocket.startsWith('@')) {
    throw invalid('control-socket', controlSocket, `--control-socket must be an absolute path or @abstract, got ${show(controlSocket)}`);
  }
  return {
    listen,
    ready,
    delayMs: seconds('delay', values.delay, RUN_DEFAULTS.delayS),
    timeoutMs: seconds('timeout', values.timeout, RUN_DEFAULTS.timeoutS),
    drainMs: seconds('drain', values.drain, RUN_DEFAULTS.drainS),
    watchdog,
    ...(controlSocket !== undefined ? { controlSocket } : {}),
    command: command[0]!,
    args: command.slice(1),
  };
}

/** Splits `run`'s arguments at the first `--`: options before, the program and its arguments (untouched) after. */
export function splitCommand(args: string[]): { options: string[]; command: string[] } {
  const i = args.indexOf('--');
  if (i < 0) return { options: args, command: [] };
  return { options: args.slice(0, i), command: args.slice(i + 1) };
}
