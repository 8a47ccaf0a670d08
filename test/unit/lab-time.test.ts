import { describe, expect, it } from 'vitest';

import { timeFactor } from '../integration/lab/config.js';

// SDH_TIME_FACTOR stretches every deadline of the integration tests (a slow VM sets 10): a typo must stop the run
// with the variable and the value, not silently test with factor 1 or NaN deadlines.
describe('SDH_TIME_FACTOR', () => {
  it('is 1 when unset or empty, and the number otherwise', () => {
    expect(timeFactor({})).toBe(1);
    expect(timeFactor({ SDH_TIME_FACTOR: ' ' })).toBe(1);
    expect(timeFactor({ SDH_TIME_FACTOR: '10' })).toBe(10);
    expect(timeFactor({ SDH_TIME_FACTOR: '1.5' })).toBe(1.5);
  });

  it.each(['abc', '0', '0.5', '-2', 'Infinity', '1000'])('rejects %j, naming the variable and the value', (v) => {
    expect(() => timeFactor({ SDH_TIME_FACTOR: v })).toThrow(`SDH_TIME_FACTOR="${v}" is not a number from 1 to 100`);
  });
});
