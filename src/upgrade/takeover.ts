/**
 * Takeover: a new process started by someone else (an operator, a deploy tool, a release directory's own start
 * script, `ExecReload=sd-handoff takeover -- ...`) takes every listener over from the running instance. This is
 * Pingora's model; unlike Pingora, the old instance lets go only once the new one reports ready (never after a
 * fixed sleep), and listeners travel by name, so two on the same address are never confused.
 *
 * The conversation runs on the running instance's control socket (unix stream, mode 0600, peer credentials
 * checked: root or the service's uid). Lines of JSON; fds ride with the first byte of the line that names them
 * (SCM_RIGHTS, at most 253 per message, so more listeners take several lines):
 *
 *   new -> old   {"cmd":"takeover"}
 *   old -> new   {"t":"offer","count":N,"pid":OLD,"env":{...}}      then, for every chunk of at most 253:
 *   old -> new   {"t":"fds","names":[...]}  + fds
 *   new -> old   {"t":"ready","pid":NEW}    or {"t":"failed","reason":"..."}
 *   old -> new   {"t":"handover"}           (after MAINPID=NEW + READY=1) or {"t":"abort","reason":"..."}
 *
 * `env` carries what systemd gave the main process only (NOTIFY_SOCKET, WATCHDOG_USEC): a process started from
 * `ExecReload=` is a control process, which systemd gives no NOTIFY_SOCKET unless NotifyAccess=all, yet once it
 * has taken over it is the main process and must be able to notify.
 *
 * The old side writes only with the addon's sendmsg on that connection (so lines and fds never reorder); the new
 * side owns a blocking socket from the addon and reads with recvmsg.
 */
import { sdError, SdHandoffError, show } from '../errors.js';
import type { NativeAddon } from '../native.js';
import { MAX_FDS_PER_MESSAGE } from '../notify.js';
import { MAX_LINE_BYTES } from './protocol.js';
import { StringDecoder } from 'node:string_decoder';

const IO_TIMEOUT_MS = 10_000;

/** The new side of a takeover: the connection and what it received. */
export class TakeoverClient {
  #buffer = '';
  /** Decodes across reads: a UTF-8 character split between two recvmsg calls stays whole. */
  readonly #decoder = new StringDecoder('utf8');
  readonly #fds: number[] = [];
  #closed = false;

  private constructor(
    readonly fd: number,
    private readonly addon: NativeAddon,
    readonly path: string,
  ) {}

  /** Connects to the running instance and receives its listeners, by name. */
  static async connect(
    path: string,
    addon: NativeAddon,
    timeoutMs: number,
  ): Promise<{ client: TakeoverClient; oldPid: number; listeners: Array<{ name: string; fd: number }>; env: Record<string, string> }> {
    let fd: number;
    try {
      fd = addon.connectUnix(path);
    } catch (err) {
      throw sdError('SDH_UPGRADE_FAILED', `takeover: cannot reach the running instance at ${path}: ${(err as Error).message}`, { path, cause: err });
    }
    const client = new TakeoverClient(fd, addon, path);
    const listeners: Array<{ name: string; fd: number }> = [];
    try {
      client.#checkPeer();
      await client.send({ cmd: 'takeover' });
      const offer = await client.next(timeoutMs);
      if (offer.ok === false) {
        throw new SdHandoffError(`takeover refused by the running instance: ${String(offer.error)}`, { code: (offer.code as 'SDH_UPGRADE_FAILED') ?? 'SDH_UPGRADE_FAILED', path });
      }
      if (offer.t !== 'offer' || typeof offer.count !== 'number' || typeof offer.pid !== 'number') {
        throw sdError('SDH_PROTOCOL', `takeover: expected an offer, got ${show(offer)}`, { path });
      }
      while (listeners.length < offer.count) {
        const chunk = await client.next(timeoutMs);
        const names = chunk.names;
        if (chunk.t !== 'fds' || !Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
          throw sdError('SDH_PROTOCOL', `takeover: expected fds, got ${show(chunk)}`, { path });
        }
        const fds = client.#fds.splice(0);
        if (fds.length !== names.length) {
          for (const f of fds) addon.close(f);
          throw sdError('SDH_PROTOCOL', `takeover: ${names.length} names arrived with ${fds.length} fds`, { path });
        }
        names.forEach((name, i) => listeners.push({ name: name as string, fd: fds[i]! }));
      }
      const env = typeof offer.env === 'object' && offer.env !== null ? (offer.env as Record<string, string>) : {};
      return { client, oldPid: offer.pid, listeners, env };
    } catch (err) {
      // The listeners of the chunks that did arrive are ours now: a failed takeover must not keep them open.
      for (const l of listeners) addon.close(l.fd);
      client.close();
      throw err;
    }
  }

