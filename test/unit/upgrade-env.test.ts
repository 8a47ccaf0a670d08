import { describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import { parseUpgradeEnv } from '../../src/upgrade/protocol.js';

const ok = { v: 1, parent: 42, names: ['http'], id: 'u1' };
const parse = (value: unknown): unknown => parseUpgradeEnv(JSON.stringify(value), 42);

describe('SDH_UPGRADE', () => {
  it('is read when it names our parent, ignored when it names another', () => {
    expect(parse({ ...ok, nice: 0 })).toEqual({ ...ok, nice: 0 });
    expect(parseUpgradeEnv(JSON.stringify(ok), 7)).toBeUndefined();
    expect(parseUpgradeEnv(undefined, 42)).toBeUndefined();
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
