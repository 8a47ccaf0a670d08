/**
 * Fresh consumer projects in a lab container, as a user sets them up: ESM (`"type": "module"`, `import`), CommonJS
 * (`require`), TypeScript (`module: nodenext`, `.mts` and `.cts`, compiled by the project's own tsc), each with
 * `npm install <tarball>` run with and without install scripts. Each runs a probe that loads the addon for real
 * and prints what a user would check: the addon loads, `notify.ready()` is false outside systemd, the entry points
 * resolve, and which `.node` file the process mapped.
 */
import type { Container, ExecResult } from '../lab/index.js';

/** Where everything of the install test lives in the container (its tmpfs overlay: gone when it stops). */
export const WORK = '/srv/sdh-install';
export const CACHE = `${WORK}/npm-cache`;
/** npm's place in an official Node install, where the host's npm is bind-mounted. */
export const NPM_DIR = '/usr/local/lib/node_modules/npm';

export type Kind = 'esm' | 'cjs' | 'ts';

export interface Variant {
  kind: Kind;
  /** false: `npm install --ignore-scripts` (npm's `--ignore-scripts`, pnpm 10's default, npm 11's allowScripts). */
  scripts: boolean;
  /** The project directory in the container. */
  dir: string;
  /** The programs to run after the install (and the build), relative to `dir`. */
  programs: string[];
}

export const VARIANTS: readonly Variant[] = (['esm', 'cjs', 'ts'] as const).flatMap((kind) =>
  [true, false].map((scripts) => ({
    kind,
    scripts,
    dir: `${WORK}/${kind}-${scripts ? 'scripts' : 'no-scripts'}`,
    programs: kind === 'ts' ? ['out/main.mjs', 'out/main.cjs'] : ['main.js'],
  })),
);

export function variantName(v: Variant): string {
  const what = { esm: 'ESM project (import)', cjs: 'CommonJS project (require)', ts: 'TypeScript project (nodenext, .mts + .cts)' }[v.kind];
  return `${what}, npm install ${v.scripts ? 'with install scripts' : '--ignore-scripts'}`;
}

/** What every probe prints, as JSON on one line. */
export interface ProbeReport {
  /** process.version of the node that ran it. */
  node: string;
  native: boolean;
  ready: boolean;
  entry: string;
  subpaths: string[];
  addons: string[];
}

const SUBPATHS = `['sd-handoff/pino', 'sd-handoff/auto']`;
/** The `.node` files this process has mapped: the addon that really got loaded, wherever the loader found it. */
const ADDONS = `[...new Set(readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.trim().split(/\\s+/)[5] ?? '').filter((p) => p.endsWith('.node')))]`;
/** Compiles only if the package's types are real: an `any` would make the directive unused, which tsc reports. */
const TYPED = `export const typesAreReal = (): void => {\n  // @ts-expect-error nativeAvailable() takes no argument\n  nativeAvailable(1);\n  // @ts-expect-error notify.ready() takes a string\n  notify.ready(2);\n};\n`;

function probe(style: 'import' | 'require', typed = false): string {
  const head =
    style === 'import'
      ? `import { readFileSync } from 'node:fs';\nimport { nativeAvailable, notify } from 'sd-handoff';\n`
      : typed
        ? `import { readFileSync } from 'node:fs';\nimport { nativeAvailable, notify } from 'sd-handoff';\n`
        : `const { readFileSync } = require('node:fs');\nconst { nativeAvailable, notify } = require('sd-handoff');\n`;
  const resolve = style === 'import' ? 'import.meta.resolve' : 'require.resolve';
  const body = [
    `const native${typed ? ': boolean' : ''} = nativeAvailable();`,
    `const report = {`,
    `  node: process.version,`,
    `  native,`,
    `  ready: notify.ready('install test'),`,
    `  entry: ${resolve}('sd-handoff'),`,
    `  subpaths: ${SUBPATHS}.map((s) => ${resolve}(s)),`,
    `  addons: ${ADDONS},`,
    `};`,
    `console.log(JSON.stringify(report));`,
  ].join('\n');
  return `${head}${typed ? TYPED : ''}${body}\n`;
}

