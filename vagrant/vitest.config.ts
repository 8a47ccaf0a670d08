import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

// The integration suite in host mode (test/integration/lab/host.ts): inside a Vagrant VM, against the VM's own
// systemd as PID 1, run as root from the project synced to /project. Run by vagrant/run-suite.sh; not part of
// `npm test`. test/integration/lab.test.ts checks the containers of the container lab: host mode runs its own
// smoke test (vagrant/host-lab.test.ts) instead.
process.env.SDH_LAB_TARGET = 'host';

// Slow machines (software emulation) stretch the per-test bounds; the tests' own waits are unchanged.
const slow = Number(process.env.SDH_VAGRANT_TIMEOUT_FACTOR) || 1;

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    name: 'integration-host',
    include: ['test/integration/**/*.test.ts', 'vagrant/host-lab.test.ts'],
    exclude: ['test/integration/lab.test.ts', '**/node_modules/**'],
    environment: 'node',
    globalSetup: ['test/build-setup.ts', 'test/integration/lab/global-setup.ts'],
    testTimeout: 180_000 * slow,
    hookTimeout: 900_000 * slow,
    fileParallelism: false,
  },
});
