#!/usr/bin/env node
// Builds the N-API addon with node-gyp at install time. On an OS other than Linux there is nothing to build:
// the package still installs and imports, and every systemd feature reports "not supported".
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
if (process.platform !== 'linux') {
  console.log(`sd-handoff: ${process.platform} is not Linux; skipping the native addon (systemd features will report "not supported").`);
  process.exit(0);
}
// npm tells install scripts where its own node-gyp is; fall back to whatever `node-gyp` is on PATH.
const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
if (r.error) {
  console.error(`sd-handoff: could not run node-gyp (${cmd}): ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
