/**
 * PID files that systemd's `PIDFile=` can trust.
 *
 * systemd re-reads `PIDFile=` after `ExecReload=` and when the main process exits, so the new pid must be in place
 * BEFORE readiness is signalled or `MAINPID=` is sent; the reverse order is the race behind many bug reports. The
 * file is written to a temporary name in the same directory (created exclusively, so an attacker's symlink there is
 * never followed) and renamed over the target (rename replaces a symlink at the target, never writes through it).
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync, constants } from 'node:fs';
import path from 'node:path';
import { sdError, show } from './errors.js';

/** Checks a PID file option: an absolute path. */
export function checkPidFilePath(value: unknown, option = 'pidFile'): string {
  if (typeof value !== 'string' || !path.isAbsolute(value) || value.endsWith('/')) {
    throw sdError('SDH_INVALID_OPTION', `${option} must be an absolute file path, got ${show(value)}`, { option, value });
  }
  return value;
}

/** Writes `pid` followed by a newline to `file` atomically (temp file + fsync + rename). */
export function writePidFile(file: string, pid: number = process.pid): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  // O_EXCL with O_CREAT fails on any existing name, symlinks included; O_NOFOLLOW documents the intent.
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    writeSync(fd, `${pid}\n`);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, file);
  } catch (err) {
    unlinkSync(tmp);
    throw err;
  }
}

/** Reads the pid in `file`, or undefined when it is missing or holds no pid. */
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
