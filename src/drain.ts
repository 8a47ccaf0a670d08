/**
 * Closing HTTP/1.1 and raw TCP servers without a client-visible reset, for a process that has handed its
 * listeners to its successor and is about to exit.
 *
 * The listening socket is shared with the new process (same open file description, inherited through
 * `LISTEN_FDS` or spawn `stdio`): closing our handle only stops OUR `accept()`; connections still queued in
 * the kernel backlog are accepted by the successor. What remains is the connections this process already
 * accepted. An HTTP/1.1 keep-alive connection can only be closed without a failure by the server saying
 * `Connection: close` on a response; an idle keep-alive connection has no way to be told "go away", and
 * closing it races a client that has just picked it from its pool and sent a request: the client sees
 * `ECONNRESET` / "socket hang up". That is exactly what `server.close()` does in Node 19+ (it calls
 * `closeIdleConnections()` at once; measured 5 to 19 failed requests per handover here, see docs/design.md).
 *
 * So {@link drain}:
 * 1. stops the listener without touching idle connections;
 * 2. answers every request still to be answered with `Connection: close`, so a busy connection ends cleanly
 *    after its next response, closed by Node itself once that response is written;
 * 3. closes a connection that stays idle for `graceMs` during the drain, with a FIN (`socket.end()`), never
 *    while request bytes have arrived unanswered, and keeps reading afterwards so the kernel never answers
 *    unread data with a RST;
 * 4. destroys whatever is left at `timeoutMs`.
 *
 * {@link trackConnections} must be attached before the server accepts its first connection: Node keeps no public
 * list of a server's sockets, and drain needs to know every connection and whether it has a request in flight.
 * Raw `net.Server`s use {@link drainNet}: without a protocol, "idle" means nothing, so it waits for peers to end.
 *
 * HTTP/2, and connections taken over by an `'upgrade'` handler (WebSocket), are not spoken to: they are left to
 * the application (see `onUpgraded` in {@link DrainOptions}) and destroyed at `timeoutMs`.
 */
import http from 'node:http';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { sdError, show } from './errors.js';

/** Options of {@link drain}. */
export interface DrainOptions {
  /**
   * How long a connection may stay idle, counted from the later of drain start and its last response, before it is
   * closed. A busy keep-alive client sends its next request within this time and is told `Connection: close`
   * instead of racing a close. Default 1000 ms. A value >= the server's `keepAliveTimeout` adds no race that Node
   * does not already have in steady state (Node closes idle sockets at `keepAliveTimeout` anyway).
   */
  graceMs?: number;
  /** Connections still open after this long are destroyed. Default 10000 ms. */
  timeoutMs?: number;
  /** Called once per connection that an `'upgrade'` handler took over (WebSocket...), so the application can end it. */
  onUpgraded?: (socket: net.Socket) => void;
  /** Monotonic clock in ms; injected by tests. Default `performance.now`. */
  now?: () => number;
}

/** What {@link drain} did. */
export interface DrainReport {
  /** Connections open when the drain started. */
  connections: number;
  /** Connections closed after a response carrying `Connection: close`. */
  closedAfterResponse: number;
  /** Connections that were idle for `graceMs` and were closed by us with a FIN. */
  closedIdle: number;
  /** Connections closed by the client or by Node's own timeouts (`keepAliveTimeout`, `requestTimeout`). */
  closedOther: number;
  /** Connections destroyed at `timeoutMs`. */
  forced: number;
  /** Requests whose response finished during the drain. */
  requests: number;
  /**
   * Requests that arrived on a connection after we had closed it as idle: the inherent HTTP/1.1 race that a
   * longer `graceMs` makes rarer. Their clients saw a failure.
   */
  lateRequests: number;
  /** Time from the call to the last connection closing (or to `timeoutMs`). */
  durationMs: number;
}

