/**
 * The load generator (bench/load.ts) run inside a lab container, whose network is private. `startLoad` resolves
 * once the generator runs (it writes a started file), so a slow start on a busy host is never mistaken for a run;
 * `stop()` ends it with SIGTERM and returns its counts.
 */
import { onTestFinished } from 'vitest';
import type { Counts as LoadCounts } from '../../bench/load.js';
import { type Container, scaled } from './lab/index.js';

/** The generator's outcome counts: every request ends in exactly one of them. */
export type { LoadCounts };

export interface LoadOut {
  counts: LoadCounts;
  otherCodes: Record<string, number>;
  errorSamples: unknown[];
  slow?: { counts: LoadCounts };
}

let seq = 0;

export async function startLoad(
  c: Container,
  mode: 'keepalive' | 'newconn',
  connections: number,
  extra: string[] = [],
  url = 'http://127.0.0.1:8080/',
): Promise<{ stop: () => Promise<LoadOut> }> {
  const started = `/run/sdh-load-${process.pid}-${++seq}`;
  const running = c.spawn(
    ['/usr/local/bin/node', '--import', 'tsx', 'bench/load.ts', '--url', url, '--mode', mode, '-c', String(connections), '-d', '600', '--timeout', String(scaled(5000)), '--started-file', started, ...extra],
    { cwd: '/project', timeoutMs: 700_000 },
  );
  await c.waitFor(async () => (await c.exec(['test', '-e', started])).code === 0 || undefined, 60_000, { what: `the ${mode} load generator to start` });
  let stopped = false;
  // A test that fails before stop() must not leave its generator loading the next tests.
  onTestFinished(async () => {
    if (stopped) return;
    running.kill('SIGKILL');
    await c.exec(['rm', '-f', started]);
  });
  return {
    stop: async () => {
      stopped = true;
      // Signal the generator itself (it prints its result on SIGTERM), not the nsenter that started it.
      const pid = (await c.readFile(started)).trim();
      await c.exec(['kill', '-TERM', pid]);
      const r = await running.done;
      await c.exec(['rm', '-f', started]);
      if (r.code !== 0) throw new Error(`load generator exited ${r.code}: ${r.stderr}`);
      return JSON.parse(r.stdout) as LoadOut;
    },
  };
}

/** The failures by kind (everything but ok), for `toEqual(NO_FAILURES)` with a readable diff. */
export function failures(c: LoadCounts): Omit<LoadCounts, 'ok' | 'total'> {
  return { non2xx: c.non2xx, refused: c.refused, reset: c.reset, timeout: c.timeout, other: c.other };
}

export const NO_FAILURES = { non2xx: 0, refused: 0, reset: 0, timeout: 0, other: 0 };
