import type { BusMessage } from '@cdc/bus';
import { Headers, formatOrderKey, orderKeyOf, type ChangeEvent } from '@cdc/core';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DedupTransform } from '../src/gate.ts';
import { MemoryDedupStore } from '../src/store.ts';

const logger = pino({ level: 'silent' });
const encoder = new TextEncoder();

function change(lamport: number, id: string): ChangeEvent {
  return {
    kind: 'change', source: 'pg1', table: 'public.t', keyColumns: ['id'], key: [id], op: 'insert', before: null,
    after: { id }, unchanged: [], columnTypes: {}, lsn: '0/10', commitLsn: '0/10', seq: lamport, xid: 1,
    commitTs: '1970-01-01T00:00:00.000Z', lamport: String(lamport), eventId: `ev-${id}`, traceId: `tr-${id}`,
  } as unknown as ChangeEvent;
}

function message(seq: number, value: unknown): BusMessage {
  const data = typeof value === 'string' ? encoder.encode(value) : encoder.encode(JSON.stringify(value));
  return { subject: 'cdc.p.ordered.0', seq, data, header: () => undefined, json: <T>() => JSON.parse(new TextDecoder().decode(data)) as T };
}

const restore = (gate: DedupTransform, lastKey?: string) => gate.restore({ resumeSeq: 1, lastKey, last: undefined });

describe('DedupTransform', () => {
  it('forwards new events and watermarks, stamping resume = input seq + 1 and the last key', async () => {
    const gate = new DedupTransform({ store: new MemoryDedupStore(), partition: 0, logger });
    restore(gate);
    const a = change(1, 'a');
    const result = await gate.process([message(5, a), message(6, { kind: 'watermark', lamport: '1', positions: {} })]);
    expect(result.outputs.map((o) => [o.msgId, o.resumeSeq, o.lastKey])).toEqual([
      ['ev-a', 6, formatOrderKey(orderKeyOf(a))],
      ['wm:0:1', 7, formatOrderKey(orderKeyOf(a))],
    ]);
    expect(result.outputs[0]?.traceId).toBe('tr-a');
  });

  it('drops an event another input message claimed, and forwards again one this message claimed', async () => {
    const store = new MemoryDedupStore();
    store.claims.set('ev-a', 99); // claimed by another input message
    store.claims.set('ev-b', 8); // claimed by input 8 itself before a crash
    const gate = new DedupTransform({ store, partition: 0, logger });
    restore(gate);
    const result = await gate.process([message(7, change(1, 'a')), message(8, change(2, 'b'))]);
    expect(result.outputs.map((o) => o.msgId)).toEqual(['ev-b']);
    expect(gate.counters).toMatchObject({ duplicates: 1, redeliveries: 1, forwarded: 1 });
  });

  it('drops a repeat at or below the last key without asking the store', async () => {
    const store = new MemoryDedupStore();
    const gate = new DedupTransform({ store, partition: 0, logger });
    restore(gate, formatOrderKey(orderKeyOf(change(5, 'x'))));
    store.failing = new Error('must not be asked');
    const result = await gate.process([message(3, change(4, 'old')), message(4, change(5, 'x'))]);
    expect(result.outputs).toEqual([]);
    expect(gate.counters.belowLastKey).toBe(2);
  });

  it('fails the whole batch when the store cannot answer: nothing forwarded unchecked', async () => {
    const store = new MemoryDedupStore();
    store.failing = new Error('redis down');
    const gate = new DedupTransform({ store, partition: 0, logger });
    restore(gate);
    await expect(gate.process([message(1, change(1, 'a'))])).rejects.toThrow('redis down');
  });

  it('dead-letters what is not an ordered message and keeps going', async () => {
    const gate = new DedupTransform({ store: new MemoryDedupStore(), partition: 0, logger });
    restore(gate);
    const result = await gate.process([message(1, '{oops'), message(2, { kind: 'heartbeat', source: 's', lamport: '1', lsn: '0/1' }), message(3, change(1, 'a'))]);
    expect(result.deadLetters.map((d) => d.code)).toEqual(['INVALID_JSON', 'UNKNOWN_KIND']);
    expect(result.outputs.map((o) => o.msgId)).toEqual(['ev-a']);
  });

  it('keeps the incoming Nats-Msg-Id of a watermark', async () => {
    const gate = new DedupTransform({ store: new MemoryDedupStore(), partition: 3, logger });
    restore(gate);
    const wm = message(1, { kind: 'watermark', lamport: '9', positions: { pg1: '0/1' } });
    const withHeader: BusMessage = { ...wm, header: (name) => (name === Headers.MsgId ? 'wm:3:9' : undefined) };
    const result = await gate.process([withHeader]);
    expect(result.outputs[0]?.msgId).toBe('wm:3:9');
  });
});