/** Options of {@link drainNet}. */
export interface DrainNetOptions {
  /** Connections still open after this long are destroyed. Default 10000 ms. */
  timeoutMs?: number;
  /**
   * Called once per open connection when the drain starts, so the application can tell its peer to go away in its
   * own protocol (or simply `socket.end()` one it knows to be idle).
   */
  onDrain?: (socket: net.Socket) => void;
  /** Monotonic clock in ms; injected by tests. Default `performance.now`. */
  now?: () => number;
}

/** What {@link drainNet} did. */
export interface DrainNetReport {
  /** Connections open when the drain started. */
  connections: number;
  /** Connections that ended before `timeoutMs`. */
  closed: number;
  /** Connections destroyed at `timeoutMs`. */
  forced: number;
  /** Time from the call to the last connection closing (or to `timeoutMs`). */
  durationMs: number;
}

const DEFAULT_GRACE_MS = 1000;
const DEFAULT_TIMEOUT_MS = 10_000;

/** One HTTP connection as drain sees it. Keyed by the socket the HTTP layer uses (the TLS socket for https). */
interface Conn {
  socket: net.Socket;
  /** Responses not yet finished, in arrival order (more than one only with pipelining). */
  responses: Set<http.ServerResponse>;
  /** Clock value when the last response finished (or the connection was accepted). */
  idleSince: number;
  /** `socket.bytesRead` at that moment: more bytes since means a request is arriving, so the connection is not idle. */
  bytesReadAtIdle: number;
  /** Whether the last finished response told the client `Connection: close`. */
  lastSaidClose: boolean;
  /** We ended it as idle. */
  endedIdle: boolean;
  /** We destroyed it at timeout. */
  forced: boolean;
  upgraded: boolean;
  graceTimer: NodeJS.Timeout | undefined;
}

interface HttpTracker {
  kind: 'http';
  conns: Map<net.Socket, Conn>;
  /** Raw TCP sockets (for https, also those still in their handshake): the drain ends when none is left. */
  raw: Set<net.Socket>;
  drain: HttpDrain | undefined;
  /** Called after the last raw socket closed. */
  onEmpty: (() => void) | undefined;
}

interface HttpDrain {
  started: number;
  graceMs: number;
  now: () => number;
  onUpgraded: ((socket: net.Socket) => void) | undefined;
  report: DrainReport;
  promise: Promise<DrainReport>;
}

interface NetTracker {
  kind: 'net';
  sockets: Set<net.Socket>;
  drain: Promise<DrainNetReport> | undefined;
  onEmpty: (() => void) | undefined;
}

const trackers = new WeakMap<net.Server, HttpTracker | NetTracker>();

function checkMs(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw sdError('SDH_INVALID_OPTION', `${name} must be a finite number of milliseconds >= 0, got ${show(value)}`, {
      option: name,
      value,
    });
  }
  return value;
}

/**
 * Start tracking the connections of `server`. Call it when the server is created, before `listen()`: connections
 * accepted earlier are unknown to it and could only be destroyed by Node, not drained. Calling it again is a no-op.
 * An `http.Server` or `https.Server` gets HTTP tracking (for {@link drain}); any other `net.Server` raw tracking
 * (for {@link drainNet}). Returns the server.
 */
export function trackConnections<S extends net.Server>(server: S): S {
  if (trackers.has(server)) return server;
  // `_connections` is net.Server's own count of accepted sockets; a tracker attached after accepts would
  // silently miss them, which is worse than an error.
  const accepted = (server as unknown as { _connections?: number })._connections ?? 0;
  if (accepted > 0) {
    throw sdError(
      'SDH_INVALID_OPTION',
      `trackConnections(server) must be called before the server accepts connections; it already has ${accepted}`,
      { connections: accepted },
    );
  }
  if (server instanceof http.Server || isHttpsServer(server)) trackHttp(server as unknown as http.Server);
  else trackNet(server);
  return server;
}

// https.Server is a tls.Server that also emits 'request'; checking for the HTTP request machinery avoids importing
// node:https just for instanceof.
function isHttpsServer(server: net.Server): boolean {
  return server instanceof tls.Server && typeof (server as unknown as http.Server).closeIdleConnections === 'function';
}

