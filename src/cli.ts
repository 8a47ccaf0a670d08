#!/usr/bin/env node
/**
 * The `sd-handoff` command.
 *
 *   sd-handoff upgrade [--socket PATH | --pid PID] [--timeout S] [--json]
 *
 * Exit codes: 0 success; 1 the operation failed (the service said why); 2 bad usage; 3 the service could not be
 * reached. Every subcommand has `--help`.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SdHandoffError } from './errors.js';
import { controlRequest } from './upgrade/control.js';

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, UNREACHABLE: 3 } as const;

const HELP = `sd-handoff: zero-downtime upgrades for services under systemd

Usage:
  sd-handoff upgrade [--socket PATH | --pid PID] [--timeout S] [--json]
      Ask a running service (an sd-handoff Upgrader) for an upgrade through its control socket, wait for the
      result and exit non-zero if the new version failed. Meant for ExecReload=, so that \`systemctl reload\`
      waits for the upgrade and fails when it fails.

Exit codes: 0 success, 1 failed (the reason is printed), 2 bad usage, 3 service not reachable.
Run \`sd-handoff COMMAND --help\` for a command's options.
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

/** What a CLI run writes and returns; injected so tests run it in-process. */
export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

class UsageError extends Error {}

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

async function upgrade(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      socket: { type: 'string' },
      pid: { type: 'string' },
      timeout: { type: 'string', default: '120' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    io.out(UPGRADE_HELP);
    return EXIT.OK;
  }
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
      case 'upgrade':
        return await upgrade(rest, io);
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
