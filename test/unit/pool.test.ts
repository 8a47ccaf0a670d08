/**
 * WorkerPool supervision and rollout steps with a fake Upgrader and fake worker processes: crash backoff (bounded,
 * exponential, reset after a worker stayed up), the health ping, and the order of starts and retirements for
 * maxSurge / maxUnavailable.
 */
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WorkerPool, type WorkerPoolOptions } from '../../src/workers/pool.js';
import type { Upgrader } from '../../src/upgrade/upgrader.js';

class FakeChild extends EventEmitter {
  static next = 1000;
  readonly pid = FakeChild.next++;
  connected = true;
  exitCode: number | null = null;
  readonly sent: unknown[] = [];
  answersPings = true;
  constructor(readonly log: string[]) {
    super();
    log.push(`spawn ${this.pid}`);
  }
  send(m: unknown, _a?: unknown, _b?: unknown, cb?: () => void): boolean {
    this.sent.push(m);
    const msg = m as { sdh: string; seq?: number };
    if (msg.sdh === 'stop') setTimeout(() => this.exit(0, null), 5);
    if (msg.sdh === 'ping' && this.answersPings) setTimeout(() => this.emit('message', { sdh: 'pong', seq: msg.seq }), 1);
    cb?.();
    return true;
  }
  kill(signal = 'SIGTERM'): boolean {
    setTimeout(() => this.exit(null, signal), 1);
    return true;
  }
  ready(): void {
    this.emit('message', { sdh: 'ready' });
  }
  exit(code: number | null, signal: string | null): void {
    if (this.exitCode !== null || !this.connected) return;
    this.exitCode = code ?? -1;
    this.connected = false;
    this.log.push(`exit ${this.pid}`);
    this.emit('exit', code, signal);
  }
}

function fakeUpgrader(): Upgrader {
  const e = new EventEmitter() as unknown as Upgrader & Record<string, unknown>;
  Object.assign(e, {
    holdListener: async (name: string) => ({ name, fd: 7, origin: 'fresh' }),
    onUpgradeRequest: () => {},
    beforeUpgrade: () => {},
    onDrain: () => {},
    isUpgradeChild: false,
    state: 'ready',
  });
  return e;
}

let children: FakeChild[];
let log: string[];
let autoReady: boolean;

async function makePool(extra: Partial<WorkerPoolOptions> = {}): Promise<WorkerPool> {
  return WorkerPool.create({
    upgrader: fakeUpgrader(),
    script: '/x/worker.mjs',
    workers: 2,
    listeners: [{ name: 'http', address: { port: 1 } }],
    log: () => {},
    notifier: { status: () => true } as never,
    spawn: () => {
      const c = new FakeChild(log);
      children.push(c);
      if (autoReady) setTimeout(() => c.ready(), 1);
      return c as never;
    },
    ...extra,
  });
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'performance'] });
  children = [];
  log = [];
  autoReady = true;
});
afterEach(() => {
  vi.useRealTimers();
});

describe('WorkerPool supervision', () => {
  it('replaces crashed workers after 100, 200, 400... ms, capped at maxMs, and resets once a worker stayed up', async () => {
    const pool = await makePool({ workers: 1, backoff: { initialMs: 100, maxMs: 500, resetAfterMs: 10_000 } });
    const started = pool.start();
    await vi.advanceTimersByTimeAsync(5);
    await started;
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = children.length;
      children.at(-1)!.exit(1, null);
      let waited = 0;
      while (children.length === before) {
        await vi.advanceTimersByTimeAsync(10);
        waited += 10;
      }
      delays.push(waited);
      await vi.advanceTimersByTimeAsync(5); // ready
    }
    expect(delays).toEqual([100, 200, 400, 500, 500]);
    // Up for longer than resetAfterMs: the next crash starts over at initialMs.
    await vi.advanceTimersByTimeAsync(10_000);
    const before = children.length;
    children.at(-1)!.exit(1, null);
    await vi.advanceTimersByTimeAsync(90);
    expect(children.length).toBe(before);
    await vi.advanceTimersByTimeAsync(10);
    expect(children.length).toBe(before + 1);
  });

  it('kills a worker that does not answer its ping within healthTimeoutMs, and replaces it', async () => {
    const pool = await makePool({ workers: 1, healthIntervalMs: 1000, healthTimeoutMs: 500 });
    const started = pool.start();
    await vi.advanceTimersByTimeAsync(5);
    await started;
    const w = children[0]!;
    // It answers the first pings...
    await vi.advanceTimersByTimeAsync(3000);
    expect(w.sent.filter((m) => (m as { sdh: string }).sdh === 'ping').length).toBeGreaterThanOrEqual(2);
    expect(w.exitCode).toBeNull();
    // ...then stops answering: killed within one interval plus the timeout.
    w.answersPings = false;
    await vi.advanceTimersByTimeAsync(1600);
    expect(w.exitCode).not.toBeNull();
    await vi.advanceTimersByTimeAsync(200);
    expect(pool.workers().map((x) => x.pid)).toEqual([children.at(-1)!.pid]);
    expect(children).toHaveLength(2);
  });
});

describe('WorkerPool rolling restart steps', () => {
  async function steps(maxSurge: number, maxUnavailable: number): Promise<string[]> {
    const pool = await makePool({ workers: 3, maxSurge, maxUnavailable });
    const started = pool.start();
    await vi.advanceTimersByTimeAsync(5);
    await started;
    const old = children.map((c) => c.pid);
    log.length = 0;
    const r = pool.rollingRestart();
    await vi.advanceTimersByTimeAsync(1000);
    const result = await r;
    expect(result.retired.sort()).toEqual(old.sort());
    return log.map((l) => l.replace(/\d+/, (pid) => (old.includes(Number(pid)) ? 'old' : 'new')));
  }

  it('maxSurge 1, maxUnavailable 0: start one, then retire one', async () => {
    expect(await steps(1, 0)).toEqual(['spawn new', 'exit old', 'spawn new', 'exit old', 'spawn new', 'exit old']);
  });

  it('maxSurge 0, maxUnavailable 1: retire one, then start one', async () => {
    expect(await steps(0, 1)).toEqual(['exit old', 'spawn new', 'exit old', 'spawn new', 'exit old', 'spawn new']);
  });

  it('a new worker that exits before ready stops the rollout: it rejects and the old workers keep running', async () => {
    const pool = await makePool({ workers: 2, maxSurge: 1, maxUnavailable: 0 });
    const started = pool.start();
    await vi.advanceTimersByTimeAsync(5);
    await started;
    const old = children.map((c) => c.pid);
    autoReady = false;
    const r = pool.rollingRestart().catch((e: Error) => e);
    await vi.advanceTimersByTimeAsync(1);
    children.at(-1)!.exit(3, null);
    const err = await r;
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/exited with status 3 before it was ready/);
    expect(old.every((pid) => pool.workers().some((w) => w.pid === pid))).toBe(true);
  });

  it('rejects maxSurge 0 with maxUnavailable 0', async () => {
    await expect(makePool({ maxSurge: 0, maxUnavailable: 0 })).rejects.toThrow(/cannot both be 0/);
  });
});