function trackNet(server: net.Server): void {
  const tracker: NetTracker = { kind: 'net', sockets: new Set(), drain: undefined, onEmpty: undefined };
  trackers.set(server, tracker);
  server.on('connection', (socket: net.Socket) => {
    tracker.sockets.add(socket);
    socket.once('close', () => {
      tracker.sockets.delete(socket);
      if (tracker.sockets.size === 0) tracker.onEmpty?.();
    });
  });
}

function trackHttp(server: http.Server): void {
  const tracker: HttpTracker = { kind: 'http', conns: new Map(), raw: new Set(), drain: undefined, onEmpty: undefined };
  trackers.set(server, tracker);
  const secure = server instanceof tls.Server;
  const clock = (): number => tracker.drain?.now() ?? performance.now();

  server.on('connection', (socket: net.Socket) => {
    tracker.raw.add(socket);
    socket.once('close', () => {
      tracker.raw.delete(socket);
      if (tracker.raw.size === 0) tracker.onEmpty?.();
    });
    if (!secure) addConn(socket);
  });
  // For https the HTTP layer reads from the TLS socket, which exists once the handshake is done.
  if (secure) server.on('secureConnection', (socket: net.Socket) => addConn(socket));

  function addConn(socket: net.Socket): void {
    const conn: Conn = {
      socket,
      responses: new Set(),
      idleSince: clock(),
      bytesReadAtIdle: socket.bytesRead,
      lastSaidClose: false,
      endedIdle: false,
      forced: false,
      upgraded: false,
      graceTimer: undefined,
    };
    tracker.conns.set(socket, conn);
    socket.once('close', () => {
      tracker.conns.delete(socket);
      if (conn.graceTimer) clearTimeout(conn.graceTimer);
      const d = tracker.drain;
      if (!d) return;
      if (conn.forced) return;
      else if (conn.endedIdle) d.report.closedIdle++;
      else if (conn.lastSaidClose && conn.responses.size === 0) d.report.closedAfterResponse++;
      else d.report.closedOther++;
    });
    // A connection accepted in the same tick the drain started is treated like any idle one.
    if (tracker.drain) scheduleIdleClose(tracker, conn);
  }

  // prependListener: our hook must run before the application's handler, which may send headers synchronously;
  // after that `Connection: close` can no longer be said.
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const conn = tracker.conns.get(req.socket);
    if (!conn) return;
    if (conn.graceTimer) {
      clearTimeout(conn.graceTimer);
      conn.graceTimer = undefined;
    }
    conn.responses.add(res);
    const d = tracker.drain;
    if (d) {
      if (conn.endedIdle) d.report.lateRequests++;
      sayClose(res);
    }
    // 'close' fires for finished and for aborted responses alike; 'finish' would miss the aborted ones.
    res.once('close', () => {
      conn.responses.delete(res);
      conn.lastSaidClose = !res.shouldKeepAlive;
      if (tracker.drain && res.writableFinished) tracker.drain.report.requests++;
      if (conn.responses.size > 0) return;
      conn.idleSince = clock();
      conn.bytesReadAtIdle = conn.socket.bytesRead;
      // A response that went out with keep-alive (its headers were sent before the drain started) leaves an idle
      // connection behind; it gets its own grace from now.
      if (tracker.drain && !conn.lastSaidClose) scheduleIdleClose(tracker, conn);
    });
  });

  server.on('upgrade', (req: http.IncomingMessage) => {
    const conn = tracker.conns.get(req.socket);
    if (!conn) return;
    conn.upgraded = true;
    if (conn.graceTimer) clearTimeout(conn.graceTimer);
    tracker.drain?.onUpgraded?.(conn.socket);
  });
}

/** Make a response carry `Connection: close` if its headers are not out yet; Node then ends the socket after it. */
function sayClose(res: http.ServerResponse): void {
  if (res.headersSent) return;
  // shouldKeepAlive = false makes Node write `Connection: close` and end the socket after this response, unless
  // the handler sets a Connection header itself; setting the header as well covers handlers that read it back.
  res.shouldKeepAlive = false;
  if (!res.hasHeader('connection')) res.setHeader('Connection', 'close');
}

