#!/usr/bin/env node
/**
 * The `sd-handoff` command.
 *
 *   sd-handoff upgrade [--socket PATH | --pid PID] [--timeout S] [--json]
 *   sd-handoff reload UNIT [--timeout S] [--bus ADDRESS] [--json]
 *   sd-handoff status UNIT [--bus ADDRESS] [--json]
 *   sd-handoff units render --name N [--run] --exec CMD --listen ADDR... [options]
 *   sd-handoff takeover [--socket PATH] [--timeout S] [--json] -- CMD ARGS...
 *   sd-handoff run [--listen ADDR[=NAME]]... [--ready notify|port|delay] [options] -- CMD ARGS...
 *   sd-handoff --version
 *
 * Exit codes: 0 success; 1 the operation failed (the reason is printed); 2 bad usage; 3 the service or the system
 * bus could not be reached; 4 no such unit. Every subcommand has `--help`. docs/cli.md has examples.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Systemd, type ConnectOptions, type ListenAddress, type UnitState } from './dbus.js';
import { SdHandoffError } from './errors.js';
import { controlRequest } from './upgrade/control.js';
import { launchTakeover } from './upgrade/launch.js';
import { checkRunOptions, runCommand, splitCommand, type RunWorld } from './run.js';
import { renderUnits, verifyRendered, type RenderOptions, type RenderedUnit, type VerifyResult } from './units.js';

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, UNREACHABLE: 3, NO_SUCH_UNIT: 4 } as const;

const HELP = `sd-handoff: zero-downtime upgrades for services under systemd

Usage:
  sd-handoff upgrade [--socket PATH | --pid PID] [--timeout S] [--json]
      Ask a running service (an sd-handoff Upgrader) for an upgrade through its control socket, wait for the
      result and exit non-zero if the new version failed. Meant for ExecReload=, so that \`systemctl reload\`
      waits for the upgrade and fails when it fails.
  sd-handoff reload UNIT [--timeout S] [--bus ADDRESS] [--json]
      Reload a unit through systemd (D-Bus) and wait for the job; say which pid took over, or why it failed.
  sd-handoff status UNIT [--bus ADDRESS] [--json]
      Main pid, state, status text, fd store, socket units and their addresses, and the last upgrade's result.
  sd-handoff units render --name N [--run] --exec CMD --listen ADDR... [options]
      Write N.service and N.socket for a service run by sd-handoff, checked by \`systemd-analyze verify\`;
      with --run, for any program run by \`sd-handoff run\`.
  sd-handoff takeover [--socket PATH] [--timeout S] [--json] -- CMD ARGS...
      Start CMD (an sd-handoff service) so that it takes every listener over from the running instance, wait
      until it has, and exit non-zero if it failed (the running instance then keeps serving).
  sd-handoff run [--listen ADDR[=NAME]]... [--ready notify|port|delay] [options] -- CMD ARGS...
      Hold the listening sockets and run any program with them (LISTEN_FDS); on SIGHUP or \`sd-handoff upgrade\`
      start a new instance with the same sockets, wait until it is ready, then stop the old one.

Exit codes: 0 success, 1 failed (the reason is printed), 2 bad usage, 3 service or system bus not reachable,
4 no such unit.
Run \`sd-handoff COMMAND --help\` for a command's options; \`sd-handoff --version\` prints the version.
`;

const UPGRADE_HELP = `Usage: sd-handoff upgrade [--socket PATH | --pid PID] [--timeout S] [--json]

Asks the service for an upgrade and waits for the new version to be ready (or to fail).

  --socket PATH   the service's control socket (default: $SDH_CONTROL_SOCKET, which ExecReload= sees when the
                  unit sets it with Environment=)
  --pid PID       find the control socket in the environment of process PID (e.g. --pid $MAINPID)
  --timeout S     give up after S seconds (default 120)
  --json          print the result as JSON

Prints "upgraded: pid OLD -> NEW in N ms". Exit codes: 0 upgraded, 1 the upgrade failed (the new version exited,
crashed or timed out; the old one still serves), 2 bad usage, 3 the control socket could not be reached.
`;

const TAKEOVER_HELP = `Usage: sd-handoff takeover [--socket PATH] [--timeout S] [--json] -- CMD ARGS...

Starts CMD, a program using sd-handoff's Upgrader, with SDH_TAKEOVER set: it connects to the running instance's
control socket, receives every listener by name, and reports ready; the running instance then hands MAINPID= over,
drains and exits (Pingora's model, but never before the new process is ready). CMD runs on detached, with this
command's stdout and stderr. From ExecReload=, CMD starts inside the unit's cgroup and \`systemctl reload\` waits.

  --socket PATH   the running instance's control socket (default: $SDH_CONTROL_SOCKET)
  --timeout S     give up after S seconds (default 120): CMD is killed and the running instance keeps serving
  --json          print the result as JSON

Prints "took over: pid NEW in N ms". Exit codes: 0 taken over, 1 the takeover failed (the reason is printed),
2 bad usage.
`;

const RUN_HELP = `Usage: sd-handoff run [--listen ADDR[=NAME]]... [--ready notify|port|delay] [--delay S] [--timeout S]
                      [--drain S] [--watchdog self|program] [--control-socket PATH] -- CMD ARGS...

Holds the listening sockets and runs CMD (any program: Python, Go, a shell script...) with them the systemd way:
fds from 3, LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID set to CMD's own pid (CMD starts through
/bin/sh -c 'LISTEN_PID=$$ exec "$0" "$@"'; the arguments pass through untouched). sd-handoff run stays the main
process (Type=notify: READY=1 once CMD is ready, RELOADING=1 then READY=1 around a reload, STATUS= with CMD's pid).

Reload (SIGHUP, or \`sd-handoff upgrade\` through the control socket, which waits and fails when the reload fails):
a new instance of CMD starts with the same sockets; once it is ready the old one gets SIGTERM (it drains by
itself; SIGKILL after --drain). A new instance that exits or is not ready within --timeout is killed and the old
one keeps serving. If the serving instance exits on its own, sd-handoff run exits with its status (a signal is
re-raised) and systemd's Restart= decides. SIGTERM/SIGINT go to CMD; sd-handoff run waits (--drain) and exits
with CMD's status.

  --listen ADDR[=NAME]  repeatable: PORT, HOST:PORT, [V6]:PORT, /path, @abstract, udp:HOST:PORT; NAME goes to
                        LISTEN_FDNAMES (default "unknown"). Taken from systemd when sd-handoff run is
                        socket-activated (by NAME, else by address), else bound here. Without --listen, every
                        socket systemd passed is handed on.
  --ready MODE          when a new instance counts as ready (default port):
                          notify  it sends READY=1 to $NOTIFY_SOCKET (a socket of sd-handoff run's; STATUS= is
                                  forwarded to systemd, MAINPID= ignored)
                          port    it has accept()ed a probe connection on the first TCP listener itself (not
                                  the old instance: the socket is shared, so "the port answers" would prove nothing)
                          delay   it is still running --delay S after it started
  --delay S             for --ready delay (default 1)
  --timeout S           how long a new instance may take to be ready (default 60)
  --drain S             how long an instance told to stop may drain before SIGKILL (default 30)
  --watchdog WHO        who answers systemd's watchdog (WatchdogSec=) (default self):
                          self     sd-handoff run pings for itself (a hung CMD goes unnoticed)
                          program  CMD gets WATCHDOG_USEC and WATCHDOG_PID (its own pid); the serving instance's
                                   WATCHDOG=1 pings are passed on, none of run's own (needs --ready notify)
  --control-socket PATH the control socket for \`sd-handoff upgrade --socket PATH\` (default $SDH_CONTROL_SOCKET)
  --workers N           not supported yet (the worker pool runs scripts written for its Worker API only)

Exit codes: CMD's status when it ends (or 128+N for signal N if re-raising it did not end this process); 1 the
listeners could not be opened or CMD failed to become ready at start; 2 bad usage.
`;

const RELOAD_HELP = `Usage: sd-handoff reload UNIT [--timeout S] [--bus ADDRESS] [--json]

Reloads UNIT through systemd's D-Bus API (what \`systemctl reload\` does) and waits for the reload job. For a unit
rendered by \`sd-handoff units render\`, the reload is an upgrade: the new version takes over from the old one.

  --timeout S     give up waiting for the job after S seconds (default 120)
  --bus ADDRESS   D-Bus address of the system bus (default $DBUS_SYSTEM_BUS_ADDRESS, else
                  unix:path=/run/dbus/system_bus_socket)
  --json          print the result as JSON

Prints "reloaded UNIT: pid OLD -> NEW in N ms" ("pid unchanged" when the main process stayed the same). When the
job's result is not "done" or the unit is not active afterwards, prints why: the unit's state, its status text
(an sd-handoff service says "upgrade failed: ...") and its journal since the reload started.

Exit codes: 0 reloaded, 1 the reload failed (the reason is printed), 2 bad usage, 3 the system bus could not be
reached, 4 no such unit.
`;

const STATUS_HELP = `Usage: sd-handoff status UNIT [--bus ADDRESS] [--json]

Shows UNIT's main pid, ActiveState/SubState, status text, fds in systemd's fd store, the socket units that
activate it with their listen addresses, and the result of the last upgrade (asked of the service's control
socket when the unit sets SDH_CONTROL_SOCKET in Environment=, else "no control socket").

  --bus ADDRESS   D-Bus address of the system bus (default $DBUS_SYSTEM_BUS_ADDRESS, else
                  unix:path=/run/dbus/system_bus_socket)
  --json          print it as JSON

Exit codes: 0 shown (whatever the unit's state), 2 bad usage, 3 the system bus could not be reached,
4 no such unit.
`;

const UNITS_HELP = `Usage: sd-handoff units render --name N [--run] --exec CMD --listen ADDR... [options]

Writes N.service and N.socket for a Node.js service upgraded by sd-handoff (from the templates in units/), and
checks them with \`systemd-analyze verify\` when it is installed: any warning fails and nothing is written.
With --run, the service is any program that reads LISTEN_FDS (Python, Go...), run by \`sd-handoff run\`:
ExecStart=SDH run --ready MODE -- CMD, where run stays the main process (no PIDFile=) and reloads by starting a
new instance of CMD with the same sockets.

  --name N              unit name: N.service, N.socket
  --exec CMD            the ExecStart= command line (absolute path of node and the script); with --run the
                        program's command line, written after \`run --\` as given (no ExecStart= prefix such as -)
  --listen ADDR         repeatable: PORT, HOST:PORT, [V6]:PORT, /path (unix), @abstract, udp:HOST:PORT, each
                        optionally followed by =NAME, the fd name the service asks for (default N). One socket
                        unit per fd name: several names give N-NAME.socket each (systemd has one
                        FileDescriptorName= per socket unit)
  --description TEXT    Description= (default "N (Node.js, upgraded by sd-handoff)"; with --run
                        "N (run by sd-handoff run)")
  --type T              notify (default: ExecReload= runs \`sd-handoff upgrade\`, so a failed upgrade fails the
                        reload) or notify-reload (systemd >= 253: SIGHUP; the reload cannot fail)
  --user U, --group G   User=, Group= (without --group systemd uses U's primary group)
  --workers K           Environment=WORKERS=K for sd-handoff's worker pool
  --fdstore             FileDescriptorStoreMax= and FDSTORE=1: listeners survive restarts and crashes
  --watchdog S          WatchdogSec=S
  --upgrade-timeout S   ExecReload='s \`sd-handoff upgrade --timeout S\` (default 90; TimeoutStartSec= is S+30)
  --stop-timeout S      TimeoutStopSec= (default 45, longer than the 30 s default drain)
  --sd-handoff CMD      how ExecReload= (and with --run ExecStart=) runs this CLI (default: this node and this
                        package's dist/cli.js)
  --template            render the template unit N@.service (units/instance@.service.in) and N@.socket; %i may
                        appear in --exec and --listen
  --run                 start --exec under \`sd-handoff run\`, which hands the program every listener of the
                        socket units with its name (LISTEN_FDS, LISTEN_FDNAMES). Not with --workers, --fdstore or
                        --type notify-reload (run has none of them); --upgrade-timeout must be above 60 (how long
                        run waits for a new instance to be ready)
  --ready MODE          with --run: when a new instance is ready, run's --ready (default port):
                        notify (it sends READY=1), port (it accepted a probe on the first TCP listener),
                        delay (it still runs 1 s after it started)
  --run-watchdog WHO    with --run: who answers WatchdogSec=, run's --watchdog (--watchdog is WatchdogSec=
                        here): self (default; run pings, a hung program goes unnoticed) or program (it gets
                        WATCHDOG_USEC; needs --ready notify and --watchdog S)
  --out DIR             where to write (default .; created if missing)
  --dry-run             print the units instead of writing them (still verified)
  --no-verify           skip systemd-analyze verify

Exit codes: 0 written (and verified, or systemd-analyze is not installed: a note says so), 1 systemd-analyze
verify warned or failed (its output is printed, nothing written), 2 bad usage.
`;

/** What a CLI run writes and returns; injected so tests run it in-process. */
export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /** Connects to systemd (default {@link Systemd.connect}); tests pass a fake bus. */
  systemd?: (options: ConnectOptions) => Promise<Systemd>;
  /** The unit's journal since `sinceEpochS` (default: journalctl as a subprocess). */
  journal?: (unit: string, sinceEpochS: number) => Promise<JournalLines>;
  /** Runs systemd-analyze verify on rendered units (default {@link verifyRendered}). */
  verify?: (units: RenderedUnit[]) => Promise<VerifyResult>;
  /** Wall clock in ms (default Date.now). */
  now?: () => number;
  /** The world of `run` (default: this process; see {@link RunWorld}). */
  run?: Partial<RunWorld>;
}

