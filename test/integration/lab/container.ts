/**
 * A Debian container with systemd as PID 1, booted by systemd-nspawn from a cached rootfs, and the handle tests
 * drive it with.
 *
 * Boot: `systemd-nspawn -b --register=no --keep-unit --console=pipe --private-network --volatile=overlay` with the
 * host's node (or SDH_LAB_NODE's, see config.ts) bound read-only at /usr/local/bin/node and the repository read-only
 * at /project. There is no systemd on the host, hence `--register=no --keep-unit`; nspawn is started from a cgroup of its own (see cgroup.ts) by a
 * small sh wrapper that writes its pid into the cgroup and execs nspawn. `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`
 * gives the container a cgroup2 hierarchy: systemd >= 256 (trixie) refuses to boot on cgroup v1, and 247/252
 * boot on it as well. `--volatile=overlay` puts a tmpfs overlay over the cached rootfs, so containers never write
 * to the cache, and costs nothing at boot (`--ephemeral` copies the whole tree on ext4).
 *
 * Commands: `nsenter -t <PID 1> -a env -i PATH=... cmd`, so nothing of the host's environment leaks in. Processes
 * started this way belong to no unit (use `systemd-run` or unit files for that) and are killed with the container.
 */
import { spawn } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';

import { tool } from './availability.js';
import { cgroupName, cgroupPids, createCgroup, killCgroup, removeCgroup, removeNspawnLeftovers } from './cgroup.js';
import { CONTAINER_PATH, type LabNode, PROJECT_ROOT, type Suite, labNode, scaled } from './config.js';
import { forgetContainer, trackContainer } from './registry.js';
import { type Rootfs, ensureRootfs } from './rootfs.js';
import { CommandError, type ExecResult, type Running, sleep, start, waitFor } from './run.js';

export type { ExecResult, Running } from './run.js';

/** What identifies a running container; serialisable, so global setup can hand it to test files. */
export interface ContainerInfo {
  suite: Suite;
  /** nspawn machine name, also the name of its cgroup: `sdh-lab-<owner pid>-<suite>-<n>`. */
  machine: string;
  nspawnPid: number;
  /** Host pid of the container's PID 1 (systemd). */
  pid1: number;
  /** systemd major, e.g. 252. */
  systemdVersion: number;
  /** First line of `systemctl --version`, e.g. `systemd 252 (252.39-1~deb12u2)`. */
  systemdVersionString: string;
  root: string;
  /** From spawning nspawn to `systemctl is-system-running --wait` answering. */
  bootMs: number;
  /** `running` or `degraded`. */
  state: string;
  /** Version of the node at /usr/local/bin/node when SDH_LAB_NODE chose it (unset: the node running the tests). */
  nodeVersion?: string;
  /** Units that had failed when boot finished (they make the state `degraded`). */
  failedUnits: string[];
}

export interface ExecOptions {
  /** Written to the command's stdin. */
  input?: string | Buffer;
  /** Extra environment inside the container (PATH is always set). */
  env?: Record<string, string>;
  /** Working directory inside the container. */
  cwd?: string;
  /** Default 60 s; the command is SIGKILLed past it. Multiplied by SDH_TIME_FACTOR (config.ts), as every lab deadline is. */
  timeoutMs?: number;
  /** Throw a CommandError unless the command exits 0 (default false: look at `code`). */
  check?: boolean;
}

export interface JournalOptions {
  /** Passed to `journalctl --since`, e.g. `-10s` or `2025-01-01 12:00:00`. */
  since?: string;
  /** Only entries after this `__CURSOR`. */
  afterCursor?: string;
  /** Last N entries. */
  lines?: number;
  /** More journalctl arguments, e.g. `['-p', 'err']`. */
  args?: string[];
  /** Run `journalctl --sync` first so everything logged so far is visible (default true). */
  sync?: boolean;
}

/** One journal entry as `journalctl -o json` prints it: strings, or byte arrays for binary values. */
export type JournalEntry = Record<string, string | number[] | null | (string | number[])[]> & {
  MESSAGE?: string;
  __CURSOR?: string;
};

