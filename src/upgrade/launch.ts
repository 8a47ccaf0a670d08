/**
 * Starts a program that takes over from a running instance (SDH_TAKEOVER) and waits until it has, or has failed.
 * This is `sd-handoff takeover -- CMD ARGS...`: from `ExecReload=`, the new process is started in the unit's own
 * cgroup, `systemctl reload` lasts as long as the takeover, and fails when it fails.
 *
 * The program is started detached (its own session: it outlives this command) with the caller's stdout and stderr,
 * and fd 3 a pipe on which its Upgrader writes one line: `ok NEWPID` once it took over, or `failed: REASON`.
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { sdError } from '../errors.js';

export interface LaunchOptions {
  /** The running instance's control socket. */
  socket: string;
  /** How long the takeover may take (default 120 000 ms); the program is killed past it. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface LaunchResult {
  pid: number;
  durationMs: number;
}

/** Resolves with the new pid once it took over; rejects with the reason (the program is then gone). */
export function launchTakeover(command: string, args: string[], options: LaunchOptions): Promise<LaunchResult> {
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 120_000;
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    env: { ...(options.env ?? process.env), SDH_TAKEOVER: options.socket, SDH_TAKEOVER_REPORT_FD: '3' },
  });
  return new Promise<LaunchResult>((resolve, reject) => {
    let line = '';
    let settled = false;
    const report = child.stdio[3] as Readable;
    const finish = (err: Error | undefined, result?: LaunchResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      report.destroy();
      if (err) {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        reject(err);
      } else {
        // It runs on as the service: neither its exit nor its pipe may keep us.
        child.unref();
        resolve(result!);
      }
    };
    const timer = setTimeout(() => finish(sdError('SDH_UPGRADE_TIMEOUT', `the new process (pid ${child.pid}) did not take over within ${timeoutMs} ms; killed`)), timeoutMs);
    child.once('error', (err) => finish(sdError('SDH_UPGRADE_FAILED', `cannot start ${command}: ${err.message}`, { cause: err })));
    child.once('exit', (code, signal) => {
      // Give its last report line a moment to arrive before calling it a crash.
      setTimeout(() => finish(sdError('SDH_UPGRADE_FAILED', `the new process (pid ${child.pid}) ${signal ? `was killed by ${signal}` : `exited with status ${code}`} before it took over${line ? `: ${line.trim()}` : ''}`, { exitCode: code, signal })), 100);
    });
    report.on('data', (d: Buffer) => {
      line += d.toString();
      if (!line.includes('\n')) return;
      const first = line.slice(0, line.indexOf('\n'));
      const ok = /^ok (\d+)/.exec(first);
      if (ok) finish(undefined, { pid: Number(ok[1]), durationMs: Date.now() - started });
      else finish(sdError('SDH_UPGRADE_FAILED', first.replace(/^failed: /, '')));
    });
  });
}
