/**
 * The Upgrader's listeners: fds taken, by name, from the upgrading parent, from systemd (socket activation or the
 * fd store), or bound fresh; each kept with its name so it can be handed to the next process.
 *
 * Unix path listeners are bound by the addon, not by Node: libuv unlinks the path of a socket it bound when the
 * server closes, and the old process closing its server after a handover must not delete the path the new process
 * now serves. Abstract names (`@name`) need the addon anyway (exact address length).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { checkDatagram, checkStreamListener, fdSummary, serverFromFd } from '../activation.js';
import { sdError, show } from '../errors.js';
import type { FdInfo, NativeAddon } from '../native.js';
import { checkFdName } from '../notify.js';

/** Marks a server whose listen() must not be redirected by sd-handoff/auto. */
export const INTERNAL_LISTEN = Symbol.for('sd-handoff.internal-listen');

/** Where to bind a stream listener when nobody passed one. */
export type StreamAddress =
  | {
      /** TCP port (1-65535, or 0 for any free port). */
      port: number;
      /** IP address to bind (default: every address, as Node's `listen(port)`). */
      host?: string;
    }
  | {
      /** Unix socket path (absolute), or `@name` for an abstract socket. */
      path: string;
    };
/** Where to bind a UDP socket when nobody passed one. */
export type PacketAddress = {
  /** UDP port. */
  port: number;
  /** Address to bind (default: every address). */
  host?: string;
  /** Socket type (default `udp4`, or `udp6` when `host` is an IPv6 address). */
  type?: 'udp4' | 'udp6';
};

/** An fd this process holds, with its name and origin. */
export interface HeldFd {
  name: string;
  fd: number;
  info: FdInfo;
  origin: 'parent' | 'systemd' | 'fresh';
  /** Claimed by listen()/listenPacket() in this process. */
  claimed: boolean;
}

/** Validates a stream address option, naming the value. */
export function checkStreamAddress(address: unknown): StreamAddress {
  const a = address as Record<string, unknown> | null;
  if (typeof a === 'object' && a !== null) {
    if (typeof a.path === 'string' && a.path.length > 0) {
      if (a.path[0] !== '/' && a.path[0] !== '@') {
        throw sdError('SDH_INVALID_OPTION', `address.path must be absolute or @abstract, got ${show(a.path)}`, { option: 'address.path', value: a.path });
      }
      return { path: a.path };
    }
    if (typeof a.port === 'number' && Number.isInteger(a.port) && a.port >= 0 && a.port <= 65535) {
      if (a.host !== undefined && (typeof a.host !== 'string' || net.isIP(a.host) === 0)) {
        throw sdError('SDH_INVALID_OPTION', `address.host must be an IP address, got ${show(a.host)}`, { option: 'address.host', value: a.host });
      }
      return a.host === undefined ? { port: a.port } : { port: a.port, host: a.host };
    }
  }
  throw sdError('SDH_INVALID_OPTION', `address must be { port, host? } with port 0..65535 or { path }, got ${show(address)}`, {
    option: 'address',
    value: address,
  });
}

function sameAddress(info: FdInfo, kind: 'stream' | 'packet', address: StreamAddress | PacketAddress): boolean {
  if (info.kind !== 'socket' || info.type !== (kind === 'stream' ? 'stream' : 'dgram')) return false;
  if ('path' in address) return info.family === 'unix' && info.address === address.path;
  if (info.family !== 'inet' && info.family !== 'inet6') return false;
  // Port 0 means "any port": it identifies no socket.
  if (address.port === 0 || info.port !== address.port) return false;
  if (address.host === undefined) return true;
  return info.address === address.host;
}

/** The set of fds the process holds, by name. */
export class ListenerSet {
  readonly #held: HeldFd[] = [];
  constructor(private readonly addon: NativeAddon) {}

  /** Adds fds received from the parent or from systemd. */
  adopt(fds: Array<Omit<HeldFd, 'claimed'>>): void {
    for (const f of fds) this.#held.push({ ...f, claimed: false });
  }

  /** All fds held, claimed or not, in order. */
  all(): readonly HeldFd[] {
    return this.#held;
  }

  /** Claimed fds (those passed on to the next process after ready()). */
  claimed(): HeldFd[] {
    return this.#held.filter((h) => h.claimed);
  }

