import { describe, expect, it } from 'vitest';
import { listenFds } from '../../src/activation.js';
import { SdHandoffError } from '../../src/errors.js';
import { fakeAddon, tcpListener, unixListener } from './fakes.js';

const PID = 4242;
const passed = { 3: tcpListener, 4: unixListener, 5: tcpListener };

function take(env: NodeJS.ProcessEnv, unsetEnvironment?: boolean) {
  const addon = fakeAddon(passed);
  const result = listenFds({ env, pid: PID, addon, ...(unsetEnvironment === undefined ? {} : { unsetEnvironment }) });
  return { result, addon };
}

describe('listenFds: environment permutations that yield fds', () => {
  it.each([
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '1' }, names: ['unknown'] },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'http:admin' }, names: ['http', 'admin'] },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '3', LISTEN_FDNAMES: 'http:admin:stored' }, names: ['http', 'admin', 'stored'] },
    { env: { LISTEN_PID: '+4242', LISTEN_FDS: '1', LISTEN_FDNAMES: 'x' }, names: ['x'] },
  ])('$env -> $names', ({ env, names }) => {
    const { result, addon } = take({ ...env });
    expect(result.map((r) => r.name)).toEqual(names);
    expect(result.map((r) => r.fd)).toEqual(names.map((_, i) => 3 + i));
    expect(result[0]?.info.family).toBe('inet');
    expect([...addon.cloexec].sort()).toEqual(result.map((r) => r.fd));
  });
});

describe('listenFds: not activated is no error and no fds', () => {
  it.each([
    { why: 'nothing set', env: {} },
    { why: 'only LISTEN_FDS', env: { LISTEN_FDS: '2' } },
    { why: 'only LISTEN_PID', env: { LISTEN_PID: '4242' } },
    { why: 'LISTEN_PID of another process (our parent)', env: { LISTEN_PID: '1', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b' } },
    { why: 'LISTEN_FDS=0', env: { LISTEN_PID: '4242', LISTEN_FDS: '0' } },
  ])('$why', ({ env }) => {
    const { result, addon } = take({ ...env });
    expect(result).toEqual([]);
    expect(addon.cloexec.size).toBe(0);
  });
});

describe('listenFds: bad input throws a clear, typed error', () => {
  it.each([
    { env: { LISTEN_PID: '4242', LISTEN_FDS: 'two' }, code: 'SDH_INVALID_ENV', message: 'LISTEN_FDS="two" is not a decimal integer' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '2x' }, code: 'SDH_INVALID_ENV', message: 'LISTEN_FDS="2x" is not a decimal integer' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '' }, code: 'SDH_INVALID_ENV', message: 'LISTEN_FDS="" is not a decimal integer' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '-1' }, code: 'SDH_INVALID_ENV', message: 'LISTEN_FDS="-1" is negative' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '99999999999' }, code: 'SDH_INVALID_ENV', message: 'LISTEN_FDS="99999999999" is more fds than this process can hold' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '1'.repeat(30) }, code: 'SDH_INVALID_ENV', message: 'is out of range' },
    { env: { LISTEN_PID: 'me', LISTEN_FDS: '1' }, code: 'SDH_INVALID_ENV', message: 'LISTEN_PID="me" is not a decimal integer' },
    { env: { LISTEN_PID: '0', LISTEN_FDS: '1' }, code: 'SDH_INVALID_ENV', message: 'LISTEN_PID="0" is not a process id' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b:c' }, code: 'SDH_FDNAMES_MISMATCH', message: 'LISTEN_FDNAMES has 3 names for 2 fds' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a' }, code: 'SDH_FDNAMES_MISMATCH', message: 'LISTEN_FDNAMES has 1 names for 2 fds' },
    { env: { LISTEN_PID: '4242', LISTEN_FDS: '4' }, code: 'SDH_BAD_FD', message: 'LISTEN_FDS=4 but fd 6 is not open' },
  ])('$env', ({ env, code, message }) => {
    const e: NodeJS.ProcessEnv = { ...env };
    let error: unknown;
    try {
      take(e);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SdHandoffError);
    expect((error as SdHandoffError).code).toBe(code);
    expect((error as SdHandoffError).message).toContain(message);
    // Even on error the variables are gone, so a child never inherits a broken set.
    expect(e).toEqual({});
  });
});

describe('listenFds: environment handling', () => {
  it('unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES by default and leaves the rest', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '4242', LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', NOTIFY_SOCKET: '/run/n' };
    take(env);
    expect(env).toEqual({ NOTIFY_SOCKET: '/run/n' });
  });

  it('keeps them with unsetEnvironment: false', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '4242', LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' };
    take(env, false);
    expect(env).toEqual({ LISTEN_PID: '4242', LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' });
  });

  it('also unsets them when LISTEN_PID names another process', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '1' };
    take(env);
    expect(env).toEqual({});
  });
});