function quote(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Direct children of a host process (nsenter forks once to enter the pid namespace; its child runs the command). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export class Container implements ContainerInfo {
  readonly suite: Suite;
  readonly machine: string;
  readonly nspawnPid: number;
  readonly pid1: number;
  readonly systemdVersion: number;
  readonly systemdVersionString: string;
  readonly root: string;
  readonly bootMs: number;
  readonly state: string;
  readonly failedUnits: string[];
  readonly nodeVersion: string | undefined;
  #owner: BootedProcess | undefined;

  /** A handle on a running container; `owner` is set only in the process that booted it (the one that may stop it). */
  constructor(info: ContainerInfo, owner?: BootedProcess) {
    this.suite = info.suite;
    this.machine = info.machine;
    this.nspawnPid = info.nspawnPid;
    this.pid1 = info.pid1;
    this.systemdVersion = info.systemdVersion;
    this.systemdVersionString = info.systemdVersionString;
    this.root = info.root;
    this.bootMs = info.bootMs;
    this.state = info.state;
    this.failedUnits = info.failedUnits;
    this.nodeVersion = info.nodeVersion;
    this.#owner = owner;
  }

  info(): ContainerInfo {
    const { suite, machine, nspawnPid, pid1, systemdVersion, systemdVersionString, root, bootMs, state, failedUnits, nodeVersion } = this;
    return { suite, machine, nspawnPid, pid1, systemdVersion, systemdVersionString, root, bootMs, state, failedUnits, ...(nodeVersion ? { nodeVersion } : {}) };
  }

  /**
   * `suite (systemd N)`: for test names, so every result says which systemd it ran on; `suite (systemd N, node V)`
   * when SDH_LAB_NODE chose the node, so a run under another Node says which one.
   */
  get label(): string {
    return `${this.suite} (systemd ${this.systemdVersion}${this.nodeVersion ? `, node ${this.nodeVersion}` : ''})`;
  }

  #argv(cmd: readonly string[] | string, opts: ExecOptions): string[] {
    const argv = typeof cmd === 'string' ? ['/bin/sh', '-c', cmd] : [...cmd];
    if (argv.length === 0) throw new Error('exec: empty command');
    const env = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const cwd = opts.cwd ? ['-C', opts.cwd] : [];
    return [tool('nsenter'), '-t', String(this.pid1), '-a', '--', 'env', '-i', ...cwd, `PATH=${CONTAINER_PATH}`, ...env, ...argv];
  }

  /**
   * Starts a command in the container and returns at once: for clients that run while a test does something else.
   * `kill()` signals the command itself (nsenter would not pass the signal on).
   */
  spawn(cmd: readonly string[] | string, opts: Omit<ExecOptions, 'check'> = {}): Running {
    const argv = this.#argv(cmd, opts);
    return start(argv, {
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      ...(opts.input !== undefined ? { input: opts.input } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: scaled(opts.timeoutMs) } : {}),
      signal: (pid, sig) => {
        for (const p of [...childrenOf(pid), pid]) {
          try {
            process.kill(p, sig);
          } catch {
            /* gone */
          }
        }
      },
    });
  }

  /** Runs a command in the container (argv, or a string for `/bin/sh -c`). Never throws for an exit status unless `check`. */
  async exec(cmd: readonly string[] | string, opts: ExecOptions = {}): Promise<ExecResult> {
    const result = await this.spawn(cmd, { timeoutMs: 60_000, ...opts }).done;
    if (opts.check && result.code !== 0) {
      throw new CommandError([`[${this.suite}]`, typeof cmd === 'string' ? cmd : quote(cmd)], result);
    }
    return result;
  }

  /** A shell script in the container (`/bin/sh -c`, with `set -e`). */
  sh(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(['/bin/sh', '-ec', script], opts);
  }

  /** Runs the lab's node (bound at /usr/local/bin/node; SDH_LAB_NODE or the host's) in the container: the way to run test clients there. */
  node(args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(['/usr/local/bin/node', ...args], opts);
  }

  systemctl(args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(['systemctl', ...args], opts);
  }

  /** Writes a file in the container (parent directories created), mode 0644 unless told. */
  async writeFile(path: string, content: string | Buffer, { mode = '0644' }: { mode?: string } = {}): Promise<void> {
    if (!posix.isAbsolute(path)) throw new Error(`writeFile: path must be absolute in the container, got ${path}`);
    await this.exec(['/bin/sh', '-ec', 'mkdir -p "$(dirname "$1")"; cat > "$1.sdh-tmp"; chmod "$2" "$1.sdh-tmp"; mv -f "$1.sdh-tmp" "$1"', 'sh', path, mode], {
      input: content,
      check: true,
    });
  }

  async readFile(path: string): Promise<string> {
    return (await this.exec(['cat', '--', path], { check: true })).stdout;
  }

  /** Writes /etc/systemd/system/NAME and reloads systemd. */
  async installUnit(name: string, content: string): Promise<void> {
    if (!/^[\w@:.\-\\]+\.(service|socket|target|timer|path|mount|slice|scope)$/.test(name)) {
      throw new Error(`installUnit: ${JSON.stringify(name)} is not a unit file name`);
    }
    await this.writeFile(`/etc/systemd/system/${name}`, content);
    await this.systemctl(['daemon-reload'], { check: true });
  }

  /** Stops the unit, removes /etc/systemd/system/NAME and its drop-ins, reloads, and clears its failed state. */
  async removeUnit(name: string): Promise<void> {
    await this.systemctl(['stop', name]);
    await this.exec(['rm', '-rf', `/etc/systemd/system/${name}`, `/etc/systemd/system/${name}.d`], { check: true });
    await this.systemctl(['daemon-reload'], { check: true });
    await this.systemctl(['reset-failed', name]);
  }

  /** `journalctl -u UNIT -o json`, parsed. */
  async journal(unit: string, opts: JournalOptions = {}): Promise<JournalEntry[]> {
    if (opts.sync ?? true) await this.exec(['journalctl', '--sync']);
    const args = ['journalctl', '--no-pager', '-o', 'json', '-u', unit];
    if (opts.since) args.push('--since', opts.since);
    if (opts.afterCursor) args.push('--after-cursor', opts.afterCursor);
    if (opts.lines !== undefined) args.push('-n', String(opts.lines));
    args.push(...(opts.args ?? []));
    const r = await this.exec(args, { check: true });
    return r.stdout
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as JournalEntry);
  }

  /** `systemctl show UNIT -p ...`, as a record; a property systemd does not print is an error. */
  async show<P extends string>(unit: string, props: readonly P[]): Promise<Record<P, string>> {
    if (props.length === 0) throw new Error('show: name the properties you need');
    const r = await this.systemctl(['show', unit, `--property=${props.join(',')}`, '--no-pager'], { check: true });
    const out: Record<string, string> = {};
    for (const line of r.stdout.split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
    }
    const missing = props.filter((p) => !(p in out));
    if (missing.length > 0) throw new Error(`systemctl show ${unit} on ${this.label} printed no ${missing.join(', ')}`);
    return out as Record<P, string>;
  }

  /** Polls `fn` until it returns a value other than undefined/false/null; see run.ts waitFor. `timeoutMs` x SDH_TIME_FACTOR. */
  waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, opts: { intervalMs?: number; what?: string } = {}) {
    return waitFor(fn, scaled(timeoutMs), opts);
  }

  /** Powers the container off and removes its cgroups. Only the process that booted it can stop it. */
  async stop(): Promise<void> {
    if (!this.#owner) {
      throw new Error(`${this.machine} is a shared lab container; global teardown stops it (use bootContainer() for one of your own)`);
    }
    await this.#owner.stop();
  }
}

