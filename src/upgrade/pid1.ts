/**
 * Containers without systemd: what an upgrade does when the process is PID 1, or the only child of a tiny init.
 *
 * An upgrade ends with the old process exiting. As PID 1 of a PID namespace (`docker run image node app.js`) that
 * exit ends the namespace and the kernel kills the new version with it, so the upgrade is refused (SDH_PID_ONE) and
 * the service keeps serving. Under a tiny init (`docker run --init` is tini; dumb-init, catatonit) the init exits
 * as soon as its one child exits, measured with tini 0.19.0 with and without `-s` and `-g` (docs/containers.md):
 * the same end. There the old process stays as a thin waiter instead: it adopts the versions orphaned by later
 * upgrades (PR_SET_CHILD_SUBREAPER), forwards signals, and exits with the serving version's status.
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { sdError, type SdHandoffError } from '../errors.js';
import type { NativeAddon } from '../native.js';

/** Inits that exit when their one child exits (their `comm`): tini (`docker run --init`), dumb-init, catatonit. */
export const EXITING_INITS = ['tini', 'tini-static', 'docker-init', 'dumb-init', 'catatonit'] as const;

/** How the fixes are named in every refusal. */
const FIX = 'run it under an init: `docker run --init` (tini), or `sd-handoff run -- node app.js` as the container command';

/** A log entry as the Upgrader writes it (priority, event, message, facts). */
type Log = (entry: { priority: number; event: string; message: string; [field: string]: unknown }) => void;

/** One process as /proc/PID/stat describes it. */
export interface ProcEntry {
  pid: number;
  ppid: number;
  state: string;
  /** Start time in clock ticks after boot: a later process has a larger one. */
  start: number;
}

/** Parses /proc/PID/stat (the command name may hold spaces and parentheses: fields follow the last ')'). */
export function parseStat(text: string): ProcEntry | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const pid = Number.parseInt(text, 10);
  const rest = text.slice(close + 2).split(' ');
  const ppid = Number(rest[1]);
  const start = Number(rest[19]);
  if (!Number.isInteger(pid) || !Number.isInteger(ppid) || !Number.isFinite(start)) return undefined;
  return { pid, ppid, state: rest[0] ?? '?', start };
}

/** Every process this process can see in /proc (the namespace's, in a container). */
export function listProcesses(): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const entry = parseStat(readFileSync(`/proc/${name}/stat`, 'utf8'));
      if (entry) out.push(entry);
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Pids of every descendant of `root` in `procs`. */
export function descendants(root: number, procs: ProcEntry[]): number[] {
  const found: number[] = [];
  let frontier = [root];
  while (frontier.length > 0) {
    const next = procs.filter((p) => frontier.includes(p.ppid) && p.pid !== root && !found.includes(p.pid)).map((p) => p.pid);
    found.push(...next);
    frontier = next;
  }
  return found;
}

/** Options of the inits that take a value (`tini -p SIGKILL`, `dumb-init -r 15:2`). */
const WITH_VALUE = new Set(['-p', '-e', '-r', '--rewrite']);

/**
 * True when the init sends every signal it forwards to its child's whole process group, which the versions of the
 * service share: `dumb-init` by default (not with `-c`/`--single-child` or `DUMB_INIT_SETSID=0`), `tini -g` or
 * `TINI_KILL_PROCESS_GROUP`, `catatonit -g`. Measured with Debian's tini 0.19.0, dumb-init 1.2.5, catatonit 0.1.7.
 * `argv` is the init's command line, `env` its environment (`KEY=value` strings).
 */
export function initSignalsGroup(init: string, argv: readonly string[], env: readonly string[]): boolean {
  const options: string[] = [];
  for (let i = 1; i < argv.length && argv[i]!.startsWith('-') && argv[i] !== '--'; i++) {
    options.push(argv[i]!);
    if (WITH_VALUE.has(argv[i]!)) i++;
  }
  const short = (letter: string): boolean => options.some((o) => /^-[a-z]+$/i.test(o) && o.includes(letter));
  if (init === 'dumb-init') return !short('c') && !options.includes('--single-child') && !env.includes('DUMB_INIT_SETSID=0');
  if (init === 'catatonit') return short('g');
  if (init.startsWith('tini') || init === 'docker-init') return short('g') || env.some((e) => e.startsWith('TINI_KILL_PROCESS_GROUP='));
  return false;
}

/** NUL-separated /proc/PID/{cmdline,environ} as a list (empty when unreadable). */
function procList(pid: number, what: 'cmdline' | 'environ'): string[] {
  try {
    return readFileSync(`/proc/${pid}/${what}`, 'utf8').split('\0').filter((a) => a !== '');
  } catch {
    return [];
  }
}

