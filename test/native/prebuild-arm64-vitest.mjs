// What test/native/addon.test.ts takes from 'vitest', on node:test and @vitest/expect (plain JavaScript): vitest
// itself does not start under qemu-user with the arm64 node (its esbuild/rollup binaries are x64 ones), but the
// addon's cases can run unchanged there. See prebuild-arm64.test.ts.
import { after, afterEach as nodeAfterEach, before, describe as nodeDescribe, it as nodeIt } from 'node:test';
import { ASYMMETRIC_MATCHERS_OBJECT, JestAsymmetricMatchers, JestChaiExpect, JestExtend, chai } from '@vitest/expect';

chai.use(JestExtend);
chai.use(JestChaiExpect);
chai.use(JestAsymmetricMatchers);

/** vitest's expect(value): chai's with the Jest matchers, and expect.objectContaining & co. */
export const expect = (value, message) => chai.expect(value, message);
Object.assign(expect, chai.expect, globalThis[ASYMMETRIC_MATCHERS_OBJECT]);

export const describe = (name, fn) => nodeDescribe(name, fn);

const SKIPPED = Symbol('skipped');

/** it(name, fn): fn gets a context whose skip() ends the test as skipped, as vitest's does. */
export const it = (name, fn, timeout) =>
  nodeIt(name, { timeout: timeout ?? 120_000 }, async (t) => {
    const ctx = {
      skip: (note) => {
        t.skip(note);
        throw SKIPPED;
      },
    };
    try {
      await fn(ctx);
    } catch (err) {
      if (err !== SKIPPED) throw err;
    }
  });

/** beforeAll(fn): a function fn returns is the matching afterAll. */
export function beforeAll(fn) {
  let cleanup;
  before(async () => {
    const r = await fn();
    if (typeof r === 'function') cleanup = r;
  });
  after(async () => {
    await cleanup?.();
  });
}

export const afterEach = (fn) => nodeAfterEach(fn);
