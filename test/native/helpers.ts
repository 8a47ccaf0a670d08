/** Real processes and sockets for process tests: services started by pid, a notify socket that records. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { native, type Received } from '../../src/native.js';
import { readPidFile } from '../../src/pidfile.js';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const HELLO = path.join(ROOT, 'examples/hello-http/server.mjs');

export function tempDir(prefix = 'sdh-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** True while `pid` runs; a zombie (exited, not yet reaped by a slow init) counts as gone. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Live children of `pid`, sorted (from every /proc/<pid>/stat's ppid field; zombies left out). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid && fields[0] !== 'Z') out.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return out.sort((a, b) => a - b);
}

/** The pid a PID file names (undefined when missing or not a pid): the library's own reader. */
export { readPidFile as readPid };

/** Every process a test started, so afterEach can end them by pid even when the test failed. */
export class Procs {
  readonly pids = new Set<number>();
  readonly children: ChildProcess[] = [];
  output = '';

  start(script: string, env: NodeJS.ProcessEnv, args: string[] = []): ChildProcess {
    const child = spawn(process.execPath, [script, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid) this.pids.add(child.pid);
    child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.children.push(child);
    return child;
  }

  track(pid: number): void {
    this.pids.add(pid);
  }

  async killAll(): Promise<void> {
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await waitFor('tracked processes to exit', () => [...this.pids].every((p) => !alive(p)), 5000).catch(() => {});
    this.pids.clear();
  }
}

/** How a process ended, and when (Date.now()). */
export interface Exit {
  code: number | null;
  signal: string | null;
  at: number;
}

/** A service's surroundings, made afresh before each test by {@link serviceWorld}. */
export interface ServiceWorld {
  /** Every process the test started; all killed after the test. */
  procs: Procs;
  /** A temp dir, removed after the test; the paths below are in it. */
  dir: string;
  /** The notify socket standing in for systemd's. */
  notify: NotifyRecorder;
  /** A free port on 127.0.0.1. */
  port: number;
  pidFile: string;
  /** A path for a control socket (SDH_CONTROL_SOCKET); nothing binds it unless a test passes it on. */
  control: string;
  /**
   * Starts examples/hello-http with this world's PORT, PIDFILE and NOTIFY_SOCKET, and `env`; resolves once the PID
   * file names its pid and READY=1 has come.
   */
  startHello(env?: NodeJS.ProcessEnv): Promise<{ pid: number; child: ChildProcess; exited: Promise<Exit> }>;
}

/**
 * Registers beforeEach and afterEach hooks giving every test of the file a fresh {@link ServiceWorld}, and returns it:
 * its fields are set before each test (read them in tests and hooks, not when the file loads). After each test,
 * `beforeKill` runs (to track processes not tracked yet), then every tracked process is killed, the notify socket
 * closed and the temp dir removed.
 */
export function serviceWorld({ pidFile = 'hello.pid', beforeKill }: { pidFile?: string; beforeKill?: (world: ServiceWorld) => void } = {}): ServiceWorld {
  let cleanup = (): void => {};
  const world = {
    async startHello(env: NodeJS.ProcessEnv = {}) {
      const child = world.procs.start(HELLO, { PORT: String(world.port), PIDFILE: world.pidFile, NOTIFY_SOCKET: world.notify.path, ...env });
      const exited = new Promise<Exit>((r) => child.once('exit', (code, signal) => r({ code, signal, at: Date.now() })));
      const pid = await waitFor('the PID file', () => readPidFile(world.pidFile));
      world.procs.track(pid);
      await waitFor('READY=1', () => world.notify.texts().some((t) => t.startsWith('READY=1')));
      return { pid, child, exited };
    },
  } as ServiceWorld;
  beforeEach(async () => {
    const tmp = tempDir();
    cleanup = tmp.cleanup;
    world.procs = new Procs();
    world.dir = tmp.dir;
    world.notify = new NotifyRecorder(path.join(tmp.dir, 'notify'));
    world.port = await freePort();
    world.pidFile = path.join(tmp.dir, pidFile);
    world.control = path.join(tmp.dir, 'control.sock');
  });
  afterEach(async () => {
    beforeKill?.(world);
    await world.procs.killAll();
    await world.notify.close();
    cleanup();
  });
  return world;
}

/**
 * A notify socket bound by the test (SO_PASSCRED), recording every datagram with its bytes, fds and sender; it also
 * stands in for journald's socket.
 */
export class NotifyRecorder {
  readonly messages: Array<{ text: string; data: Buffer; fds: number[]; pid?: number }> = [];
  readonly fd: number;
  /** A receive error that ended the loop (a test expecting messages then fails with it, instead of timing out). */
  error: unknown;
  #open = true;
  #loop: Promise<void>;
  #maxBytes: number;

  /** `maxBytes`: the longest datagram received whole (a longer one is cut). */
  constructor(
    readonly path: string,
    { maxBytes = 65536 }: { maxBytes?: number } = {},
  ) {
    this.#maxBytes = maxBytes;
    this.fd = native().bindDgram(path, true);
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    while (this.#open) {
      let r: Received | null;
      try {
        r = await native().recvDatagram(this.fd, this.#maxBytes, 300, 100);
      } catch (err) {
        this.error = err;
        return;
      }
      if (!r) continue;
      const text = r.data.toString();
      // As systemd does: a barrier is answered by closing the fd it carries, at once.
      if (text === 'BARRIER=1') {
        for (const fd of r.fds) native().close(fd);
        this.messages.push({ text, data: r.data, fds: [], pid: r.cred?.pid });
        continue;
      }
      this.messages.push({ text, data: r.data, fds: r.fds, pid: r.cred?.pid });
    }
  }

  texts(): string[] {
    if (this.error) throw this.error;
    return this.messages.map((m) => m.text);
  }

  async close(): Promise<void> {
    this.#open = false;
    await this.#loop;
    for (const m of this.messages) for (const fd of m.fds) native().close(fd);
    native().close(this.fd);
  }
}