  /**
   * Only root or our own uid may be the running instance: a socket path an attacker bound first must not hand us
   * listeners (or take our ready report) as if it were the service.
   */
  #checkPeer(): void {
    const own = process.getuid?.() ?? 0;
    const peer = this.addon.peerCred(this.fd);
    if (peer.uid !== 0 && peer.uid !== own) {
      throw sdError('SDH_PERMISSION', `takeover: the process at ${this.path} (pid ${peer.pid}) runs as uid ${peer.uid}, neither root nor ours (${own})`, { path: this.path, pid: peer.pid, uid: peer.uid });
    }
  }

  async send(msg: Record<string, unknown>): Promise<void> {
    await this.addon.sendMsg(this.fd, Buffer.from(`${JSON.stringify(msg)}\n`), [], IO_TIMEOUT_MS);
  }

  /** Reads the next line (and keeps the fds that came with it). */
  async next(timeoutMs: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const nl = this.#buffer.indexOf('\n');
      if (nl >= 0) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          throw sdError('SDH_PROTOCOL', `takeover: the running instance sent ${show(line.slice(0, 80))}`, { path: this.path });
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) throw sdError('SDH_TIMEOUT', `takeover: no answer from the running instance within ${timeoutMs} ms`, { path: this.path, timeoutMs });
      const got = await this.addon.recvMsg(this.fd, 65536, MAX_FDS_PER_MESSAGE, Math.min(left, 2 ** 31 - 1)).catch((err: SdHandoffError) => {
        if (err.code === 'ETIMEDOUT') throw sdError('SDH_TIMEOUT', `takeover: no answer from the running instance within ${timeoutMs} ms`, { path: this.path, timeoutMs });
        throw err;
      });
      this.#fds.push(...got.fds);
      if (got.data.length === 0 && got.fds.length === 0) {
        throw sdError('SDH_UPGRADE_FAILED', 'takeover: the running instance closed the connection', { path: this.path });
      }
      this.#buffer += this.#decoder.write(got.data);
      if (this.#buffer.length > MAX_LINE_BYTES && !this.#buffer.includes('\n')) {
        throw sdError('SDH_PROTOCOL', `takeover: the running instance sent a line longer than ${MAX_LINE_BYTES} bytes`, { path: this.path });
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const f of this.#fds.splice(0)) this.addon.close(f);
    this.addon.close(this.fd);
  }
}

/** The old side: sends every listener over a control connection, in chunks of at most 253 fds. */
export async function offerListeners(
  addon: NativeAddon,
  fd: number,
  pid: number,
  listeners: ReadonlyArray<{ name: string; fd: number }>,
  env: Record<string, string>,
): Promise<void> {
  const line = (msg: Record<string, unknown>): Buffer => Buffer.from(`${JSON.stringify(msg)}\n`);
  await addon.sendMsg(fd, line({ t: 'offer', count: listeners.length, pid, env }), [], IO_TIMEOUT_MS);
  for (let i = 0; i < listeners.length; i += MAX_FDS_PER_MESSAGE) {
    const chunk = listeners.slice(i, i + MAX_FDS_PER_MESSAGE);
    await addon.sendMsg(fd, line({ t: 'fds', names: chunk.map((l) => l.name) }), chunk.map((l) => l.fd), IO_TIMEOUT_MS);
  }
}

/** Sends one line on a control connection with the addon (never mixed with Node's writes). */
export async function sendLine(addon: NativeAddon, fd: number, msg: Record<string, unknown>): Promise<void> {
  await addon.sendMsg(fd, Buffer.from(`${JSON.stringify(msg)}\n`), [], IO_TIMEOUT_MS);
}
