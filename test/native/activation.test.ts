/**
 * Socket activation with real fds in a real child, started the way systemd starts a service: fds from 3,
 * LISTEN_PID equal to the child's pid (set by `sh -c 'LISTEN_PID=$$ exec ...'`), names in LISTEN_FDNAMES.
 */
import { execFileSync, spawn, type StdioOptions } from 'node:child_process';
import { closeSync, openSync, renameSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const CHILD = path.join(import.meta.dirname, '../fixtures/activation-child.mjs');
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

interface Run {
  lines: Array<Record<string, any>>;
  code: number | null;
  pid: number;
}

/** Starts the child with `fds` at 3, 4, ... and the given LISTEN_* variables; resolves on exit or when `until` matches. */
function run(args: string[], fds: number[], env: Record<string, string>, opts: { setPid?: boolean; until?: (l: Record<string, any>) => boolean } = {}): Promise<Run> {
  const setPid = opts.setPid ?? true;
  const stdio: StdioOptions = ['ignore', 'pipe', 'inherit', ...fds];
  const cmd = setPid ? ['/bin/sh', ['-c', 'LISTEN_PID=$$ exec "$0" "$@"', process.execPath, CHILD, ...args]] as const : [process.execPath, [CHILD, ...args]] as const;
  const child = spawn(cmd[0], [...cmd[1]], { stdio, env: { PATH: process.env.PATH, ...env } });
  cleanups.push(() => child.kill('SIGKILL'));
  return new Promise((resolve) => {
    const lines: Array<Record<string, any>> = [];
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        lines.push(l);
        if (opts.until?.(l)) resolve({ lines, code: null, pid: child.pid! });
      }
    });
    child.on('exit', (code) => resolve({ lines, code, pid: child.pid! }));
  });
}

async function listening(server: net.Server, options: net.ListenOptions): Promise<number> {
  await new Promise<void>((r) => server.listen(options, () => r()));
  cleanups.push(() => server.close());
  return (server as unknown as { _handle: { fd: number } })._handle.fd;
}

function ask(opts: net.NetConnectOpts): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    net.connect(opts).on('data', (d) => (data += d)).on('end', () => resolve(data)).on('error', reject);
  });
}

describe('socket activation in a real child', () => {
  it('takes a TCP and a unix listener by name, describes them, serves connections on both, unsets the variables', async () => {
    const tcp = net.createServer();
    const tcpFd = await listening(tcp, { port: 0, host: '127.0.0.1' });
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const unix = net.createServer();
    // Bound at one name and renamed: Node unlinks the name it bound when our server closes, which then is gone.
    const boundPath = path.join(dir, 'bound.sock');
    const unixPath = path.join(dir, 'admin.sock');
    const unixFd = await listening(unix, { path: boundPath });
    renameSync(boundPath, unixPath);
    // The parent stops accepting: only the child answers from now on (the sockets stay open in the child).
    const listed = await run(['list'], [tcpFd, unixFd], { LISTEN_FDS: '2', LISTEN_FDNAMES: 'web:admin' });
    expect(listed.code).toBe(0);
    const { fds, env } = listed.lines[0]!;
    expect(env).toEqual({});
    expect(fds.map((f: any) => [f.fd, f.name, f.info.kind, f.info.type, f.info.family, f.info.listening])).toEqual([
      [3, 'web', 'socket', 'stream', 'inet', true],
      [4, 'admin', 'socket', 'stream', 'unix', true],
    ]);
    expect(fds[0].info.port).toBe((tcp.address() as net.AddressInfo).port);
    expect(fds[1].info.address).toBe(boundPath);

    const served = run(['serve'], [tcpFd, unixFd], { LISTEN_FDS: '2', LISTEN_FDNAMES: 'web:admin' }, { until: (l) => 'ready' in l });
    const r = await served;
    expect(r.lines[0]).toEqual({ ready: ['web', 'admin'] });
    // Our servers stop accepting: from now on only the child can answer, on both sockets.
    await new Promise((res) => tcp.close(res));
    await new Promise((res) => unix.close(res));
    expect(await ask({ host: '127.0.0.1', port: fds[0].info.port as number })).toBe(`web ${r.pid}\n`);
    expect(await ask({ path: unixPath })).toBe(`admin ${r.pid}\n`);
  });

  it('LISTEN_PID of another process: no fds, no error', async () => {
    const r = await run(['list'], [], { LISTEN_PID: '1', LISTEN_FDS: '1' }, { setPid: false });
    expect(r.code).toBe(0);
    expect(r.lines[0]).toEqual({ fds: [], env: {} });
  });

  it('LISTEN_FDS=1 with nothing passed: fd 3 is Node\'s own epoll fd, detected and refused, not listened on', async () => {
    const r = await run(['list'], [], { LISTEN_FDS: '1' });
    expect(r.code).toBe(1);
    expect(r.lines[0]!.error.code).toBe('SDH_BAD_FD');
    expect(r.lines[0]!.error.message).toBe(
      "LISTEN_FDS=1 but fd 3 is Node's own epoll fd (anon_inode:[eventpoll]), not a passed fd: was LISTEN_FDS set without passing fds?",
    );
  });

  it('a regular file passed as fd 3 is listed as a file, and serving it is a clear error', async () => {
    const fd = openSync('/etc/hostname', 'r');
    cleanups.push(() => closeSync(fd));
    const listed = await run(['list'], [fd], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'oops' });
    expect(listed.lines[0]!.fds[0].info.kind).toBe('file');
    const served = await run(['serve'], [fd], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'oops' });
    expect(served.code).toBe(1);
    expect(served.lines[0]!.error).toEqual({ code: 'SDH_BAD_FD', message: 'fd 3 is a regular file, not a listening stream socket' });
  });

  it('names count mismatch is an error naming both counts', async () => {
    const tcp = net.createServer();
    const fd = await listening(tcp, { port: 0, host: '127.0.0.1' });
    const r = await run(['list'], [fd], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'a:b' });
    expect(r.lines[0]!.error).toEqual({ code: 'SDH_FDNAMES_MISMATCH', message: 'LISTEN_FDNAMES has 2 names for 1 fds (LISTEN_FDNAMES="a:b")' });
  });

  it('keeps the backlog asked for instead of Node\'s 511', async () => {
    const tcp = net.createServer();
    const fd = await listening(tcp, { port: 0, host: '127.0.0.1', backlog: 7 });
    const r = await run(['serve'], [fd], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'web' }, { until: (l) => 'ready' in l });
    // ss shows a listening socket's backlog as its Send-Q.
    const port = (tcp.address() as net.AddressInfo).port;
    const out = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
    expect(out.trim().split(/\s+/)[2]).toBe('64');
    expect(r.lines[0]).toEqual({ ready: ['web'] });
  });
});
