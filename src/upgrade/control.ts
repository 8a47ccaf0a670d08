/**
 * The control socket: a unix stream socket (mode 0600) through which a command asks the running service for an
 * upgrade and waits for its result. This is what makes `systemctl reload` honest on systemd < 253: with
 * `ExecReload=sd-handoff upgrade`, the reload job lasts as long as the upgrade and fails when it fails.
 *
 * Protocol: one JSON request per line (`{"cmd":"upgrade"}` or `{"cmd":"status"}`), one JSON answer per line
 * (`{"ok":true,...}` or `{"ok":false,"code":"SDH_UPGRADE_FAILED","error":"..."}`). A peer is accepted only when its
 * SO_PEERCRED uid is root or the service's own uid.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { SdHandoffError, sdError, show } from '../errors.js';
import { native, type NativeAddon } from '../native.js';
import { lineReader } from './protocol.js';

/** What a command handler is given: the request, the peer, and the connection for commands that keep it. */
export interface ControlContext {
  msg: Record<string, unknown>;
  socket: net.Socket;
  /** The connection's fd, for sending fds with the addon (never mixed with `socket.write`). */
  fd: number;
  cred: { pid: number; uid: number; gid: number };
  /** Routes the connection's next messages to `fn` instead of the command table (a conversation, e.g. takeover). */
  route(fn: (msg: Record<string, unknown>) => void): void;
}

/** A handler answers with a record (sent as `{"ok":true,...}`), throws (sent as an error), or returns KEEP. */
type Handler = (ctx: ControlContext) => Promise<Record<string, unknown> | typeof KEEP>;

/** Returned by a handler that keeps the connection and answers on it itself. */
export const KEEP = Symbol('keep the connection');

export interface ControlServerOptions {
  /** The listening unix socket fd. */
  fd: number;
  addon: NativeAddon;
  /** The uid allowed besides root. */
  allowedUid: number;
  handlers: Record<string, Handler>;
  log: (message: string) => void;
  /** How long a connection may wait before sending its request (default 10 000 ms); then it is closed. */
  requestIdleMs?: number;
  /** Monotonic clock in ms for the refusal log's rate limit; injected by tests. */
  now?: () => number;
}

/** At most one "refused" log line per this many ms; the next one says how many were refused in between. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** Serves the control socket. */
export class ControlServer {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();

