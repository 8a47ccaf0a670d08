/**
 * Runs host commands for the lab (debootstrap, nsenter, ...) and collects their output. Every wait is bounded: a
 * command past its timeout is killed with SIGKILL and reported as such.
 */
import { spawn, type SpawnOptions } from 'node:child_process';

export interface ExecResult {
  /** Exit status; -1 when the process was killed by a signal. */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the lab killed the process because it ran past `timeoutMs`. */
  timedOut: boolean;
}

export interface RunOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Throw a CommandError when the command does not exit 0. */
  check?: boolean;
  /**
   * How to signal the command (timeouts and `Running.kill`); default: signal the spawned process. nsenter does not
   * pass signals on to the command it runs in the container, so the container code signals that one directly.
   */
  signal?: (pid: number, signal: NodeJS.Signals) => void;
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    const how = result.timedOut ? 'timed out' : result.signal ? `was killed by ${result.signal}` : `exited ${result.code}`;
    const tail = (s: string) => s.trim().split('\n').slice(-20).join('\n');
    super(`${argv.join(' ')} ${how}\n--- stderr ---\n${tail(result.stderr)}\n--- stdout ---\n${tail(result.stdout)}`);
    this.name = 'CommandError';
  }
}

export interface Running {
  pid: number;
  done: Promise<ExecResult>;
  kill(signal?: NodeJS.Signals): void;
}

/** Starts a command, collecting stdout/stderr; `done` settles when it exits (never rejects for an exit status). */
export function start(argv: readonly string[], opts: RunOptions & Pick<SpawnOptions, 'detached'> = {}): Running {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('start: empty argv');
  const child = spawn(cmd, args, {
    env: opts.env ?? process.env,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    detached: opts.detached ?? false,
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (b: Buffer) => out.push(b));
  child.stderr?.on('data', (b: Buffer) => err.push(b));
  if (opts.input !== undefined && child.stdin) {
    child.stdin.on('error', () => {}); // the command may exit without reading its input
    child.stdin.end(opts.input);
  }
  const signal = (sig: NodeJS.Signals) => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    if (opts.signal) opts.signal(child.pid, sig);
    else child.kill(sig);
  };
  let timedOut = false;
  const timer =
    opts.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          signal('SIGKILL');
        }, opts.timeoutMs);
  timer?.unref();
  const done = new Promise<ExecResult>((resolveDone) => {
    let spawnError: Error | undefined;
    child.on('error', (e) => {
      spawnError = e;
    });
    child.on('close', (code, exitSignal) => {
      if (timer) clearTimeout(timer);
      resolveDone({
        code: code ?? -1,
        signal: exitSignal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (spawnError ? `\n${spawnError.message}` : ''),
        timedOut,
      });
    });
  });
  return {
    pid: child.pid ?? -1,
    done,
    kill: (sig = 'SIGTERM') => signal(sig),
  };
}

/** Runs a command to completion. */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<ExecResult> {
  const result = await start(argv, opts).done;
  if (opts.check && result.code !== 0) throw new CommandError(argv, result);
  return result;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Blocks the thread: only for cleanup in `process.on('exit')`, where nothing asynchronous runs any more. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Polls `fn` until it returns something other than `undefined`/`false`/`null`, and returns that. Throws after
 * `timeoutMs` with the last value or error seen, so a failed wait says what it was waiting on.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  { intervalMs = 100, what = 'condition' }: { intervalMs?: number; what?: string } = {},
): Promise<Exclude<T, undefined | false | null>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false && v !== null) return v as Exclude<T, undefined | false | null>;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`waitFor(${what}) timed out after ${timeoutMs} ms; last: ${detail}`);
    }
    await sleep(intervalMs);
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
