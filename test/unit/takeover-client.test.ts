import { describe, expect, it } from 'vitest';
import { SdHandoffError } from '../../src/errors.js';
import type { Received } from '../../src/native.js';
import { TakeoverClient } from '../../src/upgrade/takeover.js';
import { fakeAddon } from './fakes.js';

/** An addon whose connection answers with `replies` in order and records every fd it is asked to close. */
function conversation(replies: Array<{ text: string; fds?: number[] }>, peerUid = process.getuid!()) {
  const addon = fakeAddon();
  const closed: number[] = [];
  const queue = [...replies];
  addon.connectUnix = () => 50;
  addon.peerCred = () => ({ pid: 777, uid: peerUid, gid: peerUid });
  addon.sendMsg = async (_fd, data) => data.length;
  addon.recvMsg = async (): Promise<Received> => {
    const r = queue.shift();
    return r ? { data: Buffer.from(r.text), fds: r.fds ?? [], truncated: false } : { data: Buffer.alloc(0), fds: [], truncated: false };
  };
  addon.close = (fd) => void closed.push(fd);
  return { addon, closed };
}

const failure = (p: Promise<unknown>): Promise<SdHandoffError> => p.then(() => Promise.reject(new Error('expected a rejection')), (e: SdHandoffError) => e);
const offer = (count: number): { text: string } => ({ text: `${JSON.stringify({ t: 'offer', count, pid: 10, env: {} })}\n` });

describe('TakeoverClient', () => {
  it('refuses a running instance owned by another uid, before saying anything', async () => {
    const { addon, closed } = conversation([offer(1)], 4242);
    const err = await failure(TakeoverClient.connect('/run/app/control.sock', addon, 1000));
    expect(err.code).toBe('SDH_PERMISSION');
    expect(err.message).toContain('runs as uid 4242');
    expect(closed).toEqual([50]);
  });

  it('closes the listeners of the chunks that arrived when a later chunk is malformed', async () => {
    const { addon, closed } = conversation([offer(3), { text: '{"t":"fds","names":["a","b"]}\n', fds: [60, 61] }, { text: '{"t":"fds","names":["c"]}\n', fds: [] }]);
    const err = await failure(TakeoverClient.connect('/run/app/control.sock', addon, 1000));
    expect(err.code).toBe('SDH_PROTOCOL');
    expect(closed.sort()).toEqual([50, 60, 61]);
  });

  it('gives up on a line longer than 64 KiB instead of buffering it without bound', async () => {
    const { addon } = conversation([{ text: 'x'.repeat(40_000) }, { text: 'y'.repeat(40_000) }]);
    const err = await failure(TakeoverClient.connect('/run/app/control.sock', addon, 1000));
    expect(err.code).toBe('SDH_PROTOCOL');
    expect(err.message).toContain('longer than 65536 bytes');
  });

  it('keeps a UTF-8 character split between two reads whole', async () => {
    const line = Buffer.from(`${JSON.stringify({ t: 'offer', count: 0, pid: 10, env: { NOTE: 'prêt ✓' } })}\n`);
    const cut = line.indexOf(Buffer.from('✓')) + 1;
    const { addon } = conversation([]);
    const halves = [line.subarray(0, cut), line.subarray(cut)];
    addon.recvMsg = async (): Promise<Received> => ({ data: halves.shift() ?? Buffer.alloc(0), fds: [], truncated: false });
    const { env, client } = await TakeoverClient.connect('/run/app/control.sock', addon, 1000);
    client.close();
    expect(env).toEqual({ NOTE: 'prêt ✓' });
  });
});