const TSCONFIG = {
  compilerOptions: { module: 'nodenext', target: 'es2022', strict: true, outDir: 'out', rootDir: 'src', types: ['node'], skipLibCheck: true },
  include: ['src'],
};

/** The files of a fresh project of `kind` (package.json and sources). */
export function projectFiles(kind: Kind): Record<string, string> {
  const pkg = (extra: object) => `${JSON.stringify({ name: `sdh-consumer-${kind}`, version: '1.0.0', private: true, ...extra }, null, 2)}\n`;
  switch (kind) {
    case 'esm':
      return { 'package.json': pkg({ type: 'module' }), 'main.js': probe('import') };
    case 'cjs':
      return { 'package.json': pkg({}), 'main.js': probe('require') };
    case 'ts':
      return {
        'package.json': pkg({}),
        'tsconfig.json': `${JSON.stringify(TSCONFIG, null, 2)}\n`,
        'src/main.mts': probe('import', true),
        'src/main.cts': probe('require', true),
      };
  }
}

/** The container's npm: the host's, run by the host's node, offline, from the copied cache, with a HOME of its own. */
export function npm(c: Container, dir: string, args: string[], registry: string): Promise<ExecResult> {
  const flags = ['--offline', `--cache=${CACHE}`, `--registry=${registry}`, '--no-audit', '--no-fund', '--no-update-notifier', '--foreground-scripts'];
  return c.exec(['npm', ...args, ...flags], { cwd: dir, env: { HOME: `${WORK}/home` }, timeoutMs: 300_000 });
}

/** Writes the project's files, then `npm install <tarball> [extra]` (scripts on or off). */
export async function installProject(c: Container, v: Variant, tgz: string, extra: readonly string[], registry: string): Promise<ExecResult> {
  for (const [name, text] of Object.entries(projectFiles(v.kind))) await c.writeFile(`${v.dir}/${name}`, text);
  const args = ['install', ...(v.scripts ? [] : ['--ignore-scripts']), tgz, ...(v.kind === 'ts' ? extra : [])];
  return npm(c, v.dir, args, registry);
}

/** Runs one of the variant's programs with `node` (default the container's) and parses its report. */
export async function runProbe(c: Container, v: Variant, program: string, node = '/usr/local/bin/node'): Promise<{ result: ExecResult; report?: ProbeReport }> {
  const result = await c.exec([node, program], { cwd: v.dir, timeoutMs: 30_000 });
  const line = result.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return { result, report: JSON.parse(line) as ProbeReport };
  } catch {
    return { result };
  }
}

/**
 * Why the addon did not load in the project at `dir`, in the loader's own words (it lists every file tried and
 * what to install): asked of the package's internal module by path, since no public export throws it.
 */
export async function whyNoAddon(c: Container, dir: string): Promise<string> {
  const script = `import(process.argv[1]).then((m) => { try { m.native(); console.log('the addon loads on a second try'); } catch (e) { console.log(e.message); } }, (e) => console.log(\`no loader to ask: \${e.message}\`))`;
  const r = await c.exec(['/usr/local/bin/node', '-e', script, `${dir}/node_modules/sd-handoff/dist/native.js`], { timeoutMs: 30_000 });
  return `${r.stdout}${r.stderr}`.trim();
}

/** The last lines of a command's output, for failure messages. */
export function tail(r: ExecResult, lines = 25): string {
  return `exit ${r.code}${r.timedOut ? ' (timed out)' : ''}\n--- stderr ---\n${r.stderr.trim().split('\n').slice(-lines).join('\n')}\n--- stdout ---\n${r.stdout.trim().split('\n').slice(-lines).join('\n')}`;
}
