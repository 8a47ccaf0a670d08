/**
 * PID files that systemd's `PIDFile=` can trust.
 *
 * systemd re-reads `PIDFile=` after `ExecReload=` and when the main process exits, so the new pid must be in place
 * BEFORE readiness is signalled or `MAINPID=` is sent; the reverse order is the race behind many bug reports. The
 * file is written to a temporary name in the same directory (created exclusively, so an attacker's symlink there is
 * never followed) and renamed over the target (rename replaces a symlink at the target, never writes through it).
 *
 * A missing directory is created (mode 0755), as daemons do: under systemd `RuntimeDirectory=` normally has made it
 * already, but the same program started by hand, by another supervisor or in a container would otherwise die on a
 * bare ENOENT. Every failure is an `SDH_PID_FILE` error naming the PID file, the path and call that failed and the
 * errno.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync, constants } from 'node:fs';
import path from 'node:path';
import { getSystemErrorMap } from 'node:util';
import { SdHandoffError, sdError, show } from './errors.js';

/** Checks a PID file option: an absolute path. */
export function checkPidFilePath(value: unknown, option = 'pidFile'): string {
  if (typeof value !== 'string' || !path.isAbsolute(value) || value.endsWith('/')) {
    throw sdError('SDH_INVALID_OPTION', `${option} must be an absolute file path, got ${show(value)}`, { option, value });
  }
  return value;
}

/** The SDH_PID_FILE error for a failed fs call (`err`, from node:fs) while writing `file`. */
function pidFileError(file: string, err: unknown): SdHandoffError {
  const e = err as NodeJS.ErrnoException & { dest?: string };
  const errno = typeof e.errno === 'number' ? Math.abs(e.errno) : undefined;
  const what = errno === undefined ? e.message : `${e.code ?? `errno ${errno}`} (${getSystemErrorMap().get(-errno)?.[1] ?? e.message})`;
  const where = `${e.syscall ?? 'write'} ${show(e.path ?? file)}${e.dest !== undefined ? ` -> ${show(e.dest)}` : ''}`;
  return sdError('SDH_PID_FILE', `cannot write the PID file ${show(file)}: ${where}: ${what}`, {
    pidFile: file,
    path: e.path ?? file,
    ...(errno !== undefined ? { errno } : {}),
    ...(e.syscall !== undefined ? { syscall: e.syscall } : {}),
    cause: err,
  });
}

/** Removes the temporary file after a failure; the failure being reported matters more than this one. */
function unlinkQuietly(tmp: string): void {
  try {
    unlinkSync(tmp);
  } catch {
    // Already gone, or the directory became unwritable: nothing better to do with it.
  }
}

/**
 * Writes `pid` followed by a newline to `file` atomically (temp file in the same directory, fsync, rename), creating
 * the directory (mode 0755) when it is missing.
 *
 * @param file - absolute path of the PID file (what the unit's `PIDFile=` names)
 * @param pid - the pid to write (default: this process's)
 * @throws {@link SdHandoffError} `SDH_PID_FILE` when a directory, the temporary file or the rename fails; its message
 * names the PID file, the failing call and path and the errno (`EACCES`, `EROFS`, ...), kept in `errno`/`syscall`/`path`.
 */
export function writePidFile(file: string, pid: number = process.pid): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  let fd: number;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    // O_EXCL with O_CREAT fails on any existing name, symlinks included; O_NOFOLLOW documents the intent.
    fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  } catch (err) {
    throw pidFileError(file, err);
  }
  try {
    writeSync(fd, `${pid}\n`);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkQuietly(tmp);
    throw pidFileError(file, Object.assign(err as Error, { path: tmp }));
  }
  closeSync(fd);
  try {
    renameSync(tmp, file);
  } catch (err) {
    unlinkQuietly(tmp);
    throw pidFileError(file, err);
  }
}

/**
 * Reads the pid in `file`.
 *
 * @returns the pid, or undefined when the file is missing, unreadable or holds no pid
 */
export function readPidFile(file: string): number | undefined {
  try {
    const text = readFileSync(file, 'utf8').trim();
    return /^\d+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** Removes `file` only if it still names `pid` (a successor may already have written its own). */
export function removePidFile(file: string, pid: number = process.pid): boolean {
  if (readPidFile(file) !== pid) return false;
  try {
    unlinkSync(file);
    return true;
  } catch {
    return false;
  }
}
