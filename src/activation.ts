/**
 * Socket activation and the fd store, as sd_listen_fds(3) defines them.
 *
 * Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (and unsets them by default, so children do not inherit
 * them by accident). The fds start at 3 (`SD_LISTEN_FDS_START`); sockets from `.socket` units come first, fds
 * from the service's fd store (`FDSTORE=1`) come last, in arbitrary order, each with its `FDNAME`.
 * Every fd taken is made CLOEXEC and described through the addon (socket type, family, listening, address),
 * because a bad fd handed to Node only fails later with an asynchronous EINVAL — and when `LISTEN_FDS` is set
 * but nothing was passed, fd 3 is Node's own epoll fd.
 *
 * Spec: https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html
 */
import dgram from 'node:dgram';
import { readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { sdError, show } from './errors.js';
import { native, type FdInfo, type NativeAddon } from './native.js';

/** The first passed fd (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/** One file descriptor passed by systemd. */
export interface ListenFd {
  /** The fd number (>= 3). */
  fd: number;
  /** Its name from `LISTEN_FDNAMES` (`FileDescriptorName=` or `FDNAME=`), or "unknown" when none was given. */
  name: string;
  /** What the fd is, from fstat/getsockopt/getsockname. */
  info: FdInfo;
}

/** Options of {@link listenFds}. The environment, pid and addon are injectable for tests. */
export interface ListenFdsOptions {
  /** Unset LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES afterwards (default true), as sd_listen_fds(1) does. */
  unsetEnvironment?: boolean;
  /** Environment to read (default `process.env`); unset happens on this object. */
  env?: NodeJS.ProcessEnv;
  /** Our pid (default `process.pid`). */
  pid?: number;
  /** @internal Test seam: the addon (default: the loaded one). */
  addon?: NativeAddon;
}

const VARS = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'] as const;

/** Parses a decimal integer the way systemd's safe_atoi does: digits only (optional leading '+'/'-'), no junk. */
function parseInteger(name: string, value: string): number {
  if (!/^[+-]?\d+$/.test(value.trim()) || value.trim() !== value) {
    throw sdError('SDH_INVALID_ENV', `${name}=${show(value)} is not a decimal integer`, { variable: name, value });
  }
  const n = Number(value);
  if (!Number.isSafeInteger(n)) {
    throw sdError('SDH_INVALID_ENV', `${name}=${show(value)} is out of range`, { variable: name, value });
  }
  return n;
}

/** Describes what sits at `fd` for an error message ("anon_inode:[eventpoll]", "/etc/passwd", ...). */
function whatIs(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return 'unknown';
  }
}

/**
 * Returns the fds systemd passed to this process (socket activation and the fd store), named and described.
 *
 * Not started by systemd with fds (no `LISTEN_FDS`, or `LISTEN_PID` names another process) is the normal case:
 * it returns `[]`, no error. Malformed variables, a name count that differs from the fd count, or an fd that is
 * not open (or is Node's own epoll fd, which sits at 3 when `LISTEN_FDS` was set without passing anything)
 * throw {@link SdHandoffError} naming the variable and its value.
 */
