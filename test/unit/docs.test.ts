/**
 * The API reference (docs/api/, TypeDoc + typedoc-plugin-markdown, `npm run docs`) covers every export of every
 * entry point with a doc comment, and is what the sources generate today.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const typedocBin = path.join(root, 'node_modules/typedoc/bin/typedoc');
const config = JSON.parse(readFileSync(path.join(root, 'typedoc.json'), 'utf8')) as { entryPoints: string[]; plugin: string[] };
const tmp = mkdtempSync(path.join(tmpdir(), 'sdh-docs-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs TypeDoc in `cwd` with `args`; its exit status and output (without colours). */
function typedoc(cwd: string, args: string[]): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [typedocBin, ...args], { cwd, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, timeout: 240_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}`.replace(/\x1b\[[0-9;]*m/g, '') };
}

/** Every file under `dir`, relative, sorted. */
function files(dir: string, sub = ''): string[] {
  return readdirSync(path.join(dir, sub))
    .flatMap((name) => (statSync(path.join(dir, sub, name)).isDirectory() ? files(dir, path.join(sub, name)) : [path.join(sub, name)]))
    .sort();
}

describe('API reference (docs/api)', () => {
  it('every entry point of package.json "exports" is documented', () => {
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { exports: Record<string, unknown> };
    const entries = Object.keys(pkg.exports).filter((k) => k !== './package.json');
    const modules = entries.map((k) => (k === '.' ? 'src/index.ts' : `src/${k.slice(2)}.ts`));
    expect(config.entryPoints.sort()).toEqual(modules.sort());
    const index = readFileSync(path.join(root, 'docs/api/README.md'), 'utf8');
    for (const k of entries) expect(index).toContain(`[${k === '.' ? 'sd-handoff' : `sd-handoff/${k.slice(2)}`}]`);
  });

  it('TypeDoc finds no undocumented export, broken link or unexported type, and docs/api is up to date (else: npm run docs)', () => {
    const out = path.join(tmp, 'api');
    const r = typedoc(root, ['--out', out]);
    expect(r.output.split('\n').filter((l) => /\[(warning|error)\]/.test(l))).toEqual([]);
    expect(r.status).toBe(0);
    const committed = path.join(root, 'docs/api');
    expect(files(committed)).toEqual(files(out));
    const stale = files(out).filter((f) => readFileSync(path.join(out, f), 'utf8') !== readFileSync(path.join(committed, f), 'utf8'));
    expect(stale, 'docs/api differs from what the sources generate: run `npm run docs`').toEqual([]);
  }, 240_000);

  it('the same settings fail on an export without a doc comment', () => {
    const src = mkdtempSync(path.join(tmp, 'undoc-'));
    writeFileSync(path.join(src, 'x.ts'), '/** Documented. */\nexport function documented(): void {}\nexport function forgotten(): void {}\n');
    writeFileSync(path.join(src, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, module: 'NodeNext', target: 'ES2022', skipLibCheck: true }, files: ['x.ts'] }));
    // TypeDoc reads `tsconfig` from the options file before the command line: a copy of typedoc.json pointed at x.ts.
    const plugin = config.plugin.map((p) => (p.startsWith('.') ? path.join(root, p) : p));
    writeFileSync(path.join(src, 'typedoc.json'), JSON.stringify({ ...config, entryPoints: ['x.ts'], tsconfig: 'tsconfig.json', out: 'out', plugin, name: 'x' }));
    const r = typedoc(src, ['--options', 'typedoc.json']);
    expect(r.output).toMatch(/\[warning\] forgotten \(CallSignature\), defined in .*x\.ts, does not have any documentation/);
    expect(r.output).not.toMatch(/documented \(CallSignature\)/);
    expect(r.status).not.toBe(0);
  }, 240_000);
});

/** GitHub's anchor for a heading: lowercased, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

describe('links between the documents', () => {
  const documents = ['README.md', ...readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

  it.each(documents)('%s: every relative link names a file of the repository (and a heading of it, when it has #)', (doc) => {
    const text = readFileSync(path.join(root, doc), 'utf8').replace(/^```[\s\S]*?^```$/gm, '');
    const broken: string[] = [];
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target!)) continue;
      const [file, anchor] = target!.split('#') as [string, string | undefined];
      const full = file === '' ? path.join(root, doc) : path.resolve(path.dirname(path.join(root, doc)), file);
      let content: string | undefined;
      try {
        content = statSync(full).isDirectory() ? '' : readFileSync(full, 'utf8');
      } catch {
        broken.push(target!);
        continue;
      }
      if (anchor !== undefined && full.endsWith('.md')) {
        const anchors = [...content.replace(/^```[\s\S]*?^```$/gm, '').matchAll(/^#+ (.+)$/gm)].map((m) => slug(m[1]!));
        if (!anchors.includes(anchor)) broken.push(target!);
      }
    }
    expect(broken).toEqual([]);
  });
});
