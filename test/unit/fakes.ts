/** Fakes of the outside world for unit tests: an addon that records what it was asked to send. */
import { SdHandoffError } from '../../src/errors.js';
import type { FdInfo, NativeAddon } from '../../src/native.js';

export interface Sent {
  path: string;
  text: string;
  fds: number[];
}

/** A fake addon: `describe` answers from `fds`, sends are recorded in `sent`, everything else throws. */
export function fakeAddon(fds: Record<number, Partial<FdInfo>> = {}): NativeAddon & { sent: Sent[]; cloexec: Set<number> } {
  const sent: Sent[] = [];
  const cloexec = new Set<number>();
  const unsupported = (name: string) => () => {
    throw new Error(`fake addon: ${name} not faked`);
  };
  return {
    sent,
    cloexec,
    setErrorClass: () => {},
    sendDatagram(path, data, fdList) {
      if (fdList.length > 253) throw new SdHandoffError('too many', { code: 'SDH_TOO_MANY_FDS' });
      sent.push({ path, text: data.toString('utf8'), fds: [...fdList] });
      return data.length;
    },
    describe(fd) {
      const info = fds[fd];
      if (!info) throw new SdHandoffError('', { errno: 9, syscall: 'fstat', fd });
      return { fd, kind: 'socket', dev: 1n, ino: BigInt(fd), ...info } as FdInfo;
    },
    setCloexec(fd, on) {
      if (on) cloexec.add(fd);
      else cloexec.delete(fd);
    },
    getCloexec: (fd) => cloexec.has(fd),
    dgramSocket: unsupported('dgramSocket'),
    sendTo: unsupported('sendTo'),
    bindDgram: unsupported('bindDgram'),
    recvDatagram: unsupported('recvDatagram'),
    socketpair: unsupported('socketpair'),
    connectUnix: unsupported('connectUnix'),
    sendMsg: unsupported('sendMsg'),
    recvMsg: unsupported('recvMsg'),
    fstat: unsupported('fstat'),
    dup: unsupported('dup'),
    close: unsupported('close'),
    memfdSealed: unsupported('memfdSealed'),
    peerCred: unsupported('peerCred'),
    setNonblock: unsupported('setNonblock'),
    dup2: unsupported('dup2'),
    listenUnix: unsupported('listenUnix'),
  };
}

export const tcpListener: Partial<FdInfo> = { kind: 'socket', type: 'stream', family: 'inet', listening: true, address: '127.0.0.1', port: 8080 };
export const unixListener: Partial<FdInfo> = { kind: 'socket', type: 'stream', family: 'unix', listening: true, address: '/run/x.sock' };
