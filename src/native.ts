/**
 * Loads the N-API addon (`native/sd_handoff.cc`) and gives it one typed interface.
 *
 * The addon does only the system calls Node lacks (sendmsg/recvmsg with SCM_RIGHTS and SCM_CREDENTIALS, abstract
 * unix addresses, fstat/getsockopt/getsockname on an arbitrary fd, fcntl, memfd_create + seals, SO_PEERCRED).
 * Everything above that (parsing, framing, policy) is TypeScript. On failure the addon throws
 * {@link SdHandoffError} instances (it is handed the class once at load) carrying `errno`, `syscall` and the fd
 * or path; the errno name is computed here with `util.getSystemErrorName()` so the addon needs no newer glibc.
 *
 * On an OS other than Linux nothing is loaded: {@link nativeAvailable} is false and {@link native} throws
 * `SDH_UNSUPPORTED_PLATFORM`, so importing the package never fails. On Linux the addon comes from a prebuild shipped
 * in the package (prebuilds/linux-x64, linux-arm64; glibc) or from a build from source (docs/install.md).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { SdHandoffError, sdError } from './errors.js';

/** What the addon reports of a file descriptor (fstat and getsockopt): the `info` of each {@link ListenFd}. */
export interface FdInfo {
  /** The file descriptor described. */
  fd: number;
  /** File type from fstat: 'socket', 'file', 'dir', 'fifo', 'chr', 'blk', 'link' or 'unknown' (epoll/eventfd fds are 'unknown'). */
  kind: 'socket' | 'file' | 'dir' | 'fifo' | 'chr' | 'blk' | 'link' | 'unknown';
  /** Device number from fstat (`st_dev`): with `ino`, tells whether two fds are the same open socket. */
  dev: bigint;
  /** Inode number from fstat (`st_ino`). */
  ino: bigint;
  /** For sockets only (undefined otherwise). */
  type?: 'stream' | 'dgram' | 'seqpacket' | 'raw' | 'unknown';
  /** Socket address family (SO_DOMAIN), for sockets only. */
  family?: 'inet' | 'inet6' | 'unix' | 'other';
  /** Socket protocol number (SO_PROTOCOL: 6 TCP, 17 UDP, 0 for unix sockets), for sockets only. */
  protocol?: number;
  /** SO_ACCEPTCONN. */
  listening?: boolean;
  /** Local address: IP text for inet/inet6, socket path for unix (abstract names start with '@', '' if unnamed). */
  address?: string;
  /** Local port for inet/inet6. */
  port?: number;
}

/** Unix credentials of a peer (SO_PEERCRED) or of a datagram's sender (SCM_CREDENTIALS). */
export interface Credentials {
  /** Process id of the peer. */
  pid: number;
  /** Its user id. */
  uid: number;
  /** Its group id. */
  gid: number;
}

/** A message received with {@link NativeAddon.recvMsg} or {@link NativeAddon.recvDatagram}. */
export interface Received {
  /** The bytes read. For a stream socket, an empty buffer with no fds means end of file. */
  data: Buffer;
  /** Received fds, already CLOEXEC (MSG_CMSG_CLOEXEC). */
  fds: number[];
  /** Sender credentials, when the socket has SO_PASSCRED and the kernel attached them. */
  cred?: Credentials;
  /** True when the data or control part was truncated (MSG_TRUNC / MSG_CTRUNC). */
  truncated: boolean;
}

/**
 * The addon's exports. Every function throws {@link SdHandoffError} on a failed system call; the ones returning a
 * Promise reject instead (bad arguments included, with `SDH_INVALID_OPTION`). `timeoutMs` is an integer from 0 to
 * 2^31-1: there is no unbounded wait, so a thread-pool thread is never held longer than asked.
 */
export interface NativeAddon {
  /** Called once by the loader: the class the addon throws. */
  setErrorClass(ctor: typeof SdHandoffError): void;

  /**
   * Sends one datagram (SOCK_DGRAM) to the unix socket `path` ('@name' = abstract, exact address length),
   * with `fds` attached as SCM_RIGHTS (at most 253). Opens and closes its own CLOEXEC socket. Returns bytes sent.
   * `sndbuf`, if given, raises SO_SNDBUF first (journald entries can be large).
   */
  sendDatagram(path: string, data: Buffer, fds: number[], sndbuf?: number): number;