function isIdle(conn: Conn): boolean {
  return conn.responses.size === 0 && !conn.upgraded && conn.socket.bytesRead === conn.bytesReadAtIdle;
}

function scheduleIdleClose(tracker: HttpTracker, conn: Conn): void {
  const d = tracker.drain;
  if (!d || conn.endedIdle || conn.upgraded) return;
  if (conn.graceTimer) clearTimeout(conn.graceTimer);
  const due = Math.max(conn.idleSince, d.started) + d.graceMs;
  conn.graceTimer = setTimeout(() => {
    conn.graceTimer = undefined;
    if (!tracker.conns.has(conn.socket) || conn.endedIdle) return;
    // Bytes arrived since the last response: a request is being received ('request' not emitted yet). Closing now
    // would fail it; its 'request' hook will say `Connection: close` and its end reschedules. A request that never
    // completes is left to timeoutMs.
    if (!isIdle(conn)) return;
    conn.endedIdle = true;
    // end(), not destroy(): a FIN, and the socket keeps reading until the client's FIN (http.Server is half-open
    // aware and finishes the close then). A close() with unread bytes in the receive queue makes Linux send a RST,
    // which can also destroy response bytes the client has not read yet.
    conn.socket.end();
  }, Math.max(0, due - d.now()));
  conn.graceTimer.unref();
}

/**
 * Stop accepting on an HTTP(S) server and close every connection without a reset, within `timeoutMs`.
 * Resolves with a {@link DrainReport} once every connection is closed; never rejects. Calling it again returns the
 * same promise. The server must have been passed to {@link trackConnections} before it accepted connections.
 */
export function drain(server: http.Server, options: DrainOptions = {}): Promise<DrainReport> {
  const tracker = trackers.get(server);
  if (!tracker || tracker.kind !== 'http') {
    throw sdError(
      'SDH_INVALID_OPTION',
      tracker
        ? 'drain(server) needs an http.Server or https.Server; use drainNet() for a raw net.Server'
        : 'drain(server): the server is not tracked; call trackConnections(server) before listen()',
    );
  }
  if (tracker.drain) return tracker.drain.promise;
  const graceMs = checkMs('graceMs', options.graceMs, DEFAULT_GRACE_MS);
  const timeoutMs = checkMs('timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS);
  const now = options.now ?? (() => performance.now());
  const started = now();
  const report: DrainReport = {
    connections: tracker.conns.size,
    closedAfterResponse: 0,
    closedIdle: 0,
    closedOther: 0,
    forced: 0,
    requests: 0,
    lateRequests: 0,
    durationMs: 0,
  };

  let resolve!: (r: DrainReport) => void;
  const promise = new Promise<DrainReport>((r) => (resolve = r));
  const d: HttpDrain = { started, graceMs, now, onUpgraded: options.onUpgraded, report, promise };
  tracker.drain = d;

  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    clearTimeout(deadline);
    report.durationMs = Math.round(now() - started);
    resolve(report);
  };
  // Done when no accepted socket is left, counting those that are not (yet) HTTP connections, such as TLS handshakes
  // in progress. nextTick: the per-connection 'close' listeners that fill the report run after the raw one.
  tracker.onEmpty = () => process.nextTick(finish);

  const deadline = setTimeout(() => {
    // Counted here, not in the 'close' listeners: those run in a later phase of the event loop.
    for (const conn of tracker.conns.values()) conn.forced = true;
    const left = new Set([...tracker.raw, ...tracker.conns.keys()]);
    report.forced = tracker.raw.size;
    for (const socket of left) socket.destroy();
    // The last 'close' ends the drain through onEmpty; this only guards against a socket that never emits one.
    setTimeout(finish, 1000).unref();
  }, timeoutMs);
  deadline.unref();

  stopListening(server);
  if (tracker.raw.size === 0) process.nextTick(finish);

  for (const conn of tracker.conns.values()) {
    if (conn.upgraded) {
      d.onUpgraded?.(conn.socket);
      continue;
    }
    for (const res of conn.responses) sayClose(res);
    if (conn.responses.size === 0) scheduleIdleClose(tracker, conn);
  }
  return promise;
}

