import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, SdHandoffError, sdError } from '../../src/errors.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

describe('error table', () => {
  it.each(Object.keys(ERROR_CODES))('%s is documented in docs/errors.md', (code) => {
    expect(doc).toMatch(new RegExp(`^### ${code}$`, 'm'));
  });

  it('documents no code that the table lacks', () => {
    const documented = [...doc.matchAll(/^### (SDH_[A-Z_]+)$/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });
});

describe('SdHandoffError', () => {
  it('names a failed system call by errno, keeping errno, syscall and path', () => {
    const err = new SdHandoffError('', { errno: 2, syscall: 'sendmsg', path: '/run/x' });
    expect(err.code).toBe('ENOENT');
    expect(err.errno).toBe(2);
    expect(err.syscall).toBe('sendmsg');
    expect(err.path).toBe('/run/x');
    expect(err.message).toBe('sendmsg /run/x: ENOENT (no such file or directory)');
  });

  it('names the fd when there is no path', () => {
    const err = new SdHandoffError('describe', { errno: 9, syscall: 'fstat', fd: 7 });
    expect(err.message).toBe('describe: fstat fd 7: EBADF (bad file descriptor)');
    expect(err.fd).toBe(7);
  });

  it('keeps project codes and extra facts', () => {
    const err = sdError('SDH_INVALID_ENV', 'LISTEN_FDS="x" is not a decimal integer', { variable: 'LISTEN_FDS', value: 'x' });
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('SDH_INVALID_ENV');
    expect((err as unknown as { variable: string }).variable).toBe('LISTEN_FDS');
  });
});