/** Journal lines, or why there are none. */
export interface JournalLines {
  lines: string[];
  /** Set when the journal could not be read (journalctl missing, failed, timed out). */
  unavailable?: string;
}

class UsageError extends Error {}

/**
 * A command's arguments parsed strictly, with `--help`/`-h` added to its options; undefined when --help was given:
 * `help` is printed then, and the command is done (exit 0).
 */
function parseCommand<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O, help: string, io: CliIo, { positionals = true } = {}) {
  const parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h', default: false } as const }, allowPositionals: positionals, strict: true });
  // (The values' type only resolves at the call, where O is known.)
  if ((parsed.values as { help: boolean }).help) {
    io.out(help);
    return undefined;
  }
  return parsed;
}

function socketFromPid(pid: string): string {
  if (!/^\d+$/.test(pid)) throw new UsageError(`--pid must be a process id, got ${JSON.stringify(pid)}`);
  let environ: string;
  try {
    environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
  } catch (err) {
    throw new SdHandoffError(`cannot read the environment of pid ${pid}`, { errno: Math.abs((err as NodeJS.ErrnoException).errno ?? 2), syscall: 'open', path: `/proc/${pid}/environ` });
  }
  const entry = environ.split('\0').find((e) => e.startsWith('SDH_CONTROL_SOCKET='));
  if (!entry) throw new UsageError(`pid ${pid} has no SDH_CONTROL_SOCKET in its environment; pass --socket PATH`);
  return entry.slice('SDH_CONTROL_SOCKET='.length);
}

