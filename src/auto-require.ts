/**
 * `sd-handoff/auto` for CommonJS: `node --require sd-handoff/auto app.js`, or `require('sd-handoff/auto')` first
 * thing in the application. The same install as `node --import sd-handoff/auto` (./auto-install.ts), without its
 * top-level await, which require() of an ES module refuses (ERR_REQUIRE_ASYNC_MODULE).
 *
 * What differs from `--import`: the application starts loading while the Upgrader is being created (a few
 * milliseconds, longer when it connects to an instance to take over). Listens made meanwhile wait for it, so the
 * listeners are taken over exactly as with `--import`; {@link upgrader} is undefined until then, and
 * {@link getUpgrader} resolves with it. An Upgrader that cannot be created ends the process with the error, as a
 * failed `--import` does.
 */
import { startAuto } from './auto-install.js';
import type { Upgrader } from './upgrade/upgrader.js';

const run = startAuto();

/**
 * The Upgrader of this process once created, undefined before. A live binding: read it as
 * `require('sd-handoff/auto').upgrader` when needed, rather than destructuring it at load time.
 */
export let upgrader: Upgrader | undefined = run.upgrader;

/** Resolves with the Upgrader of this process once it is created (see the module comment). */
export function getUpgrader(): Promise<Upgrader> {
  return run.promise;
}

run.promise.then(
  (u) => {
    upgrader = u;
  },
  (err: unknown) => {
    // Nothing awaits a preload: rethrown outside the promise, the error ends the process with its stack.
    process.nextTick(() => {
      throw err;
    });
  },
);
