/**
 * The one error class of sd-handoff and the one table of its codes.
 *
 * Every error the library throws is an {@link SdHandoffError}. Its `code` is either one of the project codes
 * listed in {@link ERROR_CODES} (documented in `docs/errors.md`; a test fails when one is missing there) or, for a
 * failed system call, the errno name (`EBADF`, `ENOENT`, ...) with `errno`, `syscall` and the path or fd kept.
 * The native addon constructs instances of this class itself (it is handed the constructor once), so nothing ever
 * surfaces as a bare `strerror` string.
 */
import { getSystemErrorMap, getSystemErrorName } from 'node:util';

/** Every project error code, with the one-line meaning that `docs/errors.md` expands on. */
export const ERROR_CODES = {
  SDH_SYSCALL: 'A system call failed; `code` is replaced by the errno name and `errno`/`syscall`/`path`/`fd` are set.',
  SDH_NATIVE_UNAVAILABLE: 'The native addon could not be loaded; the message lists every path tried.',
  SDH_UNSUPPORTED_PLATFORM: 'The operation needs Linux (and systemd) and this is another OS.',
  SDH_INVALID_OPTION: 'An option passed to a function or constructor is missing, of the wrong type or out of range.',
  SDH_INVALID_ENV: 'An environment variable set by systemd (LISTEN_FDS, LISTEN_PID, WATCHDOG_USEC, ...) is malformed.',
  SDH_FDNAMES_MISMATCH: 'LISTEN_FDNAMES does not hold exactly one name per fd in LISTEN_FDS.',
  SDH_INVALID_NAME: 'A file-descriptor name is empty, too long, or holds ":" or a control character.',
  SDH_BAD_FD: 'A file descriptor is not open, or not what it was expected to be (not a socket, wrong type, not listening).',
  SDH_NO_SUCH_LISTENER: 'No inherited or stored file descriptor carries the requested name.',
  SDH_NOTIFY_SOCKET: 'NOTIFY_SOCKET is set but is not a usable socket address.',
  SDH_TOO_MANY_FDS: 'More file descriptors than the receiving side accepts were passed.',
  SDH_INVALID_FIELD: 'A journal field name is not uppercase ASCII letters, digits and "_" (not starting with "_").',
  SDH_UPGRADE_IN_PROGRESS: 'An upgrade was requested while another upgrade (or a stop) was under way.',
  SDH_UPGRADE_FAILED: 'The new process exited, crashed or reported failure before it became ready.',
  SDH_UPGRADE_TIMEOUT: 'The new process did not become ready within upgradeTimeoutMs.',
  SDH_NOT_UPGRADING: 'A child-side call was made in a process that was not started by an upgrade.',
  SDH_STOPPED: 'The Upgrader (or pool) was stopped; the operation was not carried out.',
  SDH_PROTOCOL: 'A peer (control socket, upgrade channel) sent a message that does not follow the protocol.',
  SDH_PERMISSION: 'A peer connected to the control socket with credentials that are not allowed.',
  SDH_TIMEOUT: 'A bounded wait expired.',
  SDH_DBUS: 'A D-Bus call to systemd failed; `dbusName` holds the D-Bus error name.',
  SDH_NO_SUCH_UNIT: 'systemd knows no unit of that name.',
  SDH_JOB_FAILED: 'A systemd job (start, stop, restart, reload) finished with a result other than "done".',
  SDH_PID_FILE: 'The PID file (or its directory) could not be written; the message names the path, the call and the errno.',
  SDH_MISSING_DEPENDENCY: 'An optional package a feature needs is not installed (dbus-next, for Systemd and the CLI\'s reload/status).',
  SDH_PID_ONE: 'An upgrade was refused because this process is PID 1 of its PID namespace (a container entry point): handing over and exiting would end the namespace.',
} as const;

/** A project error code, or the errno name of a failed system call. */
export type ErrorCode = keyof typeof ERROR_CODES | (string & {});

/** The details an {@link SdHandoffError} can carry. */
export interface ErrorDetails {
  /** Project code; for system-call errors leave unset and give `errno`. */
  code?: keyof typeof ERROR_CODES;
  /** Positive errno number of a failed system call. */
  errno?: number;
  /** The system call that failed (`sendmsg`, `fstat`, ...). */
  syscall?: string;
  /** The filesystem or abstract socket path involved. */
  path?: string;
  /** The file descriptor involved. */
  fd?: number;
  /** The underlying error, if this one wraps another. */
  cause?: unknown;
  /** Extra structured facts (the variable name and value, a pid, an exit code...). */
  [key: string]: unknown;
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno));
  } catch {
    return `E${errno}`;
  }
}

// util.getSystemErrorMap() builds a fresh Map on every call (about 50 µs): build it once, on first use.
let errorMap: Map<number, [string, string]> | undefined;

function errnoText(errno: number): string {
  errorMap ??= getSystemErrorMap();
  return errorMap.get(-Math.abs(errno))?.[1] ?? `errno ${errno}`;
}

/** The error every sd-handoff function throws or rejects with. */
export class SdHandoffError extends Error {
  /** Project code (see {@link ERROR_CODES}) or the errno name of a failed system call. */
  readonly code: ErrorCode;
  /** Positive errno number, for system-call errors. */
  readonly errno?: number;
  /** The failed system call, for system-call errors. */
  readonly syscall?: string;
  /** The path involved, if any. */
  readonly path?: string;
  /** The file descriptor involved, if any. */
  readonly fd?: number;

  constructor(message: string, details: ErrorDetails = {}) {
    const { code, errno, syscall, path, fd, cause, ...extra } = details;
    let text = message;
    if (errno !== undefined && code === undefined) {
      // System-call error: the message names the call, the object and the errno, as Node's own errors do.
      const where = path !== undefined ? ` ${path}` : fd !== undefined ? ` fd ${fd}` : '';
      text = `${message ? `${message}: ` : ''}${syscall ?? 'syscall'}${where}: ${errnoName(errno)} (${errnoText(errno)})`;
    }
    super(text, cause === undefined ? undefined : { cause });
    this.name = 'SdHandoffError';
    this.code = code ?? (errno !== undefined ? errnoName(errno) : 'SDH_SYSCALL');
    if (errno !== undefined) this.errno = errno;
    if (syscall !== undefined) this.syscall = syscall;
    if (path !== undefined) this.path = path;
    if (fd !== undefined) this.fd = fd;
    Object.assign(this, extra);
  }
}

/** Shorthand for throwing a project error. */
export function sdError(code: keyof typeof ERROR_CODES, message: string, details: Omit<ErrorDetails, 'code'> = {}): SdHandoffError {
  return new SdHandoffError(message, { ...details, code });
}

/** Formats a value for an error message: strings quoted, everything else as JSON. */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