  /** Creates an unbound AF_UNIX SOCK_DGRAM socket (CLOEXEC) to send from with {@link sendTo}. */
  dgramSocket(sndbuf?: number): number;
  /** sendmsg on `sock` to `path` (as in sendDatagram). `dontwait` adds MSG_DONTWAIT (EAGAIN is then thrown). */
  sendTo(sock: number, path: string, data: Buffer, fds: number[], dontwait: boolean): number;

  /**
   * Creates an AF_UNIX SOCK_DGRAM socket bound to `path` ('@name' = abstract), CLOEXEC, with SO_PASSCRED when
   * `passcred`. A path socket is not unlinked first: an existing file gives EADDRINUSE.
   */
  bindDgram(path: string, passcred: boolean): number;
  /**
   * Waits up to `timeoutMs` (on the libuv thread pool, poll + recvmsg) for one datagram on `fd`.
   * Resolves null on timeout.
   */
  recvDatagram(fd: number, maxBytes: number, maxFds: number, timeoutMs: number): Promise<Received | null>;

  /** Creates a connected AF_UNIX SOCK_STREAM pair, both CLOEXEC. */
  socketpair(): [number, number];
  /** Connects a new AF_UNIX SOCK_STREAM socket (CLOEXEC, blocking) to `path` ('@name' = abstract). */
  connectUnix(path: string): number;
  /**
   * sendmsg on a connected stream socket: all of `data` (looping on partial writes, polling on EAGAIN up to
   * `timeoutMs`) with `fds` (at most 253) attached to the first byte (so `data` must not be empty when fds are
   * given). Runs on the thread pool. A rejection carries `bytesSent`: what already went out before the failure.
   */
  sendMsg(fd: number, data: Buffer, fds: number[], timeoutMs: number): Promise<number>;
  /**
   * recvmsg on a connected stream socket: waits up to `timeoutMs` for readability, then reads at most
   * `maxBytes` bytes and `maxFds` fds. Rejects with errno ETIMEDOUT (syscall "poll") on timeout.
   */
  recvMsg(fd: number, maxBytes: number, maxFds: number, timeoutMs: number): Promise<Received>;

  /** fstat + getsockopt(SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ACCEPTCONN) + getsockname. Throws EBADF for a closed fd. */
  describe(fd: number): FdInfo;
  /** fstat device and inode. */
  fstat(fd: number): { dev: bigint; ino: bigint; mode: number };
  getCloexec(fd: number): boolean;
  setCloexec(fd: number, on: boolean): void;
  /** F_DUPFD_CLOEXEC (lowest free fd >= `min`, default 3). */
  dup(fd: number, min?: number): number;
  close(fd: number): void;
  /** memfd_create(name, MFD_CLOEXEC|MFD_ALLOW_SEALING), writes `data`, seals SHRINK|GROW|WRITE|SEAL. Returns the fd. */
  memfdSealed(name: string, data: Buffer): number;
  /** SO_PEERCRED of a connected unix socket. */
  peerCred(fd: number): Credentials;
  /** Sets or clears O_NONBLOCK. */
  setNonblock(fd: number, on: boolean): void;
  /** dup2(oldfd, newfd) then clears FD_CLOEXEC on newfd unless `cloexec` (used to move stdout/stderr). */
  dup2(oldfd: number, newfd: number, cloexec?: boolean): void;
  /**
   * Creates a listening AF_UNIX SOCK_STREAM socket (CLOEXEC) at `path` ('@name' = abstract): socket, bind,
   * chmod to `mode` when >= 0 and the path is not abstract (before listen, so no client connects earlier), listen.
   * A path whose file exists but accepts no connection (a stale socket) is unlinked first; a live one gives
   * EADDRINUSE. Node binds unix paths itself, but then libuv unlinks the path when the server closes, which must not
   * happen to a socket handed over to a new process.
   */
  listenUnix(path: string, backlog: number, mode: number): number;
  /**
   * prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to this process instead of PID 1 (used by
   * the container waiter, src/upgrade/pid1.ts). Optional: an addon built before it lacks it.
   */
  setChildSubreaper?(on: boolean): void;
  /**
   * waitpid(pid, WNOHANG) for an adopted process (never one Node spawned: libuv would lose it): null while it runs,
   * else its exit code (null when killed) and signal number (0 when it exited).
   */
  waitPid?(pid: number): { code: number | null; signal: number } | null;
}

