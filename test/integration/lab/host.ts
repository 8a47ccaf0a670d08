/**
 * Host mode of the lab (`SDH_LAB_TARGET=host`): the machine the tests run on IS the systemd under test, as in a
 * Vagrant VM (vagrant/Vagrantfile), where systemd is PID 1 natively. describeEachSuite() then yields one
 * HostMachine instead of a container per Debian suite: the same API as Container, but commands run directly on
 * this machine (`env -i PATH=... cmd`, no nsenter), labelled with the distribution and its systemd, e.g.
 * `ubuntu-18.04 (systemd 237)`.
 *
 * What host mode requires (checked by hostSetup, which fails the run with the reason otherwise): root, systemd as
 * PID 1, the project at /project (the paths the tests use; the Vagrantfile syncs it there), and node at
 * /usr/local/bin/node (the unit files the tests install start it from there).
 *
 * `suite` in host mode is the distribution id (`debian-12`, `ubuntu-18.04`), not one of the lab's Debian suites:
 * tests that index EXPECTED_SYSTEMD by it belong to the container lab (test/integration/lab.test.ts is the
 * container smoke test; vagrant/host-lab.test.ts is the host one). Container mode does not load this file's
 * setup and is unchanged.
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

import { CONTAINER_PATH, PROJECT_ROOT, type Suite, scaled } from './config.js';
import { Container, type ContainerInfo, type ExecOptions } from './container.js';
import { type Running, run, sleep, start } from './run.js';

/** Where host mode expects things: the same paths a lab container has. */
export const HOST_PROJECT = '/project';
export const HOST_NODE = '/usr/local/bin/node';

export type LabTarget = 'container' | 'host';

/** SDH_LAB_TARGET: `container` (default: nspawn containers of the Debian suites) or `host` (this machine's systemd). */
export function labTarget(env: NodeJS.ProcessEnv = process.env): LabTarget {
  const raw = env.SDH_LAB_TARGET?.trim() || 'container';
  if (raw !== 'container' && raw !== 'host') throw new Error(`SDH_LAB_TARGET=${raw}: expected container or host`);
  return raw;
}

export interface HostInfo extends ContainerInfo {
  target: 'host';
  /** `ID-VERSION_ID` of /etc/os-release, e.g. `debian-12`, `ubuntu-18.04`. */
  distro: string;
  /** PRETTY_NAME of /etc/os-release. */
  prettyName: string;
  kernel: string;
}

/** What global setup hands to test files in host mode. */
export type HostState = { status: 'ready'; info: HostInfo } | { status: 'failed'; error: string };

function osRelease(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const file of ['/etc/os-release', '/usr/lib/os-release']) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
      if (m?.[1] && m[2] !== undefined) out[m[1]] = m[2].replace(/^"(.*)"$/, '$1');
    }
    break;
  }
  return out;
}

/**
 * Checks that this machine can be the lab and describes it. Throws with the reason when it cannot: host mode is
 * asked for explicitly, so a machine that does not qualify is an error, not a skip.
 */
