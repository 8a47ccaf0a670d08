import { describe, expect, it } from 'vitest';
import { lineReader } from '../../src/upgrade/protocol.js';

function collect(maxLength?: number): { feed: (chunk: Buffer) => void; msgs: unknown[]; bad: string[] } {
  const msgs: unknown[] = [];
  const bad: string[] = [];
  const feed = lineReader((m) => msgs.push(m), (l) => bad.push(l), maxLength);
  return { feed, msgs, bad };
}

describe('lineReader', () => {
  it('keeps a UTF-8 character whole when a read splits it', () => {
    const { feed, msgs, bad } = collect();
    const bytes = Buffer.from('{"status":"prêt ✓"}\n');
    const cut = bytes.indexOf(Buffer.from('✓')) + 1; // inside the 3-byte character
    feed(bytes.subarray(0, cut));
    feed(bytes.subarray(cut));
    expect(bad).toEqual([]);
    expect(msgs).toEqual([{ status: 'prêt ✓' }]);
  });

  it('lets an exception of the message handler propagate instead of calling the line malformed', () => {
    const bad: string[] = [];
    const feed = lineReader(() => {
      throw new Error('handler broke');
    }, (l) => bad.push(l));
    expect(() => feed(Buffer.from('{"cmd":"status"}\n'))).toThrow('handler broke');
    expect(bad).toEqual([]);
  });

  it.each(['not json', 'null', '3', '"text"', '[1]'])('%s is not a message', (line) => {
    const { feed, msgs, bad } = collect();
    feed(Buffer.from(`${line}\n`));
    expect(msgs).toEqual([]);
    expect(bad).toEqual([line]);
  });

  it('drops a line longer than maxLength, whether it came whole or in pieces, and reads the next one', () => {
    const { feed, msgs, bad } = collect(100);
    feed(Buffer.from(`{"a":"${'x'.repeat(200)}"}\n{"b":1}\n`));
    feed(Buffer.from(`{"c":"${'y'.repeat(150)}`));
    feed(Buffer.from(`${'y'.repeat(150)}"}\n{"d":2}\n`));
    expect(msgs).toEqual([{ b: 1 }, { d: 2 }]);
    expect(bad.map((l) => l.slice(0, 6))).toEqual(['{"a":"', '{"c":"']);
  });
});