/** The nspawn process behind a booted container, and the graceful way to end it. */
class BootedProcess {
  #exited: Promise<void>;
  #stopping: Promise<void> | undefined;
  exitCode: number | null = null;
  console = '';

  constructor(
    readonly machine: string,
    readonly nspawnPid: number,
    exited: Promise<void>,
  ) {
    this.#exited = exited;
  }

  get running(): boolean {
    return this.exitCode === null;
  }

  /** Waits for nspawn to exit, at most `ms`; true if it did. */
  async waitExit(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), ms);
      timer.unref();
    });
    const ok = await Promise.race([this.#exited.then(() => true), timeout]);
    clearTimeout(timer);
    return ok;
  }

  /**
   * SIGTERM to nspawn, which halts the container (it sends SIGRTMIN+3 to PID 1) and exits; SIGKILL to the whole
   * cgroup if that takes more than `gracefulMs`; then the cgroups nspawn leaves behind are removed, deepest first.
   * Idempotent.
   */
  stop(gracefulMs = 15_000): Promise<void> {
    this.#stopping ??= (async () => {
      if (this.running) {
        try {
          process.kill(this.nspawnPid, 'SIGTERM');
        } catch {
          /* already gone */
        }
        if (!(await this.waitExit(gracefulMs))) {
          killCgroup(this.machine);
          await this.waitExit(5000);
        }
      }
      // nspawn may exit before the kernel has moved the last container processes out of the cgroup.
      const deadline = Date.now() + 5000;
      while (cgroupPids(this.machine).length > 0 && Date.now() < deadline) {
        killCgroup(this.machine);
        await sleep(50);
      }
      const left = removeCgroup(this.machine);
      removeNspawnLeftovers(this.machine);
      forgetContainer(this.machine);
      if (left.length > 0) throw new Error(`${this.machine}: cgroups left behind: ${left.join(', ')}`);
    })();
    return this.#stopping;
  }
}