/** The `comm` of process `pid`, or undefined when it cannot be read. */
function comm(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** What {@link ContainerGuard} is given; the defaults are the real process. */
export interface ContainerGuardOptions {
  pid: number;
  ppid: number;
  env: NodeJS.ProcessEnv;
  addon: NativeAddon;
  log: Log;
  /** True in a process started by an upgrade: its parent is the previous version (or a waiter), never an init. */
  upgradeChild: boolean;
  /** The parent's command name (default: read from /proc). */
  parentComm?: string | undefined;
}

/**
 * The Upgrader's container policy: refuses upgrades as PID 1, and under an init that exits with its child keeps
 * the old process as the waiter. `SDH_WAITER=1` asks for the waiter under any parent that exits with its child
 * (`npm start`, `sh -c`), `SDH_WAITER=0` never.
 */
export class ContainerGuard {
  readonly #o: ContainerGuardOptions;
  /** The init this process's parent is, when the waiter is needed. */
  readonly init: string | undefined;
  #waiter: SuccessorWaiter | undefined;

  constructor(options: ContainerGuardOptions) {
    this.#o = options;
    const parent = options.parentComm ?? comm(options.ppid);
    const wanted = options.env.SDH_WAITER;
    const known = parent !== undefined && (EXITING_INITS as readonly string[]).includes(parent);
    this.init = options.pid === 1 || options.upgradeChild || wanted === '0' ? undefined : wanted === '1' || known ? parent ?? 'parent' : undefined;
    if (options.pid === 1) {
      options.log({ priority: 4, event: 'pid-one', message: `pid 1: upgrades will be refused (the new version would die with this process); ${FIX}` });
    }
  }

  /** The error an upgrade (or a takeover) gets here, logged; undefined when it may go on. */
  refusal(what: 'upgrade' | 'takeover'): SdHandoffError | undefined {
    const o = this.#o;
    let err: SdHandoffError | undefined;
    if (o.pid === 1) {
      err = sdError('SDH_PID_ONE', `${what} refused: this process is PID 1 of its PID namespace (pid=${o.pid}), and the kernel kills every process in the namespace when it exits, the new version included; ${FIX}`, { pid: o.pid });
    } else if (this.init !== undefined && what === 'takeover') {
      err = sdError('SDH_PID_ONE', `takeover refused: this process's parent is ${this.init} (ppid=${o.ppid}), an init that exits with its child and so ends the container, and a process taking over is not a child it can wait for; use \`sd-handoff upgrade\` (the control socket) instead`, { pid: o.pid, ppid: o.ppid });
    } else if (this.init !== undefined && (typeof o.addon.setChildSubreaper !== 'function' || typeof o.addon.waitPid !== 'function')) {
      err = sdError('SDH_PID_ONE', `${what} refused: the parent is ${this.init} (ppid=${o.ppid}), an init that exits with its child, and this build of the native addon cannot adopt the new version (no setChildSubreaper): rebuild it (npm rebuild sd-handoff) or use \`sd-handoff run\``, { pid: o.pid, ppid: o.ppid });
    }
    if (err) o.log({ priority: 3, event: 'upgrade-refused', message: err.message, code: err.code });
    return err;
  }

  /** At the handover, old side: under an exiting init, start adopting and forwarding signals to the new version. */
  handedOver(child: ChildProcess | undefined): void {
    if (this.init === undefined || !child?.pid || this.#waiter) return;
    const group = initSignalsGroup(this.init, procList(this.#o.ppid, 'cmdline'), procList(this.#o.ppid, 'environ'));
    this.#waiter = new SuccessorWaiter({ pid: this.#o.pid, addon: this.#o.addon, log: this.#o.log, init: this.init, group });
    this.#waiter.begin(child);
  }

  /** The status to exit with: at once 0, or as the waiter, once the serving version has exited, its status. */
  exitStatus(): Promise<number> {
    return this.#waiter ? this.#waiter.wait() : Promise.resolve(0);
  }
}

/** Signals the waiter forwards: stops go to every descendant (as systemd's KillMode=control-group), the rest to the serving one. */
const STOP_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
const OTHER_SIGNALS: NodeJS.Signals[] = ['SIGHUP', 'SIGQUIT', 'SIGUSR2'];
/** How often the waiter looks at an adopted version (waitpid WNOHANG: Node is not told of adopted children). */
const POLL_MS = 100;

/** What {@link SuccessorWaiter} is given. */
export interface WaiterOptions {
  pid: number;
  addon: NativeAddon;
  log: Log;
  /** The init's name, for the log. */
  init: string;
  /** The init signals the whole process group itself ({@link initSignalsGroup}): nothing to forward. */
  group: boolean;
}

/**
 * The old process kept alive under an init that exits with its child: PR_SET_CHILD_SUBREAPER, so each version
 * orphaned by a later upgrade is reparented here, then it follows the serving version from one to the next (a
 * version that exits with status 0 has handed over: its orphaned successor is followed) and exits with the status
 * of the last one.
 */
export class SuccessorWaiter {
  readonly #o: WaiterOptions;
  #current = 0;
  /** Children this process had at the handover: spawned by Node, so never waited for here (libuv would lose them). */
  #own = new Set<number>();
  #stopSignal: NodeJS.Signals | undefined;
  /** Pids a stop signal was forwarded to. */
  readonly #stopped = new Set<number>();
  #done!: (status: number) => void;
  readonly #status = new Promise<number>((resolve) => (this.#done = resolve));

  constructor(options: WaiterOptions) {
    this.#o = options;
  }

  /** At the handover: adopt orphans from now on, forward signals, and wait for `child`, the new version. */
  begin(child: ChildProcess): void {
    const o = this.#o;
    o.addon.setChildSubreaper!(true);
    this.#own = new Set(listProcesses().filter((p) => p.ppid === o.pid).map((p) => p.pid));
    this.#current = child.pid!;
    for (const sig of [...STOP_SIGNALS, ...OTHER_SIGNALS]) process.on(sig, () => this.#forward(sig));
    o.log({ priority: 5, event: 'waiter', message: `pid ${o.pid} stays as the waiter of pid ${child.pid}: its parent ${o.init} exits with it, which would end the container`, newPid: child.pid });
    child.once('exit', (code, signal) => this.#ended(child.pid!, code, signal ? (os.constants.signals[signal] ?? 0) : 0));
  }

  /** Resolves with the status to exit with. */
  wait(): Promise<number> {
    return this.#status;
  }

  #forward(sig: NodeJS.Signals): void {
    // The init signalled every version itself: a second copy could reach one that has just removed its handlers.
    if (this.#o.group) return;
    const stop = STOP_SIGNALS.includes(sig);
    // A stop goes once to each process: a second one may arrive after it removed its handlers, and kill it.
    const targets = stop ? descendants(this.#o.pid, listProcesses()).filter((p) => !this.#stopped.has(p)) : [this.#current];
    if (stop) {
      this.#stopSignal = sig;
      for (const pid of targets) this.#stopped.add(pid);
    }
    for (const pid of targets) {
      try {
        process.kill(pid, sig);
      } catch {
        /* gone */
      }
    }
  }

  #ended(pid: number, code: number | null, signal: number): void {
    const o = this.#o;
    if (code !== 0 || signal !== 0) {
      const status = signal ? 128 + signal : (code ?? 1);
      o.log({ priority: 4, event: 'waiter-exits', message: `pid ${pid} ended (${signal ? `signal ${signal}` : `status ${code}`}): waiter pid ${o.pid} exits with ${status}`, newPid: pid });
      this.#done(status);
      return;
    }
    const next = this.#adopted();
    if (next === undefined) {
      o.log({ priority: 6, event: 'waiter-exits', message: `pid ${pid} exited with status 0 and left no successor: waiter pid ${o.pid} exits with 0`, newPid: pid });
      this.#done(0);
      return;
    }
    this.#current = next;
    o.log({ priority: 6, event: 'waiter-follows', message: `pid ${pid} handed over and exited: waiter pid ${o.pid} now waits for pid ${next}`, oldPid: pid, newPid: next });
    // A stop that reached only the old version (it ignores stops while draining) still applies to a successor it
    // did not reach (started since).
    if (this.#stopSignal) this.#forward(this.#stopSignal);
    this.#poll(next);
  }

  /** The newest live child adopted since the handover; adopted zombies are reaped on the way. */
  #adopted(): number | undefined {
    const mine = listProcesses().filter((p) => p.ppid === this.#o.pid && !this.#own.has(p.pid));
    for (const z of mine.filter((p) => p.state === 'Z')) this.#reap(z.pid);
    const live = mine.filter((p) => p.state !== 'Z').sort((a, b) => b.start - a.start);
    return live[0]?.pid;
  }

  #reap(pid: number): { code: number | null; signal: number } | null {
    try {
      return this.#o.addon.waitPid!(pid);
    } catch {
      return { code: 1, signal: 0 }; // not ours after all (ECHILD): treat as gone
    }
  }

  #poll(pid: number): void {
    const timer = setInterval(() => {
      const r = this.#reap(pid);
      if (!r) return;
      clearInterval(timer);
      this.#ended(pid, r.code, r.signal);
    }, POLL_MS);
  }
}

/**
 * `sd-handoff run` as PID 1: every orphan in the namespace is reparented to it, and Node waits only for the
 * processes it spawned. Reaps the others (a program's double-forked helpers) once a second, so none stays a zombie.
 * Returns the stop function.
 */
export function reapOrphans(pid: number, addon: NativeAddon, own: () => number[]): () => void {
  if (typeof addon.waitPid !== 'function') return () => {};
  const timer = setInterval(() => {
    const mine = own();
    for (const p of listProcesses()) {
      if (p.ppid !== pid || p.state !== 'Z' || mine.includes(p.pid)) continue;
      try {
        addon.waitPid!(p.pid);
      } catch {
        /* reaped meanwhile */
      }
    }
  }, 1000);
  timer.unref();
  return () => clearInterval(timer);
}