  constructor(private readonly options: ControlServerOptions) {
    // pauseOnConnect: nothing is read before the peer's credentials are checked.
    this.#server = net.createServer({ pauseOnConnect: true }, (socket) => this.#accept(socket));
    this.#server.on('error', (err) => options.log(`control socket error: ${err.message}`));
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ fd: this.options.fd }, 16, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
  }

  #accept(socket: net.Socket): void {
    socket.on('error', () => {});
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    let cred: { pid: number; uid: number; gid: number } | undefined;
    try {
      if (fd !== undefined) cred = this.options.addon.peerCred(fd);
    } catch {
      cred = undefined;
    }
    if (!cred || (cred.uid !== 0 && cred.uid !== this.options.allowedUid)) {
      this.#refuse(socket, cred);
      return;
    }
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    // Until its request has come, a connection may only wait so long: an idle peer must not hold an fd for good.
    socket.setTimeout(this.options.requestIdleMs ?? 10_000, () => socket.destroy());
    let route: ((msg: Record<string, unknown>) => void) | undefined;
    let dispatched = false;
    const peer = cred;
    const onMessage = (msg: unknown): void => {
      if (route) return route(msg as Record<string, unknown>);
      // One request per connection: what follows the first request on the same connection is not a command.
      if (dispatched) return;
      dispatched = true;
      socket.setTimeout(0);
      void this.#handle({ msg: msg as Record<string, unknown>, socket, fd: fd!, cred: peer, route: (fn) => (route = fn) });
    };
    const onBad = (line: string): void => {
      if (route || dispatched) return;
      dispatched = true;
      this.#answer(socket, { ok: false, code: 'SDH_PROTOCOL', error: `not a JSON request: ${show(line)}` });
    };
    socket.on('data', lineReader(onMessage, onBad, 4096));
    socket.resume();
  }

  #refused = { count: 0, loggedAt: -Infinity };

  /**
   * Answers a peer that may not control the service, then destroys the connection once the answer is written: the
   * socket is paused (nothing of the peer is read before its credentials are checked), so end() alone would wait
   * for an EOF that is never read and keep the fd open for good. The log line is rate-limited: any local user can
   * reach an abstract socket.
   */
  #refuse(socket: net.Socket, cred: { pid: number; uid: number } | undefined): void {
    const answer = { ok: false, code: 'SDH_PERMISSION', error: 'not allowed: only root and the service user may control it' };
    socket.write(`${JSON.stringify(answer)}\n`, () => socket.destroy());
    const now = this.options.now ? this.options.now() : performance.now();
    this.#refused.count++;
    if (now - this.#refused.loggedAt < REFUSAL_LOG_INTERVAL_MS) return;
    const more = this.#refused.count - 1;
    this.#refused = { count: 0, loggedAt: now };
    this.options.log(`control socket: refused a peer (${cred ? `pid ${cred.pid} uid ${cred.uid}` : 'no credentials'})${more > 0 ? `; ${more} more refused since the last report` : ''}`);
  }

  async #handle(ctx: ControlContext): Promise<void> {
    const { socket, msg } = ctx;
    const cmd = (msg as { cmd?: unknown } | null)?.cmd;
    const handler = typeof cmd === 'string' && Object.hasOwn(this.options.handlers, cmd) ? this.options.handlers[cmd] : undefined;
    if (!handler) {
      this.#answer(socket, { ok: false, code: 'SDH_PROTOCOL', error: `unknown command ${show(cmd)}; known: ${Object.keys(this.options.handlers).join(', ')}` });
      return;
    }
    try {
      const answer = await handler(ctx);
      if (answer !== KEEP) this.#answer(socket, { ok: true, ...answer });
    } catch (err) {
      const e = err as SdHandoffError;
      this.#answer(socket, { ok: false, code: e.code ?? 'SDH_SYSCALL', error: e.message });
    }
  }

  /** One request per connection: answer, then end it; a peer that does not close its side within 5 s is cut off. */
  #answer(socket: net.Socket, answer: Record<string, unknown>): void {
    if (!socket.writable) return;
    socket.end(`${JSON.stringify(answer)}\n`);
    socket.setTimeout(5000, () => socket.destroy());
  }

  #closed: Promise<void> | undefined;

  /**
   * Stops accepting now (the connections under way go on). Called before a handover: once the new process is told,
   * the next request must reach it, never this process, which is about to drain.
   */
  stopAccepting(): Promise<void> {
    this.#closed ??= new Promise((resolve) => this.#server.close(() => resolve()));
    return this.#closed;
  }

  /** Stops accepting; waits (bounded) for the connections under way, which are waiting for an answer. */
  close(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        for (const s of this.#sockets) s.destroy();
        resolve();
      }, timeoutMs);
      timer.unref();
      // Resolves once every connection has had its answer and closed (the one that asked for this upgrade too).
      void this.stopAccepting().then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/**
 * Connects to a control socket. '@name' is an abstract socket (as `run --control-socket @name` binds it): Node's
 * own connect gives an abstract address the full length of sun_path (trailing NULs included), which is another name
 * than the one bound with its exact length, so the addon connects and Node takes over the fd.
 */
export function connectControl(path: string, addon: () => NativeAddon = native): net.Socket {
  if (!path.startsWith('@')) return net.connect({ path });
  const a = addon();
  const fd = a.connectUnix(path);
  a.setNonblock(fd, true);
  return new net.Socket({ fd, readable: true, writable: true });
}

/** Options of {@link controlRequest}. */
export interface ControlRequestOptions {
  /** How long to wait for the answer (default 120 000 ms). */
  timeoutMs?: number;
}

/**
 * Sends one request to a service's control socket and resolves with its answer. Rejects with SDH_TIMEOUT, with
 * the connection error (code ENOENT / ECONNREFUSED / EACCES, path set), or with the error the service reported
 * (its code kept).
 */
export function controlRequest(path: string, cmd: string, options: ControlRequestOptions = {}): Promise<Record<string, unknown>> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    try {
      socket = connectControl(path);
    } catch (err) {
      reject(err);
      return;
    }
    const timer = setTimeout(() => {
      socket.destroy();
      reject(sdError('SDH_TIMEOUT', `no answer from the control socket ${path} within ${timeoutMs} ms`, { path, timeoutMs }));
    }, timeoutMs);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new SdHandoffError(`cannot reach the control socket`, {
          errno: typeof err.errno === 'number' ? Math.abs(err.errno) : undefined,
          syscall: err.syscall ?? 'connect',
          path,
          cause: err,
        }),
      );
    });
    socket.on(
      'data',
      lineReader(
        (msg) => {
          clearTimeout(timer);
          socket.end();
          const m = msg as { ok?: boolean; code?: string; error?: string };
          if (m.ok) resolve(msg as Record<string, unknown>);
          else reject(new SdHandoffError(m.error ?? 'the service reported an error', { code: (m.code as 'SDH_UPGRADE_FAILED') ?? 'SDH_PROTOCOL', path }));
        },
        (line) => {
          clearTimeout(timer);
          socket.destroy();
          reject(sdError('SDH_PROTOCOL', `the control socket answered ${show(line)}`, { path }));
        },
      ),
    );
    socket.once('end', () => {
      clearTimeout(timer);
      reject(sdError('SDH_PROTOCOL', `the control socket ${path} closed without answering`, { path }));
    });
    socket.write(`${JSON.stringify({ cmd })}\n`);
  });
}
