import { defineConfig } from 'vitest/config';

import { scaled } from './test/integration/lab/config.js';

// Three depths, one runner: unit (fakes), native (real sockets and child processes), integration (real systemd as
// PID 1 in containers booted by test/integration/lab). `npm test` runs all three; see scripts/test.mjs.
// npm test runs them under several Node versions and sets SDH_TEST_NODE_LABEL=1: the project names then say which
// Node ran them (`native · node 24.22.3`), so a failure in the console names it. Without it the names stay
// `unit`, `native`, `integration`, as `vitest run --project unit` expects.
// The projects run one after another (sequence.groupOrder): process tests that count failed requests under load
// must not share the machine's 2 cores with containers doing the same.
const name = (project: string) => (process.env.SDH_TEST_NODE_LABEL === '1' ? `${project} · node ${process.versions.node}` : project);

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: name('unit'),
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: name('native'),
          include: ['test/native/**/*.test.ts'],
          globalSetup: ['test/build-setup.ts'],
          environment: 'node',
          sequence: { groupOrder: 1 },
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
      {
        test: {
          name: name('integration'),
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          sequence: { groupOrder: 2 },
          globalSetup: ['test/build-setup.ts', 'test/integration/lab/global-setup.ts'],
          // x SDH_TIME_FACTOR (test/integration/lab/config.ts), like every deadline of the integration tests.
          testTimeout: scaled(180_000),
          hookTimeout: scaled(900_000),
          // Every integration file drives the same containers: run files one after another.
          fileParallelism: false,
        },
      },
    ],
  },
});