async function takeover(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(
    args,
    {
      socket: { type: 'string' },
      timeout: { type: 'string', default: '120' },
      json: { type: 'boolean', default: false },
    },
    TAKEOVER_HELP,
    io,
  );
  if (!parsed) return EXIT.OK;
  const { values, positionals } = parsed;
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new UsageError(`--timeout must be a positive number of seconds, got ${JSON.stringify(values.timeout)}`);
  const socket = values.socket ?? io.env.SDH_CONTROL_SOCKET;
  if (!socket) throw new UsageError('no control socket: pass --socket PATH or set SDH_CONTROL_SOCKET');
  const [command, ...commandArgs] = positionals;
  if (!command) throw new UsageError('no program to start: sd-handoff takeover [options] -- CMD ARGS...');
  try {
    const r = await launchTakeover(command, commandArgs, { socket, timeoutMs: Math.round(timeout * 1000), env: io.env });
    io.out(values.json ? `${JSON.stringify({ ok: true, ...r })}\n` : `took over: pid ${r.pid} in ${r.durationMs} ms\n`);
    return EXIT.OK;
  } catch (err) {
    const e = err as SdHandoffError;
    if (values.json) io.out(`${JSON.stringify({ ok: false, code: e.code, error: e.message })}\n`);
    io.err(`sd-handoff takeover: takeover failed: ${e.message}\n`);
    return EXIT.FAILED;
  }
}

