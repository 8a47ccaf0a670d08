/**
 * The listening sockets `sd-handoff run` holds for its program: taken from systemd when `run` itself is
 * socket-activated (`LISTEN_FDS`, through {@link listenFds}: matched to a `--listen` by name, else by address), else
 * bound fresh. `run` never accepts on them; it passes them to every program it starts, from fd 3, in `--listen`
 * order, followed by any fd systemd passed that no `--listen` asked for (they are the service's sockets too: dropping
 * them would leave a socket unit's port unserved). Every fd kept here is CLOEXEC; spawn clears that in the child.
 */
import type { ListenFd } from '../activation.js';
import { checkDatagram, checkStreamListener, defaultBacklog, fdSummary } from '../activation.js';
import { sdError, show } from '../errors.js';
import type { FdInfo, NativeAddon } from '../native.js';
import { bindPacket, bindStream, type PacketAddress, type StreamAddress } from '../upgrade/listeners.js';
import type { RunListen } from './options.js';

/** One socket held for the program. */
export interface HeldSocket {
  /** Its name in `LISTEN_FDNAMES`: the `=NAME` of `--listen`, else systemd's name, else "unknown" (as sd_listen_fds_with_names). */
  name: string;
  fd: number;
  info: FdInfo;
  origin: 'systemd' | 'fresh';
  /** The `--listen` value it answers, when one asked for it. */
  spec?: string;
}

/** True when systemd's fd `info` is the socket `l` describes (port 0 identifies nothing). */
export function sameAddress(info: FdInfo, l: RunListen): boolean {
  if (info.kind !== 'socket' || info.type !== (l.kind === 'stream' ? 'stream' : 'dgram')) return false;
  const a = l.address as StreamAddress | PacketAddress;
  if ('path' in a) return info.family === 'unix' && info.address === a.path;
  if (info.family !== 'inet' && info.family !== 'inet6') return false;
  if (a.port === 0 || info.port !== a.port) return false;
  return a.host === undefined || info.address === a.host;
}

function check(fd: number, l: RunListen, addon: NativeAddon): FdInfo {
  return l.kind === 'stream' ? checkStreamListener(fd, addon) : checkDatagram(fd, addon);
}

/**
 * Takes or binds one socket per `--listen` and returns them with the inherited fds nobody asked for. Throws
 * SDH_BAD_FD when systemd's fd of that name is not what the `--listen` says, SDH_SYSCALL (with the address) when a
 * fresh bind fails.
 */
export async function openSockets(listen: readonly RunListen[], inherited: readonly ListenFd[], addon: NativeAddon): Promise<HeldSocket[]> {
  const left = [...inherited];
  const held: HeldSocket[] = [];
  try {
    for (const l of listen) {
      let i = l.name === undefined ? -1 : left.findIndex((f) => f.name === l.name);
      if (i >= 0 && !sameKind(left[i]!.info, l)) {
        throw sdError('SDH_BAD_FD', `--listen ${show(l.spec)}: systemd passed fd ${left[i]!.fd} named ${show(l.name)}, which is ${fdSummary(left[i]!.info)}`, {
          fd: left[i]!.fd,
          name: l.name,
        });
      }
      if (i < 0) {
        const matches = left.map((f, j) => (sameAddress(f.info, l) ? j : -1)).filter((j) => j >= 0);
        if (matches.length === 1) i = matches[0]!;
      }
      if (i >= 0) {
        const f = left.splice(i, 1)[0]!;
        held.push({ name: l.name ?? f.name, fd: f.fd, info: check(f.fd, l, addon), origin: 'systemd', spec: l.spec });
        continue;
      }
      const fd = l.kind === 'stream' ? await bindStream(l.address, defaultBacklog(), addon) : await bindPacket(l.address, addon);
      held.push({ name: l.name ?? 'unknown', fd, info: addon.describe(fd), origin: 'fresh', spec: l.spec });
    }
  } catch (err) {
    for (const h of held) if (h.origin === 'fresh') addon.close(h.fd);
    throw err;
  }
  for (const f of left) held.push({ name: f.name, fd: f.fd, info: f.info, origin: 'systemd' });
  return held;
}

function sameKind(info: FdInfo, l: RunListen): boolean {
  if (info.kind !== 'socket') return false;
  return l.kind === 'stream' ? info.type === 'stream' && info.listening === true : info.type === 'dgram';
}

/** "127.0.0.1:8080", "[::]:8080", "/run/app.sock", "@name", with "udp " before datagram sockets. */
export function describeSocket(h: HeldSocket): string {
  const i = h.info;
  const where = i.family === 'unix' ? i.address || '(unnamed)' : i.family === 'inet6' ? `[${i.address}]:${i.port}` : `${i.address}:${i.port}`;
  return `${i.type === 'dgram' ? 'udp ' : ''}${where}`;
}
