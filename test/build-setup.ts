/**
 * Process tests run the built package (examples and fixtures import `sd-handoff`, i.e. dist/), exactly as a user's
 * service would: compile it once before they start. The addon they load is the one the package ships, the host's
 * prebuild (the loader prefers it to build/): made here when missing or older than native/.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { ensurePrebuilds } from './native/prebuild-setup.js';

export default async function setup(): Promise<void> {
  const r = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`tsc -p tsconfig.build.json failed with status ${r.status}`);
  if (process.platform === 'linux' && (os.arch() === 'x64' || os.arch() === 'arm64')) await ensurePrebuilds([os.arch() as 'x64' | 'arm64']);
}
