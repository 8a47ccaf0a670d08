/**
 * Process and polling helpers shared by the demo (bench/demo.ts) and the benchmark (bench/run.ts): the processes of a
 * service found through /proc by pid AND start time (pids are reused), their summed RSS, bounded waits, a free port
 * on 127.0.0.1, one GET, and building dist/ when the examples would run a stale build.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');


export interface ProcStat {
  ppid: number;
  /** Start time in clock ticks since boot: with the pid, identifies a process (pids are reused). */
  start: string;
  state: string;
}

export function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted after the last ")".
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: f[0]!, ppid: Number(f[1]), start: f[19]! };
}

export function rssKb(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Every process of the service: the pids given to {@link add} and, at each {@link scan}, their descendants. A
 * process that exited (or is a zombie) is no longer counted; one whose pid now has another start time is not ours.
 */
export class ProcessTree {
  /** pid -> start time, every process of the service ever seen. */
  readonly seen = new Map<number, string>();

  add(pid: number): void {
    if (this.seen.has(pid)) return;
    const st = readStat(pid);
    if (st && st.state !== 'Z' && st.state !== 'X') this.seen.set(pid, st.start);
  }

  /** True when `pid` (as we knew it) no longer runs: gone, a zombie, or the pid now names another process. */
  exited(pid: number): boolean {
    const st = readStat(pid);
    if (!st || st.state === 'Z' || st.state === 'X') return true;
    const start = this.seen.get(pid);
    return start !== undefined && start !== st.start;
  }

  /** Finds new descendants of the live processes; returns the live ones. */
  scan(): number[] {
    const stats = new Map<number, ProcStat>();
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const st = readStat(Number(name));
      if (st) stats.set(Number(name), st);
    }
    const isLive = (pid: number): boolean => {
      const st = stats.get(pid);
      return st !== undefined && st.state !== 'Z' && st.state !== 'X' && st.start === this.seen.get(pid);
    };
    for (let grew = true; grew; ) {
      grew = false;
      for (const [pid, st] of stats) {
        if (this.seen.has(pid) || pid === process.pid || st.state === 'Z' || !isLive(st.ppid)) continue;
        this.seen.set(pid, st.start);
        grew = true;
      }
    }
    return [...this.seen.keys()].filter(isLive);
  }

  /** Sends `signal` to every live process of the service, by pid (start time checked first). */
  signalAll(signal: NodeJS.Signals): number[] {
    const live = this.scan();
    for (const pid of live) {
      try {
        process.kill(pid, signal);
      } catch {
        /* exited meanwhile */
      }
    }
    return live;
  }
}

/** Wait until `fn` returns a value, polling every `everyMs`; rejects after `timeoutMs` naming `what`. */
export async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number, everyMs = 5): Promise<T> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The pid a PID file names (undefined when missing or not a pid): the library's own reader. */
export { readPidFile as readPid } from '../../src/pidfile.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export function get(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Newest modification time (ms) of any file under `dir`. */
export function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Compiles dist/ when the example would otherwise run a missing or stale build. */
export function ensureBuilt(log: (line: string) => void): void {
  const index = path.join(ROOT, 'dist/index.js');
  const built = existsSync(index) ? statSync(index).mtimeMs : 0;
  if (built !== 0 && built >= newestMtime(path.join(ROOT, 'src'))) return;
  log(`building dist/ (${built === 0 ? 'dist/index.js is missing' : 'dist/index.js is older than src/'}): tsc -p tsconfig.build.json`);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`tsc -p tsconfig.build.json failed (${r.error?.message ?? `status ${r.status}`})`);
}

