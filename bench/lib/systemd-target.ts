/**
 * `npm run demo -- --systemd`: the same measurement against hello-http run by real systemd as PID 1 in a lab
 * container (test/integration/lab), upgraded by `systemctl reload` (ExecReload= runs `sd-handoff upgrade`).
 *
 * The container has a private network, so hello-http's socket unit listens on a unix socket, which the load
 * generator on the host reaches through the container's root (`/proc/<its PID 1>/root/run/...`). Pids reported are
 * the container's own (its PID file, its /proc); memory is summed over the unit's cgroup.
 */
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { bootContainer, type Container } from '../../test/integration/lab/index.js';
import { ROOT, waitFor } from './proc.js';

const UNIT = 'hello-http.service';
const SOCKET = 'hello-http.socket';

export interface SystemdServiceOptions {
  ballastMb: number;
  upgradeTimeoutMs: number;
  drainTimeoutMs: number;
  suite?: string;
}

function example(name: string): string {
  return readFileSync(path.join(ROOT, 'examples/hello-http', name), 'utf8').replaceAll('/opt/sd-handoff', '/project');
}

/** hello-http under systemd in a lab container. Implements bench/demo.ts's Service. */
export class SystemdService {
  readonly url = 'http://127.0.0.1/';
  readonly socketPath: string;
  readonly description: string;
  readonly workDir = undefined;
  readonly #seen = new Set<number>();
  #lastStatus = '';

  private constructor(
    private readonly c: Container,
    ballastMb: number,
  ) {
    this.socketPath = `/proc/${c.pid1}/root/run/hello-http.sock`;
    this.description = `examples/hello-http under ${c.label}, socket unit on /run/hello-http.sock, upgraded by systemctl reload${ballastMb ? ` (${ballastMb} MiB ballast per process)` : ''}`;
  }

  static async start(options: SystemdServiceOptions, log: (line: string) => void): Promise<SystemdService> {
    const suite = (options.suite ?? 'bookworm') as 'bookworm';
    log(`booting the ${suite} lab container (the first run builds its root filesystem: a few minutes)...`);
    const c = await bootContainer(suite);
    const s = new SystemdService(c, options.ballastMb);
    try {
      await c.installUnit(SOCKET, example(SOCKET).replace(/^ListenStream=.*$/m, 'ListenStream=/run/hello-http.sock'));
      await c.installUnit(UNIT, example(UNIT));
      await c.writeFile(
        `/etc/systemd/system/${UNIT}.d/demo.conf`,
        `[Service]\nEnvironment=BALLAST_MB=${options.ballastMb} UPGRADE_TIMEOUT_MS=${options.upgradeTimeoutMs} DRAIN_TIMEOUT_MS=${options.drainTimeoutMs}\n`,
      );
      await c.systemctl(['daemon-reload'], { check: true });
      await c.systemctl(['start', SOCKET, UNIT], { check: true, timeoutMs: 60_000 });
      await waitFor('hello-http to answer on its socket', async () => ((await s.#get()) === 200 ? true : undefined), 20_000, 50);
    } catch (err) {
      await c.stop();
      throw err;
    }
    return s;
  }

  #get(): Promise<number> {
    return new Promise((resolve) => {
      http
        .get({ socketPath: this.socketPath, path: '/', agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        })
        .on('error', () => resolve(0));
    });
  }

  #root(p: string): string {
    return `/proc/${this.c.pid1}/root${p}`;
  }

  mainPid(): number | undefined {
    try {
      const t = readFileSync(this.#root('/run/hello-http/hello-http.pid'), 'utf8').trim();
      const pid = /^\d+$/.test(t) ? Number(t) : undefined;
      if (pid !== undefined) this.#seen.add(pid);
      return pid;
    } catch {
      return undefined;
    }
  }

  trigger(_pid: number): void {
    // systemctl reload waits for the upgrade (ExecReload= sd-handoff upgrade); its outcome shows in StatusText.
    void this.c.systemctl(['reload', UNIT], { timeoutMs: 120_000 });
  }

  async upgradeFailure(sinceEpochMs: number): Promise<string | undefined> {
    void sinceEpochMs;
    const status = (await this.c.show(UNIT, ['StatusText'])).StatusText;
    if (status !== this.#lastStatus && status.startsWith('upgrade failed')) {
      this.#lastStatus = status;
      return status;
    }
    return undefined;
  }

  exited(pid: number): boolean {
    try {
      const stat = readFileSync(this.#root(`/proc/${pid}/stat`), 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
    } catch {
      return true;
    }
  }

  /**
   * RSS of every process in the unit's cgroup. Read from the host, cgroup.procs lists host pids (the kernel
   * translates them into the reader's pid namespace), so their status is read from the host's /proc.
   */
  memory(): { kb: number; processes: number } {
    const procs = this.#root(`/sys/fs/cgroup/system.slice/${UNIT}/cgroup.procs`);
    if (!existsSync(procs)) return { kb: 0, processes: 0 };
    const pids = readFileSync(procs, 'utf8').trim().split('\n').filter(Boolean).map(Number);
    let kb = 0;
    for (const pid of pids) {
      try {
        const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
        kb += m ? Number(m[1]) : 0;
      } catch {
        /* exited meanwhile */
      }
    }
    return { kb, processes: pids.length };
  }

  pids(): number[] {
    return [...this.#seen];
  }

  async stop(): Promise<void> {
    await this.c.systemctl(['stop', UNIT, SOCKET], { timeoutMs: 60_000 }).catch(() => undefined);
    await this.c.stop();
  }

  kill(): void {
    // The lab's exit hook powers the container off and removes its cgroups on every exit path.
  }

  output(): string {
    return '';
  }
}