export function listenFds(options: ListenFdsOptions = {}): ListenFd[] {
  const env = options.env ?? process.env;
  const pid = options.pid ?? process.pid;
  const unset = options.unsetEnvironment ?? true;
  try {
    const pidText = env.LISTEN_PID;
    const fdsText = env.LISTEN_FDS;
    if (pidText === undefined || fdsText === undefined) return [];
    const listenPid = parseInteger('LISTEN_PID', pidText);
    if (listenPid <= 0) {
      throw sdError('SDH_INVALID_ENV', `LISTEN_PID=${show(pidText)} is not a process id`, { variable: 'LISTEN_PID', value: pidText });
    }
    // Meant for another process (our parent, typically): not ours to take. sd_listen_fds returns 0.
    if (listenPid !== pid) return [];
    const count = parseInteger('LISTEN_FDS', fdsText);
    if (count < 0) {
      throw sdError('SDH_INVALID_ENV', `LISTEN_FDS=${show(fdsText)} is negative`, { variable: 'LISTEN_FDS', value: fdsText });
    }
    const limit = fdLimit();
    if (count > limit - LISTEN_FDS_START) {
      throw sdError('SDH_INVALID_ENV', `LISTEN_FDS=${show(fdsText)} is more fds than this process can hold (RLIMIT_NOFILE ${limit})`, {
        variable: 'LISTEN_FDS',
        value: fdsText,
      });
    }
    if (count === 0) return [];
    const namesText = env.LISTEN_FDNAMES;
    const names = namesText === undefined ? new Array<string>(count).fill('unknown') : namesText.split(':');
    if (names.length !== count) {
      throw sdError('SDH_FDNAMES_MISMATCH', `LISTEN_FDNAMES has ${names.length} names for ${count} fds (LISTEN_FDNAMES=${show(namesText)})`, {
        variable: 'LISTEN_FDNAMES',
        value: namesText,
        count,
      });
    }
    const addon = options.addon ?? native();
    const result: ListenFd[] = [];
    for (let i = 0; i < count; i++) {
      const fd = LISTEN_FDS_START + i;
      let info: FdInfo;
      try {
        info = addon.describe(fd);
      } catch (err) {
        throw sdError('SDH_BAD_FD', `LISTEN_FDS=${fdsText} but fd ${fd} is not open`, { fd, variable: 'LISTEN_FDS', value: fdsText, cause: err });
      }
      if (info.kind === 'unknown' && whatIs(fd).includes('eventpoll')) {
        // Nothing was passed: Node's libuv opened its epoll fd at the lowest free number.
        throw sdError(
          'SDH_BAD_FD',
          `LISTEN_FDS=${fdsText} but fd ${fd} is Node's own epoll fd (anon_inode:[eventpoll]), not a passed fd: was LISTEN_FDS set without passing fds?`,
          { fd, variable: 'LISTEN_FDS', value: fdsText },
        );
      }
      addon.setCloexec(fd, true);
      result.push({ fd, name: names[i] ?? 'unknown', info });
    }
    return result;
  } finally {
    if (unset) for (const v of VARS) delete env[v];
  }
}

function fdLimit(): number {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const m = /^Max open files\s+(\d+)/m.exec(limits);
    if (m?.[1]) return Number(m[1]);
  } catch {
    /* not Linux: fall through */
  }
  return 1 << 20;
}

/** systemd's default `Backlog=` is SOMAXCONN; read the kernel's value so an fd keeps the queue systemd gave it. */
export function defaultBacklog(): number {
  try {
    const n = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
    if (Number.isInteger(n) && n > 0) return n;
  } catch {
    /* not Linux */
  }
  return 4096;
}

function describeFd(fd: number, addon: NativeAddon): FdInfo {
  if (!Number.isInteger(fd) || fd < 0) throw sdError('SDH_INVALID_OPTION', `fd must be a non-negative integer, got ${show(fd)}`, { fd });
  try {
    return addon.describe(fd);
  } catch (err) {
    throw sdError('SDH_BAD_FD', `fd ${fd} is not open`, { fd, cause: err });
  }
}

/** Human description of a described fd, for error messages: "regular file", "unix dgram socket", ... */
export function fdSummary(info: FdInfo): string {
  if (info.kind !== 'socket') return info.kind === 'file' ? 'a regular file' : `a ${info.kind} (not a socket)`;
  const where = info.family === 'unix' ? ` at ${show(info.address)}` : info.address ? ` on ${info.address}:${info.port}` : '';
  return `a ${info.family} ${info.type} socket${info.listening ? ' (listening)' : ''}${where}`;
}