async function run(args: string[], io: CliIo): Promise<number> {
  const split = splitCommand(args);
  const parsed = parseCommand(
    split.options,
    {
      listen: { type: 'string', multiple: true },
      ready: { type: 'string' },
      delay: { type: 'string' },
      timeout: { type: 'string' },
      drain: { type: 'string' },
      workers: { type: 'string' },
      watchdog: { type: 'string' },
      'control-socket': { type: 'string' },
    },
    RUN_HELP,
    io,
  );
  if (!parsed) return EXIT.OK;
  const { values, positionals } = parsed;
  if (positionals.length > 0) {
    throw new UsageError(`run: the program goes after \`--\`: sd-handoff run [options] -- ${positionals.join(' ')}`);
  }
  let options;
  try {
    options = checkRunOptions(values, split.command, io.env);
  } catch (err) {
    if ((err as SdHandoffError).code === 'SDH_INVALID_OPTION') throw new UsageError((err as Error).message);
    throw err;
  }
  const world: Partial<RunWorld> = { env: io.env, log: (line) => io.err(`sd-handoff run: ${line}\n`), ...io.run };
  return runCommand(options, world);
}

async function upgrade(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(
    args,
    {
      socket: { type: 'string' },
      pid: { type: 'string' },
      timeout: { type: 'string', default: '120' },
      json: { type: 'boolean', default: false },
    },
    UPGRADE_HELP,
    io,
    { positionals: false },
  );
  if (!parsed) return EXIT.OK;
  const { values } = parsed;
  if (values.socket && values.pid) throw new UsageError('give --socket or --pid, not both');
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new UsageError(`--timeout must be a positive number of seconds, got ${JSON.stringify(values.timeout)}`);
  const socket = values.socket ?? (values.pid ? socketFromPid(values.pid) : io.env.SDH_CONTROL_SOCKET);
  if (!socket) throw new UsageError('no control socket: pass --socket PATH or --pid PID, or set SDH_CONTROL_SOCKET');
  try {
    const r = await controlRequest(socket, 'upgrade', { timeoutMs: Math.round(timeout * 1000) });
    io.out(values.json ? `${JSON.stringify(r)}\n` : `upgraded: pid ${r.oldPid} -> ${r.pid} in ${r.durationMs} ms\n`);
    return EXIT.OK;
  } catch (err) {
    const e = err as SdHandoffError;
    const unreachable = e.syscall === 'connect' || e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'EACCES';
    if (values.json) io.out(`${JSON.stringify({ ok: false, code: e.code, error: e.message })}\n`);
    io.err(`sd-handoff upgrade: ${unreachable ? `${e.message}` : `upgrade failed: ${e.message}`}\n`);
    return unreachable ? EXIT.UNREACHABLE : EXIT.FAILED;
  }
}

