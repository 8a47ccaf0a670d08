// Runs test/native/addon.test.ts with node:test (node >= 22.18 / 23.6 strips its types) against dist/ and the
// addon the loader picks: with the arm64 node under qemu-user, prebuilds/linux-arm64. Prints, on stderr, the arch and
// the file loaded. Driven by prebuild-arm64.test.ts.
import { register } from 'node:module';
import { after } from 'node:test';

register('./prebuild-arm64-hooks.mjs', import.meta.url);
const { nativeFile } = await import('../../dist/native.js');
after(() => {
  process.stderr.write(`SDH_ARCH=${process.arch}\nSDH_NATIVE_FILE=${nativeFile()}\n`);
});
await import('./addon.test.ts');