/** The C library of a Linux system: prebuilds are tagged with it, a glibc binary does not load on musl. @internal */
export type Libc = 'glibc' | 'musl';

/** Arches the package ships a glibc prebuild for (scripts/prebuild.mjs). @internal */
export const PREBUILT_ARCHES: readonly string[] = ['x64', 'arm64'];

/**
 * What the loader looks at, so a test can check the advice given on a platform it does not run on.
 * @internal
 */
export interface LoaderWorld {
  platform: string;
  arch: string;
  /** Linux only; undefined elsewhere. */
  libc: Libc | undefined;
  /** The package root: prebuilds/ and build/ are under it. */
  root: string;
  env: NodeJS.ProcessEnv;
  /** Names in a directory, [] when it does not exist. */
  readdir(dir: string): string[];
  /** Loads a .node file; throws when it cannot. */
  load(file: string): unknown;
}

/** One place the loader tries: where it comes from decides the advice when nothing loads. @internal */
export interface Candidate {
  file: string;
  kind: 'override' | 'prebuild' | 'build';
}

/** Directory of the package root (works from `src/` under tsx and from `dist/`). */
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The C library this process runs on: the program interpreter named in node's own ELF header (`ld-musl-*` or
 * `ld-linux-*`, within its first page), else musl when /etc/alpine-release exists (node-gyp-build's test).
 * @internal
 */
export function detectLibc(exe: string = process.execPath): Libc {
  try {
    const fd = fs.openSync(exe, 'r');
    const head = Buffer.alloc(4096);
    try {
      fs.readSync(fd, head, 0, head.length, 0);
    } finally {
      fs.closeSync(fd);
    }
    const text = head.toString('latin1');
    if (text.includes('/ld-musl-')) return 'musl';
    if (text.includes('/ld-linux')) return 'glibc';
  } catch {
    // An unreadable or static node: fall back to the distribution check.
  }
  return fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
}

/** The real process, for {@link loadNative}. @internal */
export function defaultWorld(): LoaderWorld {
  const require = createRequire(import.meta.url);
  return {
    platform: process.platform,
    arch: process.arch,
    libc: process.platform === 'linux' ? detectLibc() : undefined,
    root: packageRoot,
    env: process.env,
    readdir: (dir) => {
      try {
        return fs.readdirSync(dir);
      } catch {
        return [];
      }
    },
    load: (file) => require(file),
  };
}

/**
 * How well a prebuild file name (prebuildify's `<name>[.<tag>...].node`) suits `libc`: 2 tagged with it, 1 untagged,
 * -1 not at all (tagged with the other libc, or not a .node file: a glibc binary must never be tried on musl).
 */
function prebuildRank(name: string, libc: Libc | undefined): number {
  if (!name.endsWith('.node')) return -1;
  const tags = name.split('.').slice(1, -1);
  const tagged = tags.find((t) => t === 'glibc' || t === 'musl');
  if (tagged === undefined) return 1;
  return tagged === libc ? 2 : -1;
}

/**
 * Files tried, in order: `SD_HANDOFF_NATIVE` (a full path to a .node file) when set, then the matching prebuild
 * (`prebuilds/<platform>-<arch>/`, libc-tagged as node-gyp-build reads them), then a local build (build/Release,
 * build/Debug: `npm run build:native`, or the install script's build from source).
 * @internal
 */
export function candidates(world: LoaderWorld): Candidate[] {
  const list: Candidate[] = [];
  const override = world.env.SD_HANDOFF_NATIVE;
  if (override) list.push({ file: override, kind: 'override' });
  const dir = path.join(world.root, 'prebuilds', `${world.platform}-${world.arch}`);
  const prebuilds = world
    .readdir(dir)
    .map((name) => ({ name, rank: prebuildRank(name, world.libc) }))
    .filter((p) => p.rank > 0)
    .sort((a, b) => b.rank - a.rank);
  for (const p of prebuilds) list.push({ file: path.join(dir, p.name), kind: 'prebuild' });
  for (const type of ['Release', 'Debug']) list.push({ file: path.join(world.root, 'build', type, 'sd_handoff.node'), kind: 'build' });
  return list;
}

/** What to do when nothing loaded, for this platform (see docs/install.md). */
function advice(world: LoaderWorld, prebuildFailed: boolean): string {
  const rebuild = 'run `npm rebuild sd-handoff`';
  const target = `${world.platform}-${world.arch}-${world.libc ?? 'unknown'}`;
  if (world.libc !== 'glibc' || !PREBUILT_ARCHES.includes(world.arch)) {
    return `no prebuild for ${target}: install build-essential python3 (or build-base python3 on Alpine) and ${rebuild} to build it from source`;
  }
  if (prebuildFailed) {
    return `the prebuild for ${target} is there but did not load (it needs glibc >= 2.28): install build-essential python3 and ${rebuild} to build from source`;
  }
  return `reinstall sd-handoff, the prebuild for ${target} is missing from ${path.join(world.root, 'prebuilds')} (in a git checkout: \`npm run build:prebuilds\` or \`npm run build:native\`)`;
}

/**
 * Loads the addon from the first candidate that loads. Throws `SDH_UNSUPPORTED_PLATFORM` off Linux, and
 * `SDH_NATIVE_UNAVAILABLE` listing every path tried, with its error, and what to do.
 * @internal
 */
export function loadNative(world: LoaderWorld): { addon: NativeAddon; file: string } {
  if (world.platform !== 'linux') {
    throw sdError('SDH_UNSUPPORTED_PLATFORM', `sd-handoff's systemd features need Linux; this is ${world.platform}`);
  }
  const tried: string[] = [];
  const list = candidates(world);
  if (!list.some((c) => c.kind === 'prebuild')) {
    tried.push(`  ${path.join(world.root, 'prebuilds', `${world.platform}-${world.arch}`)}/: no prebuild for ${world.libc}`);
  }
  let prebuildFailed = false;
  for (const { file, kind } of list) {
    try {
      const addon = world.load(file) as NativeAddon;
      addon.setErrorClass(SdHandoffError);
      return { addon, file };
    } catch (err) {
      if (kind === 'prebuild') prebuildFailed = true;
      const label = kind === 'override' ? `SD_HANDOFF_NATIVE=${file}` : file;
      tried.push(`  ${label}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  // scripts/install.mjs leaves node-gyp's output there when its build from source failed.
  const log = world.readdir(path.join(world.root, 'build')).includes('sd-handoff-install.log')
    ? `\nthe build from source at install failed: see ${path.join(world.root, 'build', 'sd-handoff-install.log')}`
    : '';
  throw sdError(
    'SDH_NATIVE_UNAVAILABLE',
    `could not load the sd-handoff native addon; tried:\n${tried.join('\n')}\n${advice(world, prebuildFailed)}${log}`,
  );
}

let loaded: { addon: NativeAddon; file: string } | undefined;
let loadError: SdHandoffError | undefined;

function load(): NativeAddon {
  if (loaded) return loaded.addon;
  if (loadError) throw loadError;
  try {
    loaded = loadNative(defaultWorld());
    return loaded.addon;
  } catch (err) {
    loadError = err as SdHandoffError;
    throw err;
  }
}

/** True when the addon is (or can be) loaded: Linux with a matching prebuild or a local build. Never throws. */
export function nativeAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/** The loaded addon. Throws SDH_UNSUPPORTED_PLATFORM off Linux, SDH_NATIVE_UNAVAILABLE when it cannot load. */
export function native(): NativeAddon {
  return load();
}

/** The .node file the addon was loaded from, or undefined when it is not loaded (yet). @internal */
export function nativeFile(): string | undefined {
  return loaded?.file;
}
