/**
 * `--ready port`: the new instance is ready once IT has accepted a connection on the listening socket.
 *
 * "The port answers" says nothing here: `run` holds the listening socket itself, so the kernel completes a TCP
 * handshake into the backlog even when no program accepts, and during a reload the old instance accepts on the
 * very same socket. What can be told apart is WHO accepted: a probe connection from `run` is looked up in
 * /proc/net/tcp and /proc/net/tcp6 (local port = the listener's, remote port = the probe's); once a process has
 * accepted it, the entry carries the socket's inode, and the process holding `socket:[INODE]` among its fds is the
 * acceptor. The new instance (its pid or a descendant, found through /proc/PID/task/TID/children) -> ready. Another
 * process (the old instance) -> the probe is closed before sending a byte (a server reads end-of-file, as from a
 * port scanner) and another one is made.
 *
 * What it guarantees: the new program has called accept() on the listener, so it is serving that socket. What it
 * does not: that it answers requests correctly (it may accept and then fail), that every listener is served (only
 * the first TCP one is probed), or anything for unix or UDP listeners (`--ready port` refuses them). A program that
 * accepts and closes in the same instant may be missed once; the probe is then repeated.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';

/** The inode of the accepted end of the connection `listenPort` <- `probePort`, 0 while it waits in the backlog, undefined when there is no such entry. */
export function acceptedInode(procNetTcp: string, listenPort: number, probePort: number): number | undefined {
  const local = `:${listenPort.toString(16).toUpperCase().padStart(4, '0')}`;
  const remote = `:${probePort.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of procNetTcp.split('\n')) {
    const f = line.trim().split(/\s+/);
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    if (f.length < 10 || !f[1]!.endsWith(local) || !f[2]!.endsWith(remote)) continue;
    // 01 ESTABLISHED, 08 CLOSE_WAIT (we closed first): the server's end of our probe.
    if (f[3] !== '01' && f[3] !== '08') continue;
    return Number(f[9]);
  }
  return undefined;
}

function readOr(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** `pid` and all its descendants (through /proc/PID/task/TID/children). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length && out.length < 4096) {
    const p = queue.shift()!;
    out.push(p);
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      for (const c of readOr(`/proc/${p}/task/${t}/children`).trim().split(/\s+/)) if (/^\d+$/.test(c)) queue.push(Number(c));
    }
  }
  return out;
}

/** True when one of `pids` holds `socket:[inode]`. */
export function holdsSocket(pids: readonly number[], inode: number): boolean {
  const target = `socket:[${inode}]`;
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === target) return true;
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return false;
}

/** Where to connect to reach a listener bound to `address` (a wildcard address means loopback). */
export function probeHost(address: string | undefined, family: string | undefined): string {
  if (family === 'inet6') return address === undefined || address === '::' ? '::1' : address;
  return address === undefined || address === '0.0.0.0' ? '127.0.0.1' : address;
}

export interface PortProbeOptions {
  host: string;
  port: number;
  /** The instance being started: its pid (the tree below it counts too). */
  pid: number;
  /** Stops the probing (the instance exited, timed out, or `run` is stopping). */
  signal: AbortSignal;
  /** Pause between two probes and between two looks at /proc (default 25 ms). */
  everyMs?: number;
}

/** Resolves once the instance `pid` accepted a probe connection; rejects with the abort reason when aborted. */
export async function waitAccepted(o: PortProbeOptions): Promise<{ probes: number }> {
  const every = o.everyMs ?? 25;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  for (let probes = 1; ; probes++) {
    if (o.signal.aborted) throw o.signal.reason;
    const socket = net.connect({ host: o.host, port: o.port });
    socket.on('error', () => {});
    let closed = false;
    socket.once('close', () => (closed = true));
    const connected = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true));
      socket.once('close', () => resolve(false));
    });
    try {
      if (!connected) {
        await sleep(every * 4);
        continue;
      }
      const probePort = socket.localPort!;
      while (!o.signal.aborted && !closed) {
        const table = readOr('/proc/net/tcp') + readOr('/proc/net/tcp6');
        const inode = acceptedInode(table, o.port, probePort);
        if (inode === undefined) break; // gone: the server closed it; probe again
        if (inode !== 0) {
          if (holdsSocket(processTree(o.pid), inode)) return { probes };
          break; // accepted by another process (the old instance)
        }
        await sleep(every);
      }
    } finally {
      socket.destroy();
    }
    await sleep(every);
  }
}
