import { defineConfig } from 'vitest/config';

import { scaled } from './test/integration/lab/config.js';

// Three depths, one runner: unit (fakes), native (real sockets and child processes), integration (real systemd as
// PID 1 in containers booted by test/integration/lab). `npm test` runs all three; see scripts/test.mjs.
// The projects run one after another (sequence.groupOrder): process tests that count failed requests under load
// must not share the machine's 2 cores with containers doing the same.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'native',
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
          name: 'integration',
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