/** Runs a command, bounded; resolves with its output, or with why it could not run. */
function runBounded(argv: string[], timeoutMs: number): Promise<{ out: string; err: string; code: number | null; failure?: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    timer.unref();
    child.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ out, err, code: null, failure: e.code === 'ENOENT' ? `${argv[0]} not found` : `${argv[0]}: ${e.message}` });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ out, err, code, ...(signal ? { failure: `${argv[0]} did not finish within ${timeoutMs} ms` } : {}) });
    });
  });
}

/**
 * The unit's journal since a moment: `journalctl -u UNIT --since @EPOCH -o cat -n 20`, bounded to 10 s, after a
 * `journalctl --sync` (bounded to 5 s, its failure ignored) so the lines the service printed just before are in.
 */
export async function readJournal(unit: string, sinceEpochS: number, { timeoutMs = 10_000, command = 'journalctl' } = {}): Promise<JournalLines> {
  await runBounded([command, '--sync'], 5000);
  const r = await runBounded([command, '-u', unit, '--since', `@${sinceEpochS.toFixed(3)}`, '-o', 'cat', '-n', '20', '--no-pager'], timeoutMs);
  const lines = r.out.split('\n').filter((l) => l.trim() !== '');
  if (r.failure) return { lines, unavailable: r.code === null && lines.length === 0 && r.failure.endsWith('not found') ? `${r.failure}: no journal lines` : r.failure };
  if (r.code !== 0) return { lines, unavailable: `journalctl exited with status ${r.code}: ${r.err.trim()}` };
  return { lines };
}

function unitArg(positionals: string[], command: string): string {
  if (positionals.length === 0) throw new UsageError(`${command}: name the unit, e.g. \`sd-handoff ${command} my-app.service\``);
  if (positionals.length > 1) throw new UsageError(`${command}: one unit at a time, got ${positionals.length}: ${positionals.join(' ')}`);
  const unit = positionals[0]!;
  // Like systemctl: a name without a type suffix is a service.
  return /\.[a-z]+$/.test(unit) ? unit : `${unit}.service`;
}

function seconds(value: string, option: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`--${option} must be a positive number of seconds, got ${JSON.stringify(value)}`);
  return n;
}

/** Exit code and message for an error from D-Bus or systemd. */
function busFailure(err: unknown, command: string, io: CliIo, json: boolean): number {
  const e = err as SdHandoffError;
  const code = e.code === 'SDH_NO_SUCH_UNIT' ? EXIT.NO_SUCH_UNIT : e.code === 'SDH_DBUS' && (e as { address?: string }).address !== undefined ? EXIT.UNREACHABLE : EXIT.FAILED;
  if (json) io.out(`${JSON.stringify({ ok: false, code: e.code, error: e.message, ...(e.code === 'SDH_DBUS' ? { dbusName: (e as { dbusName?: string }).dbusName ?? null } : {}) })}\n`);
  io.err(`sd-handoff ${command}: ${e.message}\n`);
  return code;
}

const stateText = (u: UnitState) => `${u.activeState} (${u.subState})`;

