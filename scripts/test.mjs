#!/usr/bin/env node
// `npm test`: compiles the package (integration fixtures run the built dist/ inside the containers), then runs
// every vitest project (unit, native, integration) once, writing vitest's JSON report to test-results.json so
// .ci/run can print `N passed, N failed` from it. Extra arguments go to vitest.
import { spawnSync } from 'node:child_process';

const run = (cmd, args) => spawnSync(cmd, args, { stdio: 'inherit' }).status ?? 1;
const tsc = run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json']);
if (tsc !== 0) process.exit(tsc);
const status = run(process.execPath, [
  'node_modules/vitest/vitest.mjs', 'run',
  '--reporter=default', '--reporter=json', '--outputFile.json=test-results.json',
  ...process.argv.slice(2),
]);
process.exit(status);
