import { describe, expect, it } from 'vitest';
import type { NativeAddon } from '../../src/native.js';
import { ContainerGuard, descendants, initSignalsGroup, parseStat, type ProcEntry } from '../../src/upgrade/pid1.js';

const withReaper = { setChildSubreaper: () => {}, waitPid: () => null } as unknown as NativeAddon;
const withoutReaper = {} as NativeAddon;

function guard(o: { pid?: number; parentComm?: string; env?: NodeJS.ProcessEnv; upgradeChild?: boolean; addon?: NativeAddon }) {
  const logs: Array<{ priority: number; event: string; message: string }> = [];
  const g = new ContainerGuard({
    pid: o.pid ?? 7,
    ppid: 1,
    env: o.env ?? {},
    addon: o.addon ?? withReaper,
    log: (e) => logs.push(e),
    upgradeChild: o.upgradeChild ?? false,
    parentComm: o.parentComm ?? 'systemd',
  });
  return { g, logs };
}

describe('ContainerGuard', () => {
  it('as PID 1 refuses upgrades and takeovers with SDH_PID_ONE naming both fixes, and says so once at start', () => {
    const { g, logs } = guard({ pid: 1, parentComm: 'containerd-shim' });
    expect(logs.map((l) => l.event)).toEqual(['pid-one']);
    for (const what of ['upgrade', 'takeover'] as const) {
      const err = g.refusal(what);
      expect(err?.code).toBe('SDH_PID_ONE');
      expect(err?.message).toMatch(new RegExp(`^${what} refused: this process is PID 1 of its PID namespace \\(pid=1\\)`));
      expect(err?.message).toContain('`docker run --init`');
      expect(err?.message).toContain('`sd-handoff run -- node app.js`');
    }
    expect(logs.filter((l) => l.event === 'upgrade-refused' && l.priority === 3)).toHaveLength(2);
  });

  it('under systemd (or any parent that outlives its child) lets upgrades through and keeps no waiter', () => {
    const { g, logs } = guard({ parentComm: 'systemd' });
    expect(g.init).toBeUndefined();
    expect(g.refusal('upgrade')).toBeUndefined();
    expect(g.refusal('takeover')).toBeUndefined();
    expect(logs).toEqual([]);
  });

  it.each(['tini', 'docker-init', 'dumb-init', 'catatonit'])('under %s keeps the old process as the waiter', (init) => {
    const { g } = guard({ parentComm: init });
    expect(g.init).toBe(init);
    expect(g.refusal('upgrade')).toBeUndefined();
    // A process taking over is no child of ours: it would die with the container.
    expect(g.refusal('takeover')?.message).toMatch(new RegExp(`^takeover refused: this process's parent is ${init} \\(ppid=1\\)`));
  });

  it('SDH_WAITER=1 asks for the waiter under any parent, SDH_WAITER=0 never; a new version is never a waiter', () => {
    expect(guard({ parentComm: 'npm start', env: { SDH_WAITER: '1' } }).g.init).toBe('npm start');
    expect(guard({ parentComm: 'tini', env: { SDH_WAITER: '0' } }).g.init).toBeUndefined();
    expect(guard({ parentComm: 'tini', upgradeChild: true }).g.init).toBeUndefined();
  });

  it('refuses under tini when the addon cannot adopt (an older build), saying to rebuild it', () => {
    const { g } = guard({ parentComm: 'tini', addon: withoutReaper });
    expect(g.refusal('upgrade')?.message).toMatch(/^upgrade refused: the parent is tini \(ppid=1\).*rebuild it \(npm rebuild sd-handoff\)/);
  });
});

describe('/proc parsing', () => {
  it('reads pid, state, ppid and start time after the last ")" of the command name', () => {
    const stat = '42 (node (worker) x) S 7 42 42 0 -1 4194560 1 0 0 0 1 2 0 0 20 0 11 0 987654 1000 10 18446744073709551615';
    expect(parseStat(stat)).toEqual({ pid: 42, ppid: 7, state: 'S', start: 987654 });
    expect(parseStat('garbage')).toBeUndefined();
  });

  it('finds every descendant, not the root nor strangers', () => {
    const p = (pid: number, ppid: number): ProcEntry => ({ pid, ppid, state: 'S', start: pid });
    const procs = [p(1, 0), p(2, 1), p(3, 2), p(4, 3), p(5, 1), p(6, 99)];
    expect(descendants(2, procs).sort()).toEqual([3, 4]);
    expect(descendants(1, procs).sort()).toEqual([2, 3, 4, 5]);
  });
});

describe('inits that signal the whole process group (the waiter then forwards nothing)', () => {
  // As measured: SIGTERM to the init reached the grandchild only in these cases.
  it.each([
    ['tini', ['tini', '--', 'node', 'a.js'], [], false],
    ['tini', ['tini', '-g', '--', 'node', 'a.js'], [], true],
    ['tini', ['tini', '-sg', 'node', 'a.js'], [], true],
    ['tini', ['tini', '-p', 'SIGKILL', '--', 'node', '-g'], [], false],
    ['docker-init', ['/sbin/docker-init', '--', 'node', 'a.js'], ['TINI_KILL_PROCESS_GROUP=1'], true],
    ['dumb-init', ['dumb-init', 'node', 'a.js'], [], true],
    ['dumb-init', ['dumb-init', '-c', 'node', 'a.js'], [], false],
    ['dumb-init', ['dumb-init', '--single-child', 'node', 'a.js'], [], false],
    ['dumb-init', ['dumb-init', '-r', '15:2', 'node', 'a.js'], ['DUMB_INIT_SETSID=0'], false],
    ['catatonit', ['catatonit', '--', 'node', 'a.js'], [], false],
    ['catatonit', ['catatonit', '-g', '--', 'node', 'a.js'], [], true],
  ] as const)('%s %j %j: %s', (init, argv, env, group) => {
    expect(initSignalsGroup(init, argv, env)).toBe(group);
  });
});