async function reload(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(
    args,
    {
      timeout: { type: 'string', default: '120' },
      bus: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    RELOAD_HELP,
    io,
  );
  if (!parsed) return EXIT.OK;
  const { values, positionals } = parsed;
  const unit = unitArg(positionals, 'reload');
  const timeoutMs = Math.round(seconds(values.timeout, 'timeout') * 1000);
  const now = io.now ?? Date.now;
  let sd: Systemd | undefined;
  try {
    sd = await (io.systemd ?? Systemd.connect)({ ...(values.bus ? { address: values.bus } : {}), env: io.env });
    const before = await sd.getUnit(unit);
    const started = now();
    let jobError: SdHandoffError | undefined;
    let jobResult = 'done';
    try {
      await sd.reload(unit, { timeoutMs });
    } catch (err) {
      const e = err as SdHandoffError;
      if (e.code !== 'SDH_JOB_FAILED' && e.code !== 'SDH_TIMEOUT') throw err;
      jobError = e;
      jobResult = e.code === 'SDH_TIMEOUT' ? 'timeout (still running)' : String((e as { result?: string }).result);
    }
    const durationMs = Math.round(now() - started);
    const after = await sd.getUnit(unit);
    const ok = jobError === undefined && after.activeState === 'active';
    const report = {
      ok,
      unit: after.id,
      oldPid: before.mainPid,
      pid: after.mainPid,
      durationMs,
      jobResult,
      activeState: after.activeState,
      subState: after.subState,
      result: after.result,
      reloadResult: after.reloadResult,
      statusText: after.statusText,
    };
    if (ok) {
      if (values.json) io.out(`${JSON.stringify(report)}\n`);
      else io.out(`reloaded ${after.id}: ${before.mainPid === after.mainPid ? `pid unchanged (${after.mainPid})` : `pid ${before.mainPid} -> ${after.mainPid}`} in ${durationMs} ms\n`);
      return EXIT.OK;
    }
    const journal = await (io.journal ?? ((u, t) => readJournal(u, t)))(after.id, started / 1000);
    const why = jobError ? (jobError.code === 'SDH_TIMEOUT' ? `the reload job did not finish within ${timeoutMs} ms` : `the reload job finished with result "${jobResult}"`) : `the unit is ${stateText(after)} after the reload`;
    if (values.json) {
      io.out(`${JSON.stringify({ ...report, error: why, journal: journal.lines, ...(journal.unavailable ? { journalUnavailable: journal.unavailable } : {}) })}\n`);
    }
    const lines = [
      `sd-handoff reload: reload of ${after.id} failed: ${why}`,
      `  state:   ${stateText(after)}, result ${after.result || '-'}${after.reloadResult ? `, reload result ${after.reloadResult}` : ''}`,
      `  main pid: ${before.mainPid === after.mainPid ? `${after.mainPid} (unchanged)` : `${before.mainPid} -> ${after.mainPid}`}`,
      `  status:  ${after.statusText || '-'}`,
      journal.unavailable ? `  journal: ${journal.unavailable}` : `  journal since the reload started (${journal.lines.length} lines):`,
      ...journal.lines.map((l) => `    ${l}`),
    ];
    io.err(`${lines.join('\n')}\n`);
    return EXIT.FAILED;
  } catch (err) {
    return busFailure(err, 'reload', io, values.json);
  } finally {
    sd?.close();
  }
}

export interface ControlStatus {
  socket: string | null;
  answer?: Record<string, unknown>;
  error?: string;
}

/** The last upgrade: from the control socket, else from the status text an sd-handoff service leaves. */
export function lastUpgrade(c: ControlStatus, statusText: string): { ok: boolean | null; source: 'control-socket' | 'status-text' | 'none'; text: string } {
  const last = c.answer?.lastUpgrade as { ok: boolean; at: string; pid?: number; durationMs?: number; error?: string } | null | undefined;
  if (last) {
    return { ok: last.ok, source: 'control-socket', text: last.ok ? `ok at ${last.at}: pid ${last.pid} took over in ${last.durationMs} ms` : `FAILED at ${last.at}: ${last.error}` };
  }
  // The Upgrader hands the outcome over to the new process; a service that does not (an older sd-handoff, a
  // restart) still has the STATUS= the handover left.
  const why = c.socket === null ? 'no control socket' : c.error !== undefined ? `control socket: ${c.error}` : `the control socket of pid ${c.answer?.pid} knows no upgrade of its own`;
  if (/^upgraded: /.test(statusText)) return { ok: true, source: 'status-text', text: `${statusText} (status text; ${why})` };
  if (/^upgrade failed: /.test(statusText)) return { ok: false, source: 'status-text', text: `FAILED: ${statusText.slice('upgrade failed: '.length)} (status text; ${why})` };
  if (c.socket === null) return { ok: null, source: 'none', text: 'no control socket (the unit sets no SDH_CONTROL_SOCKET in Environment=)' };
  if (c.error !== undefined) return { ok: null, source: 'none', text: `unknown: ${c.error}` };
  return { ok: null, source: 'none', text: `none since pid ${c.answer?.pid} started (state ${c.answer?.state})` };
}

async function status(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(
    args,
    {
      bus: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    STATUS_HELP,
    io,
  );
  if (!parsed) return EXIT.OK;
  const { values, positionals } = parsed;
  const unit = unitArg(positionals, 'status');
  let sd: Systemd | undefined;
  try {
    sd = await (io.systemd ?? Systemd.connect)({ ...(values.bus ? { address: values.bus } : {}), env: io.env });
    const u = await sd.getUnit(unit);
    // Service units have no property listing their sockets on any systemd we support (247-257): the socket units
    // that activate a service are in its TriggeredBy.
    const sockets: { unit: string; activeState: string; listen: ListenAddress[] }[] = [];
    for (const name of u.triggeredBy.filter((n) => n.endsWith('.socket')).sort()) {
      const s = await sd.getUnit(name);
      sockets.push({ unit: name, activeState: `${s.activeState} (${s.subState})`, listen: await sd.listenAddresses(name) });
    }
    const entry = u.environment.find((e) => e.startsWith('SDH_CONTROL_SOCKET='));
    const control: ControlStatus = { socket: entry ? entry.slice('SDH_CONTROL_SOCKET='.length) : null };
    if (control.socket !== null && u.activeState !== 'inactive' && u.activeState !== 'failed') {
      try {
        control.answer = await controlRequest(control.socket, 'status', { timeoutMs: 5000 });
      } catch (err) {
        control.error = (err as Error).message;
      }
    } else if (control.socket !== null) {
      control.error = `the service is ${u.activeState}`;
    }
    if (values.json) {
      io.out(
        `${JSON.stringify({
          unit: u.id,
          description: u.description,
          loadState: u.loadState,
          activeState: u.activeState,
          subState: u.subState,
          result: u.result,
          mainPid: u.mainPid,
          statusText: u.statusText,
          nFileDescriptorStore: u.nFileDescriptorStore,
          sockets,
          controlSocket: control.socket,
          control: control.answer ?? (control.error !== undefined ? { error: control.error } : null),
          lastUpgrade: lastUpgrade(control, u.statusText),
        })}\n`,
      );
      return EXIT.OK;
    }
    const lines = [
      `${u.id} - ${u.description}`,
      `  state:        ${stateText(u)}${u.result && u.result !== 'success' ? `, result ${u.result}` : ''}${u.loadState !== 'loaded' ? `, ${u.loadState}` : ''}`,
      `  main pid:     ${u.mainPid || '-'}`,
      `  status:       ${u.statusText || '-'}`,
      `  fd store:     ${u.nFileDescriptorStore}`,
      `  sockets:      ${sockets.length === 0 ? '-' : ''}`.trimEnd(),
      ...sockets.map((s) => `    ${s.unit} ${s.activeState}: ${s.listen.map((l) => `${l.address} (${l.type})`).join(', ') || '-'}`),
      `  last upgrade: ${lastUpgrade(control, u.statusText).text}`,
    ];
    io.out(`${lines.join('\n')}\n`);
    return EXIT.OK;
  } catch (err) {
    return busFailure(err, 'status', io, values.json);
  } finally {
    sd?.close();
  }
}

async function units(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case undefined:
    case '--help':
    case '-h':
      io.out(UNITS_HELP);
      return sub === undefined ? EXIT.USAGE : EXIT.OK;
    case 'render':
      return await unitsRender(rest, io);
    default:
      throw new UsageError(`units: unknown subcommand ${JSON.stringify(sub)}; known: render`);
  }
}

async function unitsRender(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(
    args,
    {
      name: { type: 'string' },
      exec: { type: 'string' },
      listen: { type: 'string', multiple: true },
      description: { type: 'string' },
      type: { type: 'string' },
      user: { type: 'string' },
      group: { type: 'string' },
      workers: { type: 'string' },
      fdstore: { type: 'boolean', default: false },
      watchdog: { type: 'string' },
      'upgrade-timeout': { type: 'string' },
      'stop-timeout': { type: 'string' },
      'sd-handoff': { type: 'string' },
      template: { type: 'boolean', default: false },
      run: { type: 'boolean', default: false },
      ready: { type: 'string' },
      'run-watchdog': { type: 'string' },
      out: { type: 'string', default: '.' },
      'dry-run': { type: 'boolean', default: false },
      'no-verify': { type: 'boolean', default: false },
    },
    UNITS_HELP,
    io,
  );
  if (!parsed) return EXIT.OK;
  const { values, positionals } = parsed;
  if (positionals.length > 0) throw new UsageError(`units render takes no positional arguments, got ${positionals.join(' ')}`);
  if (values.name === undefined) throw new UsageError('units render: --name is required');
  if (values.exec === undefined) throw new UsageError('units render: --exec is required');
  if (!values.listen?.length) throw new UsageError('units render: --listen is required (one or more addresses)');
  if (values.type !== undefined && values.type !== 'notify' && values.type !== 'notify-reload') {
    throw new UsageError(`--type must be notify or notify-reload, got ${JSON.stringify(values.type)}`);
  }
  let workers: number | undefined;
  if (values.workers !== undefined) {
    workers = Number(values.workers);
    if (!/^\d+$/.test(values.workers) || workers < 1) throw new UsageError(`--workers must be a whole number >= 1, got ${JSON.stringify(values.workers)}`);
  }
  const options: RenderOptions = {
    name: values.name,
    exec: values.exec,
    listen: values.listen,
    fdstore: values.fdstore,
    template: values.template,
    run: values.run,
    // --ready and --run-watchdog are checked by renderUnits (with --run only; the message names the value).
    ...(values.ready !== undefined ? { ready: values.ready as NonNullable<RenderOptions['ready']> } : {}),
    ...(values['run-watchdog'] !== undefined ? { runWatchdog: values['run-watchdog'] as NonNullable<RenderOptions['runWatchdog']> } : {}),
    ...(values.description !== undefined ? { description: values.description } : {}),
    ...(values.type !== undefined ? { type: values.type as 'notify' | 'notify-reload' } : {}),
    ...(values.user !== undefined ? { user: values.user } : {}),
    ...(values.group !== undefined ? { group: values.group } : {}),
    ...(workers !== undefined ? { workers } : {}),
    ...(values.watchdog !== undefined ? { watchdog: seconds(values.watchdog, 'watchdog') } : {}),
    ...(values['upgrade-timeout'] !== undefined ? { upgradeTimeout: seconds(values['upgrade-timeout'], 'upgrade-timeout') } : {}),
    ...(values['stop-timeout'] !== undefined ? { stopTimeout: seconds(values['stop-timeout'], 'stop-timeout') } : {}),
    ...(values['sd-handoff'] !== undefined ? { sdHandoff: values['sd-handoff'] } : {}),
  };
  let rendered: RenderedUnit[];
  try {
    rendered = renderUnits(options);
  } catch (err) {
    if ((err as SdHandoffError).code === 'SDH_INVALID_OPTION') throw new UsageError((err as Error).message);
    throw err;
  }
  if (!values['no-verify']) {
    const v = await (io.verify ?? verifyRendered)(rendered);
    if (!v.available) {
      io.err('sd-handoff units render: systemd-analyze not found: the units were not verified\n');
    } else if (!v.ok) {
      io.err(
        `sd-handoff units render: systemd-analyze verify ${v.exitCode === 0 ? 'warned' : `failed (status ${v.exitCode})`}; nothing written (--no-verify writes anyway):\n${v.output
          .split('\n')
          .map((l) => `  ${l}`)
          .join('\n')}\n`,
      );
      return EXIT.FAILED;
    }
  }
  if (values['dry-run']) {
    io.out(rendered.map((u) => `# ==> ${u.file} <==\n${u.text}`).join('\n'));
    return EXIT.OK;
  }
  mkdirSync(values.out, { recursive: true });
  for (const u of rendered) {
    const file = path.join(values.out, u.file);
    writeFileSync(file, u.text);
    io.out(`wrote ${file}\n`);
  }
  return EXIT.OK;
}

/**
 * The version in the package's own package.json, read when asked rather than copied in at build time, so that it
 * cannot disagree with what npm installed. cli.js sits one directory below it (src/ or dist/).
 */
function packageVersion(): string {
  return String((JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown }).version);
}

/** Runs the CLI with `argv` (without node and the script) and returns the exit code. */
export async function main(argv: string[], io: CliIo = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t), env: process.env }): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        io.out(HELP);
        return command === undefined ? EXIT.USAGE : EXIT.OK;
      case '--version':
      case '-V':
        io.out(`${packageVersion()}\n`);
        return EXIT.OK;
      case 'upgrade':
        return await upgrade(rest, io);
      case 'reload':
        return await reload(rest, io);
      case 'status':
        return await status(rest, io);
      case 'units':
        return await units(rest, io);
      case 'takeover':
        return await takeover(rest, io);
      case 'run':
        return await run(rest, io);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`sd-handoff: ${(err as Error).message}\nRun \`sd-handoff --help\`.\n`);
      return EXIT.USAGE;
    }
    io.err(`sd-handoff: ${(err as Error).message}\n`);
    return EXIT.FAILED;
  }
}

/** True when this file is the program being run (directly or through npm's bin symlink), not imported. */
function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
