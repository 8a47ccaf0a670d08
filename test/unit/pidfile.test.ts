import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import { readPidFile, removePidFile, writePidFile } from '../../src/pidfile.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'sdh-pidfile-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function thrown(fn: () => void): SdHandoffError {
  try {
    fn();
  } catch (err) {
    return err as SdHandoffError;
  }
  throw new Error('expected an error');
}

describe('writePidFile', () => {
  it('creates the missing directories (0755) and writes "PID\\n", leaving no temporary file', () => {
    const file = path.join(dir, 'run', 'hello', 'hello.pid');
    writePidFile(file, 4242);
    expect(readFileSync(file, 'utf8')).toBe('4242\n');
    expect(readPidFile(file)).toBe(4242);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o755 & ~process.umask());
    expect(readdirSync(path.dirname(file))).toEqual(['hello.pid']);
  });

  it('replaces a symlink at the target instead of writing through it', () => {
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    const file = path.join(dir, 'app.pid');
    symlinkSync(victim, file);
    writePidFile(file, 7);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(readFileSync(file, 'utf8')).toBe('7\n');
  });

  it('a directory that cannot be created: SDH_PID_FILE naming the PID file, mkdir, the path and the errno', () => {
    writeFileSync(path.join(dir, 'run'), 'a file, not a directory');
    const file = path.join(dir, 'run', 'hello', 'hello.pid');
    const err = thrown(() => writePidFile(file, 1));
    expect(err).toBeInstanceOf(SdHandoffError);
    expect(err.code).toBe('SDH_PID_FILE');
    expect(err.message).toBe(`cannot write the PID file "${file}": mkdir "${path.dirname(file)}": ENOTDIR (not a directory)`);
    expect(err).toMatchObject({ pidFile: file, syscall: 'mkdir', errno: 20 });
  });

  it('a directory at the PID file\'s path: SDH_PID_FILE from the rename, and the temporary file is removed', () => {
    const file = path.join(dir, 'app.pid');
    mkdirSync(file);
    const err = thrown(() => writePidFile(file, 1));
    expect(err.code).toBe('SDH_PID_FILE');
    expect(err.message).toMatch(new RegExp(`^cannot write the PID file "${file}": rename ".*\\.tmp" -> "${file}": EISDIR \\(`));
    expect(err).toMatchObject({ pidFile: file, syscall: 'rename', errno: 21 });
    expect(readdirSync(dir)).toEqual(['app.pid']);
  });
});

describe('removePidFile', () => {
  it('removes the file only while it still names this pid', () => {
    const file = path.join(dir, 'app.pid');
    writePidFile(file, 10);
    expect(removePidFile(file, 11)).toBe(false);
    expect(readPidFile(file)).toBe(10);
    expect(removePidFile(file, 10)).toBe(true);
    expect(readPidFile(file)).toBeUndefined();
  });
});