/**
 * Close the listener without closing idle connections. In Node 19+ `http.Server.close()` first calls
 * `this.closeIdleConnections()` (and stops the request-timeout interval), which is the reset-producing step we must
 * skip. Shadowing the method on the instance for the duration of the call keeps everything else `close()` does;
 * test/native/drain.test.ts checks that an idle connection survives it, so a Node that changes this is caught.
 * Stopping that interval means `requestTimeout` / `headersTimeout` are no longer enforced on the remaining
 * connections; `timeoutMs` bounds them instead. `keepAliveTimeout` (a per-socket timer) keeps running.
 */
function stopListening(server: http.Server | net.Server): void {
  // Not listening (already closed, or never listened) is fine: there is nothing to stop.
  if (!server.listening) return;
  const own = Object.prototype.hasOwnProperty.call(server, 'closeIdleConnections');
  const saved = (server as http.Server).closeIdleConnections;
  (server as http.Server).closeIdleConnections = () => {};
  try {
    server.close();
  } finally {
    if (own) (server as http.Server).closeIdleConnections = saved;
    else delete (server as Partial<http.Server>).closeIdleConnections;
  }
}

/**
 * Drains a tracked server with the drain its protocol needs: {@link drain} for HTTP/1.1 servers (`http.Server` and
 * `https.Server`: the kind {@link trackConnections} recorded), {@link drainNet} for everything else. This is the one
 * answer to "is this HTTP" for the Upgrader, pool workers and `auto`: `https.Server` is not an `http.Server`
 * (it extends `tls.Server`), and deciding with `instanceof` sent HTTPS servers to drainNet, which threw.
 */
export function drainServer(server: net.Server, options: { timeoutMs?: number; graceMs?: number } = {}): Promise<DrainReport | DrainNetReport> {
  const tracker = trackers.get(server);
  if (tracker?.kind === 'http') return drain(server as http.Server, options);
  return drainNet(server, options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs });
}

/**
 * Stop accepting on a raw `net.Server` and wait for its connections to end, destroying those left at `timeoutMs`.
 * Resolves with a {@link DrainNetReport}; never rejects; calling it again returns the same promise.
 */
export function drainNet(server: net.Server, options: DrainNetOptions = {}): Promise<DrainNetReport> {
  const tracker = trackers.get(server);
  if (!tracker || tracker.kind !== 'net') {
    throw sdError(
      'SDH_INVALID_OPTION',
      tracker
        ? 'drainNet(server) is for raw net.Servers; use drain() for an http.Server or https.Server'
        : 'drainNet(server): the server is not tracked; call trackConnections(server) before listen()',
    );
  }
  if (tracker.drain) return tracker.drain;
  const timeoutMs = checkMs('timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS);
  const now = options.now ?? (() => performance.now());
  const started = now();
  const open = [...tracker.sockets];
  const report: DrainNetReport = { connections: open.length, closed: 0, forced: 0, durationMs: 0 };
  const forced = new Set<net.Socket>();
  for (const socket of open) {
    socket.once('close', () => {
      if (!forced.has(socket)) report.closed++;
    });
  }
  tracker.drain = new Promise<DrainNetReport>((resolve) => {
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      report.durationMs = Math.round(now() - started);
      resolve(report);
    };
    tracker.onEmpty = () => process.nextTick(finish);
    const deadline = setTimeout(() => {
      // Counted here, not in the 'close' listeners: those run in a later phase of the event loop.
      for (const socket of tracker.sockets) {
        forced.add(socket);
        report.forced++;
        socket.destroy();
      }
      setTimeout(finish, 1000).unref();
    }, timeoutMs);
    deadline.unref();
    stopListening(server);
    if (open.length === 0) process.nextTick(finish);
    for (const socket of open) options.onDrain?.(socket);
  });
  return tracker.drain;
}
