// Module resolution for prebuild-arm64-run.mjs: 'vitest' is the node:test shim, and the repository's src/*.js
// (TypeScript, run by vitest through esbuild) is the compiled dist/*.js, the package as users get it.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.resolve(here, '../../src');
const dist = path.resolve(here, '../../dist');

export async function resolve(specifier, context, next) {
  if (specifier === 'vitest') return { url: pathToFileURL(path.join(here, 'prebuild-arm64-vitest.mjs')).href, shortCircuit: true };
  if (context.parentURL?.startsWith('file:') && specifier.startsWith('.')) {
    const target = path.resolve(path.dirname(fileURLToPath(context.parentURL)), specifier);
    if (target.startsWith(`${src}${path.sep}`)) {
      return { url: pathToFileURL(path.join(dist, path.relative(src, target))).href, shortCircuit: true };
    }
  }
  return next(specifier, context);
}
