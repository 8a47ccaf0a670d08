import { chmodSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { labNode } from '../integration/lab/config.js';

// SDH_LAB_NODE picks the node every lab container runs (npm test's Node 24 lab run). A run meant for another Node
// must not quietly fall back to the host's: a bad value stops it, naming the variable and the value.
describe('SDH_LAB_NODE', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sdh-lab-node-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const script = (name: string, body: string, mode = 0o755) => {
    const file = path.join(dir, name);
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, mode);
    return file;
  };

  it('is the node running the tests when unset or empty', () => {
    for (const env of [{}, { SDH_LAB_NODE: ' ' }]) {
      expect(labNode(env)).toEqual({ path: realpathSync(process.execPath), version: process.versions.node, fromEnv: false });
    }
  });

  it('is the named binary, resolved through symlinks, with the version it reports', () => {
    const fake = script('node24', 'echo v24.1.0');
    const link = path.join(dir, 'node-link');
    symlinkSync(fake, link);
    expect(labNode({ SDH_LAB_NODE: link })).toEqual({ path: fake, version: '24.1.0', fromEnv: true });
    expect(labNode({ SDH_LAB_NODE: process.execPath }).version).toBe(process.versions.node);
  });

  it.each([
    ['node', 'is not an absolute path'],
    ['/nonexistent/bin/node', 'is not an executable file: ENOENT'],
    ['/tmp', 'is not a file'],
  ])('rejects %j: %s', (value, why) => {
    expect(() => labNode({ SDH_LAB_NODE: value })).toThrow(`SDH_LAB_NODE="${value}" ${why}`);
  });

  it('rejects a file that is not executable, and one that does not answer --version like node', () => {
    const plain = script('plain', 'echo v24.1.0', 0o644);
    expect(() => labNode({ SDH_LAB_NODE: plain })).toThrow(`SDH_LAB_NODE="${plain}" is not an executable file: EACCES`);
    const other = script('python', 'echo Python 3.11.2');
    expect(() => labNode({ SDH_LAB_NODE: other })).toThrow(`SDH_LAB_NODE="${other}" does not run as node (\`${other} --version\` printed "Python 3.11.2")`);
    const failing = script('broken', 'exit 3');
    expect(() => labNode({ SDH_LAB_NODE: failing })).toThrow('printed "exit status 3"');
  });
});