export async function probeHost(timeoutMs = 300_000): Promise<HostInfo> {
  if (process.platform !== 'linux') throw new Error(`SDH_LAB_TARGET=host needs Linux (this is ${process.platform})`);
  if (process.getuid?.() !== 0) throw new Error('SDH_LAB_TARGET=host needs root (units go to /etc/systemd/system)');
  let pid1 = '';
  try {
    pid1 = readlinkSync('/proc/1/exe');
  } catch (e) {
    throw new Error(`SDH_LAB_TARGET=host: cannot read /proc/1/exe: ${(e as Error).message}`);
  }
  if (!/\/systemd$/.test(pid1)) throw new Error(`SDH_LAB_TARGET=host needs systemd as PID 1; PID 1 here is ${pid1}`);
  if (!existsSync(`${HOST_PROJECT}/package.json`)) {
    throw new Error(`SDH_LAB_TARGET=host: the tests use ${HOST_PROJECT} (the project; this checkout is ${PROJECT_ROOT}) and it has no package.json`);
  }
  if (!existsSync(HOST_NODE)) throw new Error(`SDH_LAB_TARGET=host: the test units start ${HOST_NODE} and there is none`);

  const env = { PATH: CONTAINER_PATH };
  const t0 = Date.now();
  // Right after boot the system may still be starting: wait as the container lab does.
  let state = '';
  for (;;) {
    const r = await run(['systemctl', 'is-system-running', '--wait'], { env, timeoutMs: Math.max(1000, timeoutMs - (Date.now() - t0)) });
    state = r.stdout.trim();
    if (state === 'running' || state === 'degraded') break;
    if (Date.now() - t0 >= timeoutMs) throw new Error(`systemctl is-system-running says ${JSON.stringify(state)}: ${r.stderr.trim()}`);
    await sleep(500);
  }
  const version = (await run(['systemctl', '--version'], { env, check: true })).stdout.split('\n')[0] ?? '';
  const major = Number(/^systemd (\d+)/.exec(version)?.[1]);
  if (!major) throw new Error(`cannot read the systemd version from ${JSON.stringify(version)}`);
  const failedUnits =
    state === 'degraded'
      ? (await run(['systemctl', 'list-units', '--failed', '--plain', '--no-legend'], { env })).stdout
          .split('\n')
          .map((l) => l.trim().split(/\s+/)[0] ?? '')
          .filter(Boolean)
      : [];
  const os = osRelease();
  const distro = `${os.ID ?? 'linux'}-${os.VERSION_ID ?? 'unknown'}`;
  return {
    target: 'host',
    distro,
    prettyName: os.PRETTY_NAME ?? distro,
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    // Not one of the Debian suites: see the module comment.
    suite: distro as Suite,
    machine: hostname(),
    nspawnPid: 0,
    pid1: 1,
    systemdVersion: major,
    systemdVersionString: version,
    root: '/',
    bootMs: 0,
    state,
    failedUnits,
  };
}

/**
 * This machine behind the Container API. Commands run as `env -i [-C cwd] PATH=... [VARS] cmd`: env execs the
 * command, so the spawned process is the command itself and kill() and timeouts reach it directly.
 */
export class HostMachine extends Container {
  readonly target = 'host' as const;
  readonly distro: string;
  readonly prettyName: string;
  readonly kernel: string;

  constructor(info: HostInfo) {
    super(info);
    this.distro = info.distro;
    this.prettyName = info.prettyName;
    this.kernel = info.kernel;
  }

  override get label(): string {
    return `${this.distro} (systemd ${this.systemdVersion})`;
  }

  override spawn(cmd: readonly string[] | string, opts: Omit<ExecOptions, 'check'> = {}): Running {
    const argv = typeof cmd === 'string' ? ['/bin/sh', '-c', cmd] : [...cmd];
    if (argv.length === 0) throw new Error('exec: empty command');
    const env = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const cwd = opts.cwd ? ['-C', opts.cwd] : [];
    return start(['/usr/bin/env', '-i', ...cwd, `PATH=${CONTAINER_PATH}`, ...env, ...argv], {
      env: { PATH: CONTAINER_PATH },
      ...(opts.input !== undefined ? { input: opts.input } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: scaled(opts.timeoutMs) } : {}),
    });
  }

  override stop(): Promise<void> {
    return Promise.reject(new Error(`${this.label} is the machine the tests run on: host mode never stops it`));
  }
}

/** Global setup in host mode: no containers, one HostMachine. */
export async function hostSetup(log: (line: string) => void): Promise<HostState> {
  try {
    const info = await probeHost();
    log(
      `host mode: ${info.prettyName}, ${info.systemdVersionString}, kernel ${info.kernel}, ${info.state}` +
        (info.failedUnits.length > 0 ? ` (failed units: ${info.failedUnits.join(', ')})` : ''),
    );
    return { status: 'ready', info };
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    log(`host mode unavailable: ${error}`);
    return { status: 'failed', error };
  }
}
