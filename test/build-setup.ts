/**
 * Process tests run the built package (examples and fixtures import `sd-handoff`, i.e. dist/), exactly as a user's
 * service would: compile it once before they start.
 */
import { spawnSync } from 'node:child_process';

export default function setup(): void {
  const r = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`tsc -p tsconfig.build.json failed with status ${r.status}`);
}