export interface BootOptions {
  /** A rootfs from ensureRootfs(); default: ensure it now (from the cache, or build it). */
  rootfs?: Rootfs;
  /** More systemd-nspawn arguments, e.g. `--bind-ro=/some/dir:/dir`. */
  nspawnArgs?: string[];
  /** Default 90 s, until `systemctl is-system-running --wait` answers. */
  timeoutMs?: number;
  log?: (line: string) => void;
}

let seq = 0;
const CONSOLE_KEEP = 64 * 1024;
let chosenNode: LabNode | undefined;

/** SDH_LAB_NODE or the node running the tests, checked once per process (config.ts labNode). */
export function containerNode(): LabNode {
  chosenNode ??= labNode();
  return chosenNode;
}

/**
 * Boots a container of `suite` and waits until systemd reports `running` or `degraded`. The caller owns it and
 * must `stop()` it (an exit hook SIGKILLs it otherwise). Tests that can share one use `lab(suite)` instead.
 */
export async function bootContainer(suite: Suite, opts: BootOptions = {}): Promise<Container> {
  const rootfs = opts.rootfs ?? (await ensureRootfs(suite, opts.log ? { log: opts.log } : {}));
  const machine = cgroupName(suite, ++seq);
  const procsFiles = createCgroup(machine);
  const node = containerNode();
  const nspawnArgs = [
    '--boot',
    `--directory=${rootfs.root}`,
    `--machine=${machine}`,
    '--register=no',
    '--keep-unit',
    '--console=pipe',
    '--private-network',
    '--volatile=overlay',
    '--link-journal=no',
    '--settings=no',
    `--bind-ro=${node.path}:/usr/local/bin/node`,
    `--bind-ro=${PROJECT_ROOT}:/project`,
    ...(opts.nspawnArgs ?? []),
  ];
  // The wrapper moves itself into the container's cgroup and execs nspawn, so nspawn starts there.
  const wrapper = 'for f in $SDH_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; unset SDH_CGROUP_PROCS; exec systemd-nspawn "$@"';
  const t0 = Date.now();
  const child = spawn('/bin/sh', ['-c', wrapper, 'sdh-lab-nspawn', ...nspawnArgs], {
    detached: true, // not in the test runner's process group: Ctrl-C reaches the lab's handlers, which stop containers in order
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`,
      SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1',
      SDH_CGROUP_PROCS: procsFiles.join(' '),
    },
  });
  const nspawnPid = child.pid;
  if (nspawnPid === undefined) {
    removeCgroup(machine);
    throw new Error(`${machine}: cannot spawn systemd-nspawn`);
  }
  trackContainer(machine, nspawnPid);
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  const proc = new BootedProcess(machine, nspawnPid, exited);
  const keep = (b: Buffer) => {
    proc.console = (proc.console + b.toString('utf8')).slice(-CONSOLE_KEEP);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('exit', (code, signal) => {
    proc.exitCode = code ?? (signal ? 128 : -1);
  });

  const fail = async (why: string): Promise<never> => {
    const consoleTail = proc.console.split('\n').slice(-40).join('\n');
    await proc.stop(3000).catch(() => {});
    throw new Error(`${machine} (${suite}) did not boot: ${why}\n--- nspawn output ---\n${consoleTail}`);
  };

  const deadline = t0 + scaled(opts.timeoutMs ?? 90_000);
  const remaining = () => Math.max(1, deadline - Date.now());

  // PID 1: the child of nspawn whose pid in its own namespace is 1, once it has exec'd systemd.
  let pid1 = 0;
  try {
    pid1 = await waitFor(
      () => {
        if (!proc.running) throw new Error(`systemd-nspawn exited with ${proc.exitCode}`);
        for (const p of childrenOf(nspawnPid)) {
          const status = readFileSync(`/proc/${p}/status`, 'utf8');
          const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/);
          if (nspid && nspid.length > 1 && nspid[nspid.length - 1] === '1' && /systemd$/.test(readlinkSync(`/proc/${p}/exe`))) {
            return p;
          }
        }
        return undefined;
      },
      remaining(),
      { intervalMs: 20, what: 'container PID 1 running systemd' },
    );
  } catch (e) {
    return fail((e as Error).message);
  }

  const shell = new Container(
    { suite, machine, nspawnPid, pid1, systemdVersion: 0, systemdVersionString: '', root: rootfs.root, bootMs: 0, state: '', failedUnits: [] },
    undefined,
  );
  // Right after exec, systemctl may find no bus yet and answer `offline` or fail: ask again until it waits properly.
  let state = '';
  for (;;) {
    if (!proc.running) return fail(`systemd-nspawn exited with ${proc.exitCode}`);
    const r = await shell.exec(['systemctl', 'is-system-running', '--wait'], { timeoutMs: remaining() });
    state = r.stdout.trim();
    if (state === 'running' || state === 'degraded') break;
    if (Date.now() >= deadline) return fail(`systemctl is-system-running says ${JSON.stringify(state)}: ${r.stderr.trim()}`);
    await sleep(50);
  }
  const bootMs = Date.now() - t0;
  const version = (await shell.exec(['systemctl', '--version'], { check: true })).stdout.split('\n')[0] ?? '';
  const major = Number(/^systemd (\d+)/.exec(version)?.[1]);
  if (!major) return fail(`cannot read the systemd version from ${JSON.stringify(version)}`);
  const failedUnits =
    state === 'degraded'
      ? (await shell.exec(['systemctl', 'list-units', '--failed', '--plain', '--no-legend'])).stdout
          .split('\n')
          .map((l) => l.trim().split(/\s+/)[0] ?? '')
          .filter(Boolean)
      : [];
  if (failedUnits.length > 0) opts.log?.(`${machine}: booted degraded, failed units: ${failedUnits.join(', ')}`);
  const info = { suite, machine, nspawnPid, pid1, systemdVersion: major, systemdVersionString: version, root: rootfs.root, bootMs, state, failedUnits };
  return new Container(node.fromEnv ? { ...info, nodeVersion: node.version } : info, proc);
}
