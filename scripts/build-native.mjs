#!/usr/bin/env node
// Builds the N-API addon with node-gyp at install time. On an OS other than Linux there is nothing to build:
// the package still installs and imports, and every systemd feature reports "not supported".
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
if (process.platform !== 'linux') {
  console.log(`sd-handoff: ${process.platform} is not Linux; skipping the native addon (systemd features will report "not supported").`);
  process.exit(0);
}
// npm tells install scripts where its own node-gyp is. Run by hand, use npm's bundled one next to this node, and
// point it at the headers installed with node (include/node), so it never tries to download them.
const prefix = path.dirname(path.dirname(process.execPath));
const bundled = path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
const gyp = process.env.npm_config_node_gyp ?? (existsSync(bundled) ? bundled : undefined);
const args = ['rebuild'];
if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`);
const [cmd, cmdArgs] = gyp ? [process.execPath, [gyp, ...args]] : ['node-gyp', args];
const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit' });
if (r.error) {
  console.error(`sd-handoff: could not run node-gyp (${cmd}): ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