  /**
   * Finds the unclaimed fd for `name` (or, failing that, the only unclaimed one bound to `address`), checks it is
   * of the kind asked for, and marks it claimed.
   */
  claim(name: string, kind: 'stream' | 'packet', address?: StreamAddress | PacketAddress): HeldFd | undefined {
    checkFdName(name, 'listener name');
    let found = this.#held.find((h) => !h.claimed && h.name === name);
    if (!found && address) {
      const byAddress = this.#held.filter((h) => !h.claimed && h.origin !== 'fresh' && sameAddress(h.info, kind, address));
      if (byAddress.length === 1) found = byAddress[0];
    }
    if (!found) return undefined;
    if (kind === 'stream') checkStreamListener(found.fd, this.addon);
    else checkDatagram(found.fd, this.addon);
    found.claimed = true;
    return found;
  }

  /** Records a freshly bound fd as claimed. */
  addFresh(name: string, fd: number, info: FdInfo): HeldFd {
    if (this.#held.some((h) => h.name === name && h.claimed)) {
      throw sdError('SDH_INVALID_OPTION', `a listener named ${show(name)} is already open in this process`, { option: 'name', value: name });
    }
    const held: HeldFd = { name, fd, info, origin: 'fresh', claimed: true };
    this.#held.push(held);
    return held;
  }

  /** Closes every fd nobody claimed (called by ready()): an fd kept open by accident keeps a port busy. */
  closeUnclaimed(): HeldFd[] {
    const closed: HeldFd[] = [];
    for (let i = this.#held.length - 1; i >= 0; i--) {
      const h = this.#held[i]!;
      if (h.claimed) continue;
      try {
        this.addon.close(h.fd);
      } catch {
        /* already gone */
      }
      this.#held.splice(i, 1);
      closed.unshift(h);
    }
    return closed;
  }
}

/** Binds a fresh stream listener and returns its fd (owned by the returned server's handle). */
export async function bindStream(address: StreamAddress, backlog: number, addon: NativeAddon, mode?: number): Promise<number> {
  if ('path' in address) return addon.listenUnix(address.path, backlog, mode ?? -1);
  const server = net.createServer();
  // sd-handoff/auto patches net.Server#listen; this temporary server must reach Node's own.
  (server as unknown as Record<symbol, boolean>)[INTERNAL_LISTEN] = true;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(sdError('SDH_SYSCALL', `cannot listen on ${address.host ?? '*'}:${address.port}: ${err.message}`, { cause: err, ...address })),
    );
    server.listen({ port: address.port, host: address.host, backlog, exclusive: true }, () => resolve());
  });
  // Keep our own dup of the socket and let the temporary server go: the caller serves the dup, so every listener,
  // fresh or inherited, is served the same way (listen({fd})).
  const fd = addon.dup((server as unknown as { _handle: { fd: number } })._handle.fd);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return fd;
}

/** Binds a fresh UDP socket and returns a dup of its fd. */
export async function bindPacket(address: PacketAddress, addon: NativeAddon): Promise<number> {
  const type = address.type ?? (address.host !== undefined && net.isIPv6(address.host) ? 'udp6' : 'udp4');
  const socket = dgram.createSocket({ type, reuseAddr: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (err) =>
      reject(sdError('SDH_SYSCALL', `cannot bind UDP ${address.host ?? '*'}:${address.port}: ${err.message}`, { cause: err, ...address })),
    );
    socket.bind({ port: address.port, address: address.host, exclusive: true }, () => resolve());
  });
  const fd = addon.dup((socket as unknown as { _handle: { fd: number } })._handle.fd);
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return fd;
}

/** Serves a stream fd with `server`, keeping `backlog` (default: the kernel's SOMAXCONN). */
export function serveStream<S extends net.Server>(fd: number, backlog: number | undefined, server: S, addon: NativeAddon): Promise<S> {
  return serverFromFd(fd, { server, addon, ...(backlog === undefined ? {} : { backlog }) });
}

/** Serves a UDP fd with a new dgram.Socket of the fd's family. */
export async function servePacket(fd: number, info: FdInfo): Promise<dgram.Socket> {
  const socket = dgram.createSocket(info.family === 'inet6' ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (err) => reject(sdError('SDH_BAD_FD', `fd ${fd} (${fdSummary(info)}) could not be bound: ${err.message}`, { fd, cause: err })));
    socket.bind({ fd }, () => resolve());
  });
  return socket;
}
