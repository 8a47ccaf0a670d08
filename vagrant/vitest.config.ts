import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

import { scaled } from '../test/integration/lab/config.js';

// The integration suite in host mode (test/integration/lab/host.ts): inside a Vagrant VM, against the VM's own
// systemd as PID 1, run as root from the project synced to /project. Run by vagrant/run-suite.sh; not part of
// `npm test`. test/integration/lab.test.ts checks the containers of the container lab: host mode runs its own
// smoke test (vagrant/host-lab.test.ts) instead.
process.env.SDH_LAB_TARGET = 'host';

// Slow machines (software emulation) set SDH_TIME_FACTOR: it stretches these bounds and every deadline and pause
// the tests set (test/integration/lab/config.ts).

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    name: 'integration-host',
    include: ['test/integration/**/*.test.ts', 'vagrant/host-lab.test.ts'],
    exclude: ['test/integration/lab.test.ts', '**/node_modules/**'],
    environment: 'node',
    globalSetup: ['test/build-setup.ts', 'test/integration/lab/global-setup.ts'],
    testTimeout: scaled(180_000),
    hookTimeout: scaled(900_000),
    fileParallelism: false,
  },
});
