/**
 * The native addon against real sockets, files, pipes and memfds: no mocks. Each test closes every fd it opened
 * (afterEach), and asserts what a caller would notice: bytes and fds arriving intact, credentials, exact abstract
 * addresses, typed errors carrying errno/syscall/fd/path. The addon is the prebuild the package ships
 * (test/build-setup.ts refreshes it); prebuild-arm64.test.ts runs these same cases on the arm64 one under qemu.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, nativeFile, type NativeAddon } from '../../src/native.js';
import { SdHandoffError } from '../../src/errors.js';

let addon: NativeAddon;
let dir: string;
const fds: number[] = [];
const cleanups: Array<() => void | Promise<void>> = [];

/** Registers an fd to be closed after the test. */
function own(fd: number): number {
  fds.push(fd);
  return fd;
}

/** Closes an owned fd now, and forgets it: closing the number again later could hit someone else's new fd. */
function closeOwned(fd: number): void {
  fds.splice(fds.indexOf(fd), 1);
  addon.close(fd);
}

function uniqueAbstract(tag: string): string {
  return `@sd-handoff-test-${tag}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Catches a synchronous throw and returns it (fails the test when nothing is thrown). */
function thrown(fn: () => unknown): SdHandoffError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SdHandoffError);
    return err as SdHandoffError;
  }
  throw new Error('expected a throw, got none');
}

async function rejected(p: Promise<unknown>): Promise<SdHandoffError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(SdHandoffError);
    return err as SdHandoffError;
  }
  throw new Error('expected a rejection, got none');
}

/** O_CLOEXEC as the kernel reports it in /proc/self/fdinfo (independent of the addon's getCloexec). */
function kernelCloexec(fd: number): boolean {
  const flags = /^flags:\s+([0-7]+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
  if (flags === undefined) throw new Error(`no flags in fdinfo of ${fd}`);
  return (parseInt(flags, 8) & 0o2000000) !== 0;
}

function listen(server: net.Server, ...args: unknown[]): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    (server.listen as (...a: unknown[]) => void)(...args, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The fd under a Node net.Server (its `_handle`) or dgram.Socket (its internal state, whose `_handle` is deprecated). */
function handleFd(obj: net.Server | dgram.Socket): number {
  const state = Object.getOwnPropertySymbols(obj).find((s) => s.description === 'state symbol');
  const handle = state
    ? (obj as unknown as Record<symbol, { handle?: { fd?: number } }>)[state]?.handle
    : (obj as unknown as { _handle?: { fd?: number } })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('no fd on the handle');
  return fd;
}

/** A fifo opened read-write (does not block on Linux). */
function openFifo(): number {
  const p = path.join(dir, `fifo-${randomBytes(3).toString('hex')}`);
  execFileSync('mkfifo', [p]);
  return own(fs.openSync(p, fs.constants.O_RDWR));
}

beforeAll(() => {
  addon = native();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdh-native-'));
  return () => fs.rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  // A test that closes an fd itself uses closeOwned, so every close here is of an fd still ours; EBADF would be a bug.
  for (const fd of fds.splice(0)) addon.close(fd);
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('the addon under test', () => {
  it('is the prebuild the package ships for this arch (SD_HANDOFF_NATIVE aside)', (ctx) => {
    if (process.env.SD_HANDOFF_NATIVE) ctx.skip();
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
    expect(nativeFile()).toBe(path.join(root, 'prebuilds', `linux-${process.arch}`, 'sd-handoff.glibc.node'));
  });
});

describe('datagrams with fds and credentials', () => {
  it('delivers exact bytes, a usable fd and the sender credentials to a path socket', async () => {
    const sockPath = path.join(dir, 'notify.sock');
    const rx = own(addon.bindDgram(sockPath, true));
    const file = path.join(dir, 'payload.txt');
    fs.writeFileSync(file, 'through the passed fd');
    const fileFd = own(fs.openSync(file, 'r'));
    const data = Buffer.from([0, 1, 2, 0xff, 0x0a, 0x41, 0]);

    expect(addon.sendDatagram(sockPath, data, [fileFd])).toBe(data.length);
    const got = await addon.recvDatagram(rx, 4096, 16, 2000);

    expect(got).not.toBeNull();
    got!.fds.forEach(own);
    expect(got!.data.equals(data)).toBe(true);
    expect(got!.truncated).toBe(false);
    expect(got!.fds).toHaveLength(1);
    const passed = got!.fds[0]!;
    expect(passed).not.toBe(fileFd);
    expect(kernelCloexec(passed)).toBe(true);
    expect(addon.describe(passed).ino).toBe(addon.describe(fileFd).ino);
    const buf = Buffer.alloc(64);
    const n = fs.readSync(passed, buf, 0, buf.length, 0);
    expect(buf.subarray(0, n).toString()).toBe('through the passed fd');
    expect(got!.cred).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });

  it('delivers to an abstract socket, and a pipe end passed along works', async () => {
    const name = uniqueAbstract('abs');
    const rx = own(addon.bindDgram(name, true));
    const fifo = openFifo();

    addon.sendDatagram(name, Buffer.from('READY=1\n'), [fifo]);
    const got = await addon.recvDatagram(rx, 4096, 16, 2000);

    got!.fds.forEach(own);
    expect(got!.data.toString()).toBe('READY=1\n');
    expect(got!.cred?.pid).toBe(process.pid);
    const passed = got!.fds[0]!;
    expect(addon.describe(passed).kind).toBe('fifo');
    fs.writeSync(passed, 'via the copy');
    const buf = Buffer.alloc(32);
    const n = fs.readSync(fifo, buf, 0, buf.length, null);
    expect(buf.subarray(0, n).toString()).toBe('via the copy');
  });

  it('has no credentials without passcred, and reports truncation', async () => {
    const name = uniqueAbstract('trunc');
    const rx = own(addon.bindDgram(name, false));
    addon.sendDatagram(name, Buffer.from('12345'), []);
    const got = await addon.recvDatagram(rx, 3, 0, 2000);
    expect(got!.data.toString()).toBe('123');
    expect(got!.truncated).toBe(true);
    expect(got!.cred).toBeUndefined();
  });

  it('sends from its own socket with dgramSocket + sendTo', async () => {
    const name = uniqueAbstract('sendto');
    const rx = own(addon.bindDgram(name, true));
    const tx = own(addon.dgramSocket(1 << 20));
    expect(addon.sendTo(tx, name, Buffer.from('one'), [], false)).toBe(3);
    expect(addon.sendTo(tx, name, Buffer.from('two'), [], true)).toBe(3);
    expect((await addon.recvDatagram(rx, 100, 0, 2000))!.data.toString()).toBe('one');
    expect((await addon.recvDatagram(rx, 100, 0, 2000))!.data.toString()).toBe('two');
  });

  it('uses the exact abstract address length', async () => {
    const base = uniqueAbstract('len');
    const short = own(addon.bindDgram(base, false));
    // '@x' and '@xd' are distinct names, and so is '@x\0': a padded address would make it land on '@x'.
    const longer = own(addon.bindDgram(`${base}d`, false));
    expect(addon.describe(short).address).toBe(base);
    expect(addon.describe(longer).address).toBe(`${base}d`);
    // The kernel's own view: no trailing zeros (shown as '@') after the name.
    const table = fs.readFileSync('/proc/net/unix', 'utf8').split('\n');
    expect(table.some((l) => l.endsWith(` ${base}`))).toBe(true);
    expect(table.some((l) => l.includes(` ${base}@`))).toBe(false);

    const err = thrown(() => addon.sendDatagram(`${base}\0`, Buffer.from('padded'), []));
    expect(err.code).toBe('ECONNREFUSED');
    addon.sendDatagram(`${base}d`, Buffer.from('to d'), []);
    addon.sendDatagram(base, Buffer.from('to base'), []);
    expect((await addon.recvDatagram(short, 100, 0, 2000))!.data.toString()).toBe('to base');
    expect((await addon.recvDatagram(longer, 100, 0, 2000))!.data.toString()).toBe('to d');
    expect(await addon.recvDatagram(short, 100, 0, 50)).toBeNull();
  });

  it('accepts 253 fds in one datagram and refuses 254 with SDH_TOO_MANY_FDS', async () => {
    const name = uniqueAbstract('many');
    const rx = own(addon.bindDgram(name, false));
    const fifo = openFifo();

    addon.sendDatagram(name, Buffer.from('x'), new Array<number>(253).fill(fifo));
    // maxFds above the kernel's 253 is accepted (it means "all").
    const got = await addon.recvDatagram(rx, 10, 1000, 2000);
    got!.fds.forEach(own);
    expect(got!.fds).toHaveLength(253);
    expect(new Set(got!.fds).size).toBe(253);
    expect(got!.truncated).toBe(false);
    expect(addon.describe(got!.fds[252]!).ino).toBe(addon.describe(fifo).ino);

    const err = thrown(() => addon.sendDatagram(name, Buffer.from('x'), new Array<number>(254).fill(fifo)));
    expect(err.code).toBe('SDH_TOO_MANY_FDS');
    expect(err.message).toContain('254');
    expect(await addon.recvDatagram(rx, 10, 253, 50)).toBeNull();
  });

  it('resolves null when no datagram arrives in time, without waiting much longer', async () => {
    const rx = own(addon.bindDgram(uniqueAbstract('timeout'), false));
    const t0 = performance.now();
    expect(await addon.recvDatagram(rx, 100, 0, 100)).toBeNull();
    const elapsed = performance.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(90);
    expect(elapsed).toBeLessThan(1000);
  });
});

describe('errors', () => {
  it('ENOENT for a path nobody bound, with errno, syscall and path', () => {
    const missing = path.join(dir, 'nobody-here.sock');
    const err = thrown(() => addon.sendDatagram(missing, Buffer.from('x'), []));
    expect(err.code).toBe('ENOENT');
    expect(err.errno).toBe(2);
    expect(err.syscall).toBe('sendmsg');
    expect(err.path).toBe(missing);
    expect(err.message).toContain(missing);
  });

  it('ENAMETOOLONG for addresses that do not fit sun_path; the longest abstract name fits', () => {
    const long = `/tmp/${'x'.repeat(103)}`; // 108 bytes: no room for the NUL
    const err = thrown(() => addon.sendDatagram(long, Buffer.from('x'), []));
    expect(err.code).toBe('ENAMETOOLONG');
    expect(err.path).toBe(long);
    const maxAbstract = `@${randomBytes(4).toString('hex')}${'y'.repeat(99)}`; // 107-byte name
    own(addon.bindDgram(maxAbstract, false));
    expect(thrown(() => addon.bindDgram(`${maxAbstract}z`, false)).code).toBe('ENAMETOOLONG');
  });

  it('EADDRINUSE when the path exists (bindDgram does not unlink)', () => {
    const p = path.join(dir, 'taken.sock');
    own(addon.bindDgram(p, false));
    const err = thrown(() => addon.bindDgram(p, false));
    expect(err.code).toBe('EADDRINUSE');
    expect(err.syscall).toBe('bind');
    expect(err.path).toBe(p);
  });

  it('SDH_INVALID_OPTION names the function and argument; async calls reject instead of throwing', async () => {
    const err = thrown(() => addon.describe(-1));
    expect(err.code).toBe('SDH_INVALID_OPTION');
    expect(err.message).toContain('describe: fd');
    expect(thrown(() => addon.sendDatagram('@x', 'text' as unknown as Buffer, [])).message).toContain('data must be a Buffer');
    expect(thrown(() => addon.sendDatagram('', Buffer.alloc(1), [])).message).toContain('path');
    expect(thrown(() => addon.sendDatagram('@x', Buffer.alloc(1), [1.5])).message).toContain('fds[0]');
    const p = addon.recvMsg(0, 10, 0, -5);
    const rej = await rejected(p);
    expect(rej.code).toBe('SDH_INVALID_OPTION');
    expect(rej.message).toContain('timeoutMs');
  });
});

describe('describe()', () => {
  it('a TCP listener on 127.0.0.1', async () => {
    const server = net.createServer();
    await listen(server, 0, '127.0.0.1');
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const info = addon.describe(handleFd(server));
    expect(info).toMatchObject({
      kind: 'socket',
      type: 'stream',
      family: 'inet',
      protocol: 6,
      listening: true,
      address: '127.0.0.1',
      port: (server.address() as net.AddressInfo).port,
    });
    expect(typeof info.dev).toBe('bigint');
    expect(typeof info.ino).toBe('bigint');
  });

  it('a TCP6 listener on ::1', async (ctx) => {
    const server = net.createServer();
    try {
      await listen(server, 0, '::1');
    } catch {
      ctx.skip(); // no IPv6 loopback on this host
    }
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    expect(addon.describe(handleFd(server))).toMatchObject({
      type: 'stream',
      family: 'inet6',
      listening: true,
      address: '::1',
      port: (server.address() as net.AddressInfo).port,
    });
  });

  it('a unix path listener, and a connected unix socket that is not listening', async () => {
    const p = path.join(dir, 'http.sock');
    const server = net.createServer();
    await listen(server, p);
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    expect(addon.describe(handleFd(server))).toMatchObject({
      kind: 'socket',
      type: 'stream',
      family: 'unix',
      protocol: 0,
      listening: true,
      address: p,
    });
    const [a] = addon.socketpair().map(own);
    expect(addon.describe(a!)).toMatchObject({ family: 'unix', type: 'stream', listening: false, address: '' });
  });

  it('an abstract unix datagram socket', () => {
    const name = uniqueAbstract('desc');
    const fd = own(addon.bindDgram(name, false));
    expect(addon.describe(fd)).toMatchObject({ kind: 'socket', type: 'dgram', family: 'unix', listening: false, address: name });
  });

  it('a UDP socket', async () => {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => sock.close(() => r())));
    expect(addon.describe(handleFd(sock))).toMatchObject({
      kind: 'socket',
      type: 'dgram',
      family: 'inet',
      protocol: 17,
      listening: false,
      address: '127.0.0.1',
      port: sock.address().port,
    });
  });

  it('a regular file, a directory and a fifo have no socket fields', () => {
    const file = path.join(dir, 'plain');
    fs.writeFileSync(file, 'x');
    const fd = own(fs.openSync(file, 'r'));
    const info = addon.describe(fd);
    expect(info.kind).toBe('file');
    expect(info.ino).toBe(BigInt(fs.statSync(file).ino));
    expect(info.dev).toBe(BigInt(fs.statSync(file).dev));
    expect(info.type).toBeUndefined();
    expect(info.family).toBeUndefined();
    expect(addon.describe(own(fs.openSync(dir, 'r'))).kind).toBe('dir');
    expect(addon.describe(openFifo()).kind).toBe('fifo');
    expect(addon.describe(own(fs.openSync('/dev/null', 'r'))).kind).toBe('chr');
    expect(addon.fstat(fd)).toEqual({ dev: info.dev, ino: info.ino, mode: fs.statSync(file).mode });
  });

  it("Node's own epoll fd is 'unknown', not a socket", () => {
    const epoll = fs
      .readdirSync('/proc/self/fd')
      .map(Number)
      .find((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventpoll]';
        } catch {
          return false;
        }
      });
    expect(epoll).toBeDefined();
    const info = addon.describe(epoll!);
    expect(info.kind).toBe('unknown');
    expect(info.type).toBeUndefined();
  });

  it('EBADF with the fd for a closed fd', () => {
    const fd = fs.openSync('/dev/null', 'r');
    fs.closeSync(fd);
    const err = thrown(() => addon.describe(fd));
    expect(err.code).toBe('EBADF');
    expect(err.errno).toBe(9);
    expect(err.syscall).toBe('fstat');
    expect(err.fd).toBe(fd);
    expect(thrown(() => addon.close(fd)).fd).toBe(fd);
  });
});

describe('fd flags, dup and memfd', () => {
  it('getCloexec/setCloexec agree with the kernel', () => {
    const fd = own(fs.openSync('/dev/null', 'r'));
    expect(addon.getCloexec(fd)).toBe(true); // Node opens with O_CLOEXEC
    addon.setCloexec(fd, false);
    expect(addon.getCloexec(fd)).toBe(false);
    expect(kernelCloexec(fd)).toBe(false);
    addon.setCloexec(fd, true);
    expect(kernelCloexec(fd)).toBe(true);
  });

  it('dup returns a CLOEXEC fd >= 3 (or >= min) on the same file', () => {
    const fd = own(fs.openSync('/dev/null', 'r'));
    addon.setCloexec(fd, false);
    const d = own(addon.dup(fd));
    expect(d).toBeGreaterThanOrEqual(3);
    expect(d).not.toBe(fd);
    expect(kernelCloexec(d)).toBe(true);
    expect(addon.describe(d).ino).toBe(addon.describe(fd).ino);
    expect(own(addon.dup(fd, 200))).toBeGreaterThanOrEqual(200);
  });

  it('dup2 puts a copy at the given number, CLOEXEC cleared unless asked', () => {
    const fd = own(fs.openSync('/dev/null', 'r'));
    const target = own(addon.dup(fd, 700)); // a number surely free, reserved by us
    const other = own(fs.openSync(path.join(dir, '.'), 'r'));
    addon.dup2(other, target);
    expect(addon.describe(target).ino).toBe(addon.describe(other).ino);
    expect(kernelCloexec(target)).toBe(false);
    addon.dup2(fd, target, true);
    expect(addon.describe(target).ino).toBe(addon.describe(fd).ino);
    expect(kernelCloexec(target)).toBe(true);
    addon.dup2(target, target); // same number: only the flag changes
    expect(kernelCloexec(target)).toBe(false);
    const closed = fs.openSync('/dev/null', 'r');
    fs.closeSync(closed);
    const err = thrown(() => addon.dup2(closed, target));
    expect(err.code).toBe('EBADF');
    expect(err.fd).toBe(closed);
  });

  it('setNonblock toggles O_NONBLOCK', () => {
    const fd = openFifo();
    addon.setNonblock(fd, true);
    expect(() => fs.readSync(fd, Buffer.alloc(1), 0, 1, null)).toThrow(/EAGAIN/);
    addon.setNonblock(fd, false);
    const flags = /^flags:\s+([0-7]+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
    expect(parseInt(flags, 8) & fs.constants.O_NONBLOCK).toBe(0);
  });

  it('memfdSealed holds the data, is CLOEXEC and refuses writes', () => {
    const data = randomBytes(100_000);
    const fd = own(addon.memfdSealed('sdh-test', data));
    expect(kernelCloexec(fd)).toBe(true);
    expect(addon.describe(fd).kind).toBe('file');
    expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toContain('memfd:sdh-test');
    expect(fs.readFileSync(`/proc/self/fd/${fd}`).equals(data)).toBe(true);
    expect(() => fs.writeSync(fd, 'more')).toThrow(expect.objectContaining({ code: 'EPERM' }));
    expect(() => fs.ftruncateSync(fd, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    // Re-opening through /proc gives a new open file description; the write seal still holds.
    expect(() => fs.writeFileSync(`/proc/self/fd/${fd}`, 'x')).toThrow(expect.objectContaining({ code: 'EPERM' }));
  });

  it('memfdSealed of an empty buffer works', () => {
    const fd = own(addon.memfdSealed('empty', Buffer.alloc(0)));
    expect(fs.readFileSync(`/proc/self/fd/${fd}`).length).toBe(0);
  });
});

describe('stream sockets: sendMsg/recvMsg', () => {
  it('passes data and fds over a socketpair', async () => {
    const [a, b] = addon.socketpair().map(own) as [number, number];
    expect(kernelCloexec(a)).toBe(true);
    expect(kernelCloexec(b)).toBe(true);
    const fifo = openFifo();
    const memfd = own(addon.memfdSealed('state', Buffer.from('{"n":1}')));

    expect(await addon.sendMsg(a, Buffer.from('hello'), [fifo, memfd], 2000)).toBe(5);
    const got = await addon.recvMsg(b, 100, 10, 2000);
    got.fds.forEach(own);
    expect(got.data.toString()).toBe('hello');
    expect(got.fds).toHaveLength(2);
    expect(addon.describe(got.fds[0]!).ino).toBe(addon.describe(fifo).ino);
    expect(fs.readFileSync(`/proc/self/fd/${got.fds[1]!}`, 'utf8')).toBe('{"n":1}');
    expect(got.fds.every(kernelCloexec)).toBe(true);
  });

  it('moves 1 MiB complete, sendMsg looping over partial writes', async () => {
    const [a, b] = addon.socketpair().map(own) as [number, number];
    const data = randomBytes(1 << 20);
    const sending = addon.sendMsg(a, data, [], 10_000);
    const parts: Buffer[] = [];
    let total = 0;
    while (total < data.length) {
      const r = await addon.recvMsg(b, 65536, 0, 10_000);
      expect(r.data.length).toBeGreaterThan(0);
      parts.push(r.data);
      total += r.data.length;
    }
    expect(await sending).toBe(data.length);
    expect(parts.length).toBeGreaterThan(1); // it really came in pieces
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  });

  it('sendMsg gives up after its timeout when nobody reads, saying how much went out', async () => {
    const [a] = addon.socketpair().map(own) as [number, number];
    const t0 = performance.now();
    const err = await rejected(addon.sendMsg(a, Buffer.alloc(64 << 20), [], 150));
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(err.code).toBe('ETIMEDOUT');
    expect(err.syscall).toBe('poll');
    expect(err.fd).toBe(a);
    const sent = (err as unknown as { bytesSent: number }).bytesSent;
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(64 << 20);
  });

  it('recvMsg rejects with ETIMEDOUT (syscall poll) when nothing arrives', async () => {
    const [, b] = addon.socketpair().map(own) as [number, number];
    const t0 = performance.now();
    const err = await rejected(addon.recvMsg(b, 100, 0, 100));
    const elapsed = performance.now() - t0;
    expect(err.code).toBe('ETIMEDOUT');
    expect(err.errno).toBe(110);
    expect(err.syscall).toBe('poll');
    expect(err.fd).toBe(b);
    expect(elapsed).toBeGreaterThanOrEqual(90);
    expect(elapsed).toBeLessThan(1000);
  });

  it('recvMsg reports end of file as empty data, and EBADF on a closed fd', async () => {
    const [a, b] = addon.socketpair().map(own) as [number, number];
    closeOwned(a);
    const eof = await addon.recvMsg(b, 100, 4, 1000);
    expect(eof.data.length).toBe(0);
    expect(eof.fds).toEqual([]);
    closeOwned(b);
    const err = await rejected(addon.recvMsg(b, 100, 0, 1000));
    expect(err.code).toBe('EBADF');
    expect(err.fd).toBe(b);
  });

  it('peerCred of a socketpair is this process', () => {
    const [a] = addon.socketpair().map(own) as [number, number];
    expect(addon.peerCred(a)).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });

  it('connectUnix reaches a Node server on a path, both ways', async () => {
    const p = path.join(dir, 'ctl.sock');
    const received: Buffer[] = [];
    let gotData!: () => void;
    const dataArrived = new Promise<void>((resolve) => (gotData = resolve));
    const server = net.createServer((conn) => {
      conn.write('welcome');
      conn.on('data', (d) => {
        received.push(d);
        gotData();
      });
    });
    await listen(server, p);
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const fd = own(addon.connectUnix(p));
    expect(kernelCloexec(fd)).toBe(true);
    expect(addon.peerCred(fd).pid).toBe(process.pid);
    expect(addon.describe(fd)).toMatchObject({ family: 'unix', type: 'stream', listening: false });
    expect((await addon.recvMsg(fd, 100, 0, 2000)).data.toString()).toBe('welcome');
    await addon.sendMsg(fd, Buffer.from('status'), [], 2000);
    await dataArrived;
    expect(Buffer.concat(received).toString()).toBe('status');
  });

  it('connectUnix to nothing fails with the path', () => {
    const p = path.join(dir, 'absent.sock');
    const err = thrown(() => addon.connectUnix(p));
    expect(err.code).toBe('ENOENT');
    expect(err.syscall).toBe('connect');
    expect(err.path).toBe(p);
    expect(thrown(() => addon.connectUnix(uniqueAbstract('none'))).code).toBe('ECONNREFUSED');
  });
});

describe('listenUnix', () => {
  it('listens at a path with the mode set, and the path outlives the Node server that served it', async () => {
    const p = path.join(dir, 'control.sock');
    const fd = addon.listenUnix(p, 8, 0o600);
    expect(kernelCloexec(fd)).toBe(true);
    expect(fs.statSync(p).mode & 0o777).toBe(0o600);
    expect(addon.describe(fd)).toMatchObject({ kind: 'socket', type: 'stream', family: 'unix', listening: true, address: p });
    // Node takes the fd over (and will close it): serve one connection through it.
    const server = net.createServer((conn) => conn.end('served'));
    await listen(server, { fd });
    const client = own(addon.connectUnix(p));
    expect((await addon.recvMsg(client, 100, 0, 2000)).data.toString()).toBe('served');
    closeOwned(client); // the server's close waits for its connection to end
    await new Promise<void>((r) => server.close(() => r()));
    expect(fs.statSync(p).isSocket()).toBe(true); // libuv did not unlink it: a successor could still hold it
  });

  it('replaces a stale socket file, refuses a live one and never removes a regular file', () => {
    const p = path.join(dir, 'stale.sock');
    closeOwned(own(addon.listenUnix(p, 8, -1))); // leaves the socket file behind, nobody listening
    const fd = own(addon.listenUnix(p, 8, -1));
    expect(addon.describe(fd).listening).toBe(true);

    const live = thrown(() => addon.listenUnix(p, 8, -1));
    expect(live.code).toBe('EADDRINUSE');
    expect(live.path).toBe(p);
    expect(live.syscall).toBe('bind');
    expect(own(addon.connectUnix(p))).toBeGreaterThanOrEqual(0); // the live one still answers
    closeOwned(fd);

    const file = path.join(dir, 'not-a-socket');
    fs.writeFileSync(file, 'keep me');
    expect(thrown(() => addon.listenUnix(file, 8, -1)).code).toBe('EADDRINUSE');
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
  });

  it('listens at an abstract name', async () => {
    const name = uniqueAbstract('listen');
    const fd = own(addon.listenUnix(name, 8, 0o600));
    expect(addon.describe(fd)).toMatchObject({ type: 'stream', listening: true, address: name });
    const client = own(addon.connectUnix(name));
    expect(addon.peerCred(client).pid).toBe(process.pid);
  });
});
