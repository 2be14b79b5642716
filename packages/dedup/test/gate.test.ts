import type { BusMessage } from '@cdc/bus';
import { BatchCutter, Headers, decodeMessage, encodeChangeItem, formatOrderKey, orderKeyOf, type ChangeEvent } from '@cdc/core';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DedupDecider, DedupTransform, forwards } from '../src/gate.ts';
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

/** A message of several whole events, no index (as a hand-made or older producer's). */
const many = (seq: number, events: ChangeEvent[]): BusMessage => message(seq, events.map((e) => JSON.stringify(e)).join('\n'));

/** A message as a stage cuts it: slim items behind an index line. */
function indexed(seq: number, events: readonly ChangeEvent[]): BusMessage {
  const cutter = new BatchCutter();
  for (const e of events) cutter.add(encodeChangeItem(e), orderKeyOf(e), e);
  const { data } = cutter.take()!;
  return { subject: 'cdc.p.ordered.0', seq, data, header: () => undefined, json: <T>() => JSON.parse(new TextDecoder().decode(data)) as T };
}

const ids = (o: { payload: unknown }): string[] =>
  decodeMessage(o.payload as Uint8Array, ['change']).map((item) => (item.kind === 'change' ? item.value.eventId : item.kind));

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

  it('messages carrying several events: one store call for the batch, a duplicate in the middle keeps its neighbours, small messages\' survivors are joined into one output', async () => {
    const store = new MemoryDedupStore();
    store.claims.set('ev-b', 99); // claimed by another input message
    const gate = new DedupTransform({ store, partition: 0, logger });
    restore(gate);
    const result = await gate.process([many(7, [change(1, 'a'), change(2, 'b'), change(3, 'c')]), many(8, [change(4, 'd'), change(5, 'e')])]);
    expect(store.calls).toBe(1);
    // Both messages are small (a paced source): one output, past both of them.
    expect(result.outputs.map(ids)).toEqual([['ev-a', 'ev-c', 'ev-d', 'ev-e']]);
    expect(result.outputs.map((o) => [o.resumeSeq, o.lastKey, o.events])).toEqual([[9, formatOrderKey(orderKeyOf(change(5, 'e'))), 4]]);
    expect(store.claims.get('ev-a')).toBe(7); // every event of message 7 claimed with its sequence
    expect(gate.counters).toMatchObject({ forwarded: 4, duplicates: 1 });
  });

  it('a large message whose every event passes goes out as it came; one with a drop is rebuilt; a full output is cut mid-message with that message re-read on restart', async () => {
    const gate = new DedupTransform({ store: new MemoryDedupStore(), partition: 0, logger });
    restore(gate);
    const events = Array.from({ length: 160 }, (_, i) => change(i + 1, `k${i}`));
    const first = indexed(7, events.slice(0, 60));
    const second = indexed(8, events.slice(60, 160));
    const result = await gate.process([first, second, many(9, [change(200, 'late')])]);
    // 60 events (half full): out whole, the very bytes of message 7.
    expect(result.outputs[0]?.payload).toBe(first.data);
    expect(result.outputs[0]).toMatchObject({ resumeSeq: 8, lastKey: formatOrderKey(orderKeyOf(events[59]!)), events: 60 });
    // Message 8 (100 events, whole) goes out as it came too; message 9 after it.
    expect(result.outputs[1]?.payload).toBe(second.data);
    expect(result.outputs[1]).toMatchObject({ resumeSeq: 9, lastKey: formatOrderKey(orderKeyOf(events[159]!)), events: 100 });
    expect(result.outputs.slice(2).map(ids)).toEqual([['ev-late']]);

    // A small message, then a full one: the output fills up inside message 11. What is cut
    // there says "re-read message 11" with the last key before the first event it lacks.
    const next = new DedupTransform({ store: new MemoryDedupStore(), partition: 0, logger });
    restore(next);
    const more = Array.from({ length: 110 }, (_, i) => change(i + 1, `m${i}`));
    const split = await next.process([many(10, more.slice(0, 10)), indexed(11, more.slice(10, 110))]);
    expect(split.outputs.map((o) => [o.events, o.resumeSeq, o.lastKey])).toEqual([
      [100, 11, formatOrderKey(orderKeyOf(more[99]!))],
      [10, 12, formatOrderKey(orderKeyOf(more[109]!))],
    ]);
    expect(split.outputs.flatMap(ids)).toEqual(more.map((e) => e.eventId));
  });

  it('asks the store once for all events of a fetched batch, watermarks in between', async () => {
    const store = new MemoryDedupStore();
    const gate = new DedupTransform({ store, partition: 0, logger });
    restore(gate);
    const wm = { kind: 'watermark', lamport: '1', positions: {} };
    const result = await gate.process([message(1, change(1, 'a')), message(2, wm), message(3, change(2, 'b')), message(4, change(3, 'c'))]);
    expect(store.calls).toBe(1);
    // Events before a watermark go out before it; the small messages after it are joined.
    expect(result.outputs.map((o) => (o.msgId.startsWith('wm:') ? o.msgId : ids(o)))).toEqual([['ev-a'], 'wm:0:1', ['ev-b', 'ev-c']]);
    expect(result.outputs.map((o) => o.resumeSeq)).toEqual([2, 3, 5]);
    expect(result.outputs[1]?.lastKey).toBe(formatOrderKey(orderKeyOf(change(1, 'a'))));
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

describe('DedupDecider', () => {
  const ev = (lamport: number, id: string, inputSeq: number) => {
    const e = change(lamport, id);
    return { eventId: e.eventId, key: orderKeyOf(e), commitTs: e.commitTs, inputSeq };
  };

  it('decides a whole batch with one store call: a duplicate in the middle keeps its neighbours', async () => {
    const store = new MemoryDedupStore();
    store.claims.set('ev-b', 1); // another input message claimed b
    store.claims.set('ev-c', 7); // this message (seq 7) claimed c before a crash
    const decider = new DedupDecider({ store, logger });
    // Events a..d share input message 7 (a message carrying several events), e is in message 8.
    const decisions = await decider.decide([ev(1, 'a', 7), ev(2, 'b', 7), ev(3, 'c', 7), ev(4, 'd', 7), ev(5, 'e', 8)]);
    expect(decisions).toEqual(['new', 'duplicate', 'redelivery', 'new', 'new']);
    expect(decisions.map(forwards)).toEqual([true, false, true, true, true]);
    expect(store.calls).toBe(1);
    expect(decider.counters).toMatchObject({ forwarded: 4, duplicates: 1, redeliveries: 1, belowLastKey: 0 });
    expect(decider.lastKey).toEqual(orderKeyOf(change(5, 'e')));
  });

  it('a repeat inside the batch, or at or below the restored key, is a replay and never reaches the store', async () => {
    const store = new MemoryDedupStore();
    const decider = new DedupDecider({ store, logger });
    decider.restore(orderKeyOf(change(2, 'b')));
    const decisions = await decider.decide([ev(1, 'a', 1), ev(3, 'c', 2), ev(3, 'c', 2), ev(4, 'd', 3)]);
    expect(decisions).toEqual(['replay', 'new', 'replay', 'new']);
    expect([...store.claims.keys()]).toEqual(['ev-c', 'ev-d']);
    expect(decider.counters).toMatchObject({ forwarded: 2, belowLastKey: 2 });
  });

  it('a store failure rejects the batch and changes nothing: no counter, no last key', async () => {
    const store = new MemoryDedupStore();
    store.failing = new Error('redis down');
    const decider = new DedupDecider({ store, logger });
    await expect(decider.decide([ev(1, 'a', 1)])).rejects.toThrow('redis down');
    expect(decider.lastKey).toBeUndefined();
    expect(decider.counters).toMatchObject({ forwarded: 0, duplicates: 0, redeliveries: 0, belowLastKey: 0 });
    store.failing = undefined;
    expect(await decider.decide([ev(1, 'a', 1)])).toEqual(['new']);
  });

  it('logs at most one debug line per batch, however many duplicates it has', async () => {
    const lines: unknown[] = [];
    const sink = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const store = new MemoryDedupStore();
    for (let i = 0; i < 50; i++) store.claims.set(`ev-${i}`, 1_000);
    const decider = new DedupDecider({ store, logger: sink });
    await decider.decide(Array.from({ length: 100 }, (_, i) => ev(i + 1, String(i), 2_000)));
    expect(decider.counters.duplicates).toBe(50);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 20, events: 100, duplicates: 50, redeliveries: 0, replays: 0 });
  });
});
