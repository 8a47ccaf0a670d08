import { describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import { parseUpgradeEnv } from '../../src/upgrade/protocol.js';
import { parseWorkerEnv } from '../../src/workers/protocol.js';

const ok = { v: 1, parent: 42, names: ['http'], id: 'u1' };
const parse = (value: unknown): unknown => parseUpgradeEnv(JSON.stringify(value), 42);

describe('SDH_UPGRADE', () => {
  it('is read when it names our parent, ignored when it names another', () => {
    expect(parse({ ...ok, nice: 0 })).toEqual({ ...ok, nice: 0 });
    expect(parseUpgradeEnv(JSON.stringify(ok), 7)).toBeUndefined();
    expect(parseUpgradeEnv(undefined, 42)).toBeUndefined();
  });

  it('names a parent that no longer exists (we were reparented): still ours, the channel tells the rest', () => {
    expect(parseUpgradeEnv(JSON.stringify(ok), 1, () => false)).toEqual(ok);
    expect(parseUpgradeEnv(JSON.stringify(ok), 1, () => true)).toBeUndefined();
  });

  it.each([
    [{ ...ok, nice: 99 }, 'SDH_UPGRADE has nice 99; a nice value is an integer from -20 to 19'],
    [{ ...ok, nice: 'low' }, 'SDH_UPGRADE has nice "low"; a nice value is an integer from -20 to 19'],
    [{ ...ok, parent: -1 }, 'SDH_UPGRADE names parent -1, not a pid'],
    [{ ...ok, parent: 4.5 }, 'SDH_UPGRADE names parent 4.5, not a pid'],
    [{ ...ok, names: [1] }, 'is not an upgrade description'],
  ])('%j is refused naming the variable and value', (value, message) => {
    let err: unknown;
    try {
      parse(value);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SdHandoffError);
    expect((err as SdHandoffError).code).toBe('SDH_INVALID_ENV');
    expect((err as SdHandoffError).message).toContain(message);
  });
});

describe('SDH_WORKER', () => {
  const worker = { v: 1, primary: 42, id: 1, names: ['http'] };
  it('drain values default when absent and are kept when valid', () => {
    expect(parseWorkerEnv(JSON.stringify(worker), 42)).toMatchObject({ drainTimeoutMs: 30_000, drainGraceMs: 1000, generation: 0 });
    expect(parseWorkerEnv(JSON.stringify({ ...worker, drainTimeoutMs: 5000 }), 42)).toMatchObject({ drainTimeoutMs: 5000 });
  });

  it.each([
    [{ drainTimeoutMs: -5 }, 'SDH_WORKER has drainTimeoutMs -5; it must be an integer from 1 to 2147483647'],
    [{ drainGraceMs: 'soon' }, 'SDH_WORKER has drainGraceMs "soon"; it must be an integer from 1 to 2147483647'],
    [{ drainTimeoutMs: 2 ** 31 }, 'SDH_WORKER has drainTimeoutMs 2147483648; it must be an integer from 1 to 2147483647'],
    [{ generation: -1 }, 'SDH_WORKER has generation -1; it must be an integer from 0 to'],
  ])('%j is refused naming the variable and value', (extra, message) => {
    expect(() => parseWorkerEnv(JSON.stringify({ ...worker, ...extra }), 42)).toThrow(message);
  });
});
