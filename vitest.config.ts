import { defineConfig } from 'vitest/config';

// Three depths, one runner: unit (fakes), native (real sockets and child processes), integration (real systemd as
// PID 1 in containers booted by test/integration/lab). `npm test` runs all three; see scripts/test.mjs.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        test: {
          name: 'native',
          include: ['test/native/**/*.test.ts'],
          globalSetup: ['test/build-setup.ts'],
          environment: 'node',
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/build-setup.ts', 'test/integration/lab/global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 900_000,
          // Every integration file drives the same containers: run files one after another.
          fileParallelism: false,
        },
      },
    ],
  },
});