/** Checks that `fd` is a listening stream socket (TCP, TCP6 or unix) and returns its description. */
export function checkStreamListener(fd: number, addon: NativeAddon = native()): FdInfo {
  const info = describeFd(fd, addon);
  if (info.kind !== 'socket' || info.type !== 'stream' || !info.listening || (info.family !== 'inet' && info.family !== 'inet6' && info.family !== 'unix')) {
    throw sdError('SDH_BAD_FD', `fd ${fd} is ${fdSummary(info)}, not a listening stream socket`, { fd, info });
  }
  return info;
}

/** Checks that `fd` is a UDP (inet/inet6 datagram) socket and returns its description. */
export function checkDatagram(fd: number, addon: NativeAddon = native()): FdInfo {
  const info = describeFd(fd, addon);
  if (info.kind !== 'socket' || info.type !== 'dgram' || (info.family !== 'inet' && info.family !== 'inet6')) {
    throw sdError('SDH_BAD_FD', `fd ${fd} is ${fdSummary(info)}, not a UDP socket`, { fd, info });
  }
  return info;
}

/** Options of {@link serverFromFd}. */
export interface ServerFromFdOptions {
  /** listen(2) backlog to keep (default: the kernel's SOMAXCONN, systemd's default `Backlog=`; Node would reset it to 511). */
  backlog?: number;
  /** Server to listen with (an `http.Server`, `https.Server`...). Default: a new `net.Server`. */
  server?: net.Server;
  /** @internal Test seam: the addon (default: the loaded one). */
  addon?: NativeAddon;
}

function checkBacklog(backlog: unknown): number {
  if (backlog === undefined) return defaultBacklog();
  if (typeof backlog !== 'number' || !Number.isInteger(backlog) || backlog < 1) {
    throw sdError('SDH_INVALID_OPTION', `backlog must be a positive integer, got ${show(backlog)}`, { option: 'backlog', value: backlog });
  }
  return backlog;
}

/**
 * Serves a passed listening stream socket (TCP, TCP6 or unix) with a `net.Server` (or the server given) and
 * resolves once it listens. The fd is checked first, so a wrong fd is a clear {@link SdHandoffError}, not a late
 * EINVAL. A unix path listener served this way is never unlinked by closing the server.
 */
export async function serverFromFd<S extends net.Server = net.Server>(fd: number, options: ServerFromFdOptions & { server?: S } = {}): Promise<S> {
  const addon = options.addon ?? native();
  checkStreamListener(fd, addon);
  const backlog = checkBacklog(options.backlog);
  const server = (options.server ?? net.createServer()) as S;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(sdError('SDH_BAD_FD', `fd ${fd} could not be served: ${err.message}`, { fd, cause: err }));
    server.once('error', onError);
    // Node takes the backlog of an fd only as listen()'s second argument; in the options object it is ignored
    // and the socket's queue silently shrinks to 511.
    server.listen({ fd }, backlog, () => {
      server.off('error', onError);
      resolve();
    });
  });
  return server;
}

/** Options of {@link socketFromFd}. */
export interface SocketFromFdOptions {
  /** Socket to bind with; default a new `dgram.Socket` of the fd's family. */
  socket?: dgram.Socket;
  /** @internal Test seam: the addon (default: the loaded one). */
  addon?: NativeAddon;
}

/** Serves a passed UDP socket with a bound `dgram.Socket`, after checking the fd. */
export async function socketFromFd(fd: number, options: SocketFromFdOptions = {}): Promise<dgram.Socket> {
  const addon = options.addon ?? native();
  const info = checkDatagram(fd, addon);
  const socket = options.socket ?? dgram.createSocket(info.family === 'inet6' ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(sdError('SDH_BAD_FD', `fd ${fd} could not be bound: ${err.message}`, { fd, cause: err }));
    socket.once('error', onError);
    socket.bind({ fd }, () => {
      socket.off('error', onError);
      resolve();
    });
  });
  return socket;
}
