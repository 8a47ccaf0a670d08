/**
 * examples/hello-http run from an installed package: the shipped unit files, with ExecStart= pointing at a server
 * that imports `sd-handoff` from the project's node_modules and ExecReload= at the package's own `sd-handoff` bin
 * (node_modules/.bin), so nothing of the repository at /project is on the service's path.
 */
import { exampleUnit, UNIT } from '../hello.js';
import type { Container } from '../lab/index.js';

/** Where the server script comes from: the package when it ships the example, else a copy in the project. */
export async function placeServer(c: Container, project: string): Promise<{ server: string; shipped: boolean }> {
  const inPackage = `${project}/node_modules/sd-handoff/examples/hello-http/server.mjs`;
  if ((await c.exec(['test', '-f', inPackage])).code === 0) return { server: inPackage, shipped: true };
  const server = `${project}/server.mjs`;
  await c.exec(['cp', '/project/examples/hello-http/server.mjs', server], { check: true });
  return { server, shipped: false };
}

/**
 * The shipped hello-http.service (time limits scaled like every lab test's) with the repository's paths replaced
 * by the installed package's. Throws when a path of the repository is left: the shipped unit changed and this
 * test would silently run /project.
 */
export function installedUnit(project: string, server: string): string {
  const repoUnit = exampleUnit(UNIT);
  const unit = repoUnit
    .replace(/^ExecStart=(\S*node) \/project\/examples\/hello-http\/server\.mjs$/m, `ExecStart=$1 ${server}`)
    .replace(/^ExecReload=\S*node \/project\/dist\/cli\.js /m, `ExecReload=${project}/node_modules/.bin/sd-handoff `);
  const left = unit.split('\n').filter((l) => !l.startsWith('#') && l.includes('/project'));
  if (left.length > 0) throw new Error(`examples/hello-http/${UNIT} changed: these lines still point at the repository:\n${left.join('\n')}`);
  return unit;
}

/** The `.node` files process `pid` has mapped, from /proc/PID/maps in the container. */
export async function mappedAddons(c: Container, pid: number): Promise<string[]> {
  const maps = await c.readFile(`/proc/${pid}/maps`);
  const paths = maps.split('\n').map((l) => l.trim().split(/\s+/)[5] ?? '');
  return [...new Set(paths.filter((p) => p.endsWith('.node')))];
}
