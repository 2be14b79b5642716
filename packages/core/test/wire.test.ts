import { describe, expect, it } from 'vitest';
import {
  BatchCutter,
  Lsn,
  batchHeaders,
  batchMsgId,
  decodeMessage,
  decodeOrderedMessage,
  decodeRawMessage,
  decodeRawRefs,
  encodeChangeItem,
  encodeItem,
  formatOrderKey,
  standaloneItem,
  itemText,
  joinItems,
  type ChangeEvent,
  type OrderKey,
  type WireItem,
} from '../src/index.ts';

const bytes = (value: unknown): Uint8Array => new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));
const only = (items: readonly WireItem[]): WireItem => {
  expect(items).toHaveLength(1);
  return items[0] as WireItem;
};

const change = { kind: 'change', source: 'pg1', table: 'public.t', op: 'insert', keyColumns: ['id'], key: ['1'], lamport: '17', commitLsn: '0/16', seq: 0, eventId: 'e1' };
// One object per table shape, as the reader's decoder shares its relation's (the index writes a table once per shape).
const columnTypes = { id: 20, v: 25 };
const event = (seq: number, extra: Partial<ChangeEvent> = {}): ChangeEvent =>
  ({ ...change, key: [String(seq)], seq, eventId: `e${seq}`, lsn: '0/10', before: null, after: { id: String(seq), v: 'a\nb' }, unchanged: [], columnTypes, xid: 1, commitTs: '2026-01-01T00:00:00Z', traceId: `t${seq}`, database: 'db', ...extra }) as ChangeEvent;

describe('one message, one item (what each stream accepts)', () => {
  it('accepts the kinds of each stream and nothing else', () => {
    expect(only(decodeRawMessage(bytes(change))).kind).toBe('change');
    expect(only(decodeRawMessage(bytes({ kind: 'heartbeat', source: 'pg1', lamport: '5', lsn: '0/1' }))).kind).toBe('heartbeat');
    expect(only(decodeRawMessage(bytes({ kind: 'progress', source: 'pg1', lamport: '5', commitLsn: '0/1', seq: 3 }))).kind).toBe('progress');
    expect(only(decodeRawMessage(bytes({ kind: 'watermark', lamport: '5', positions: {} })))).toMatchObject({ kind: 'poison', code: 'UNKNOWN_KIND' });
    expect(only(decodeOrderedMessage(bytes({ kind: 'watermark', lamport: '5', positions: { pg1: '0/1' } }))).kind).toBe('watermark');
    expect(only(decodeOrderedMessage(bytes({ kind: 'heartbeat', source: 'pg1', lamport: '5', lsn: '0/1' })))).toMatchObject({ kind: 'poison', code: 'UNKNOWN_KIND' });
  });

  it('names what is wrong with a malformed message', () => {
    expect(only(decodeRawMessage(bytes('{')))).toMatchObject({ kind: 'poison', code: 'INVALID_JSON' });
    expect(only(decodeRawMessage(bytes([1])))).toMatchObject({ kind: 'poison', code: 'INVALID_MESSAGE' });
    expect(only(decodeRawMessage(bytes('')))).toMatchObject({ kind: 'poison', code: 'INVALID_JSON' });
    expect(only(decodeRawMessage(bytes({ ...change, lamport: 17 })))).toMatchObject({ kind: 'poison', reason: 'malformed change: lamport must be a decimal string' });
    expect(only(decodeRawMessage(bytes({ ...change, commitLsn: '16' })))).toMatchObject({ kind: 'poison', reason: 'malformed change: commitLsn must be an LSN (X/Y)' });
    expect(only(decodeRawMessage(bytes({ ...change, seq: -1 })))).toMatchObject({ kind: 'poison' });
    expect(only(decodeRawMessage(bytes({ ...change, op: 'upsert' })))).toMatchObject({ kind: 'poison', eventId: 'e1', table: 'public.t' });
    expect(only(decodeOrderedMessage(bytes({ kind: 'watermark', lamport: '5', positions: { pg1: 'x' } })))).toMatchObject({
      kind: 'poison',
      reason: 'malformed watermark: positions.pg1 must be an LSN (X/Y)',
    });
  });

  it('computes the order key once and fills the optional fields of a slim change', () => {
    const item = only(decodeOrderedMessage(bytes(change)));
    if (item.kind !== 'change') throw new Error('expected a change');
    expect(item.key).toEqual({ lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq: 0 });
    expect(item.value).toMatchObject({ unchanged: [], before: null, after: null });
  });
});

describe('many events per message', () => {
  it('round-trips items byte for byte, values containing newlines included', () => {
    const events = [event(0), event(1), event(2)];
    const data = joinItems(events.map(encodeItem));
    const items = decodeRawMessage(data);
    expect(items.map((item) => item.kind)).toEqual(['change', 'change', 'change']);
    expect(items.map((item) => (item.kind === 'change' ? item.value : undefined))).toEqual(events);
    // Forwarded bytes are the producer's bytes: joining them again gives the same message.
    expect(joinItems(items.map((item) => item.bytes))).toEqual(data);
  });

  it('isolates one poison item: its neighbours decode, it carries its own bytes and index', () => {
    const data = joinItems([encodeItem(event(0)), bytes('{"kind":"change",'), encodeItem(event(2))]);
    const items = decodeMessage(data, ['change']);
    expect(items.map((item) => item.kind)).toEqual(['change', 'poison', 'change']);
    expect(items[1]).toMatchObject({ kind: 'poison', code: 'INVALID_JSON', index: 1 });
    expect(itemText((items[1] as WireItem).bytes)).toBe('{"kind":"change",');
  });

  it('cuts by count and by bytes, and names a message by its first and last positions', () => {
    const key = (seq: number): OrderKey => ({ lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq });
    const byCount = new BatchCutter({ maxEvents: 2, maxBytes: 1_000_000 });
    expect(byCount.add(encodeItem(event(0)), key(0))).toBe(false);
    expect(byCount.add(encodeItem(event(1)), key(1))).toBe(true);
    const taken = byCount.take();
    expect(taken).toMatchObject({ count: 2, firstKey: key(0), lastKey: key(1) });
    expect(byCount.take()).toBeUndefined();
    expect(batchMsgId('r:3', taken!)).toBe('r:3:pg1@0/16/0..pg1@0/16/1');
    expect(batchHeaders(taken!)).toEqual({ 'Cdc-Count': '2', 'Cdc-First-Key': formatOrderKey(key(0)), 'Cdc-Last-Key': formatOrderKey(key(1)) });

    const one = encodeItem(event(0));
    const byBytes = new BatchCutter({ maxEvents: 100, maxBytes: one.length * 2 + 1 });
    expect(byBytes.wouldOverflow(one.length)).toBe(false);
    byBytes.add(one, key(0));
    expect(byBytes.wouldOverflow(one.length)).toBe(false);
    expect(byBytes.add(one, key(1))).toBe(true);
    expect(byBytes.wouldOverflow(one.length)).toBe(true);
    expect(byBytes.take()?.data.length).toBe(one.length * 2 + 1);
  });

  it('a cut batch opens with an index line: refs decode without parsing the items, the full decoder skips it', () => {
    const events = [event(0), event(1), event(2)];
    const cutter = new BatchCutter();
    for (const e of events) cutter.add(encodeItem(e), { lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq: e.seq }, e);
    const taken = cutter.take()!;
    expect(taken.count).toBe(3);
    // The transaction and the table once; a ref per item.
    expect(JSON.parse(itemText(taken.data).split('\n')[0]!)).toEqual({
      kind: 'index',
      txns: [['pg1', '17', '0/16', '2026-01-01T00:00:00Z', 1, 't0', 'db'], ['pg1', '17', '0/16', '2026-01-01T00:00:00Z', 1, 't1', 'db'], ['pg1', '17', '0/16', '2026-01-01T00:00:00Z', 1, 't2', 'db']],
      tables: [['public.t', ['id'], { id: 20, v: 25 }]],
      refs: [['e0', 0, 0, 0], ['e1', 1, 1, 0], ['e2', 2, 2, 0]],
    });
    // The committer's full decode: the three events, no index item.
    const full = decodeRawMessage(taken.data);
    expect(full.map((item) => (item.kind === 'change' ? item.value : item.kind))).toEqual(events);
    // A middle stage's decode: refs and keys from the index, each item's bytes as they were.
    const refs = decodeRawRefs(taken.data);
    expect(refs.map((item) => (item.kind === 'change' ? [item.ref.eventId, item.ref.commitTs, item.key.seq] : item.kind))).toEqual([
      ['e0', '2026-01-01T00:00:00Z', 0],
      ['e1', '2026-01-01T00:00:00Z', 1],
      ['e2', '2026-01-01T00:00:00Z', 2],
    ]);
    expect(refs.map((item) => item.bytes)).toEqual(full.map((item) => item.bytes));
  });

  it('every item of one indexed message, in order and alone, goes out as that message (same bytes, same refs); anything else is rebuilt', () => {
    const keyOf = (seq: number): OrderKey => ({ lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq });
    const cut = (events: readonly ChangeEvent[]): Uint8Array => {
      const cutter = new BatchCutter();
      for (const e of events) cutter.add(encodeItem(e), keyOf(e.seq), e);
      return cutter.take()!.data;
    };
    const input = cut([event(0), event(1), event(2)]);
    const refs = decodeRawRefs(input).filter((item) => item.kind === 'change');
    const forward = (picked: readonly (typeof refs)[number][]): Uint8Array => {
      const cutter = new BatchCutter();
      for (const item of picked) cutter.add(item.bytes, item.key, item.ref, item.origin);
      return cutter.take()!.data;
    };
    // Whole: the very same bytes (no copy).
    const whole = forward(refs);
    expect(whole).toBe(input);
    // A part (the first dropped, the last dropped, one skipped, out of order): a new message of exactly those items.
    const parts = [refs.slice(1), refs.slice(0, 2), [refs[0]!, refs[2]!], [refs[1]!, refs[0]!, refs[2]!]];
    for (const part of parts) {
      const data = forward(part);
      expect(data).not.toBe(input);
      expect(decodeRawMessage(data).map((item) => (item.kind === 'change' ? item.value.eventId : item.kind))).toEqual(part.map((item) => item.ref.eventId));
    }
    // Two messages' items in one cut: rebuilt, all six in order.
    const second = decodeRawRefs(cut([event(3), event(4), event(5)])).filter((item) => item.kind === 'change');
    const both = forward([...refs, ...second]);
    expect(decodeRawRefs(both).map((item) => (item.kind === 'change' ? item.ref.eventId : item.kind))).toEqual(['e0', 'e1', 'e2', 'e3', 'e4', 'e5']);
  });

  it('slim change items: the index carries what a transaction and a table share; decoded, each is the whole event again', () => {
    const events = [event(0), event(1, { op: 'update', before: { id: '1', v: 'x' } }), event(2, { commitLsn: '0/20', lamport: '18', traceId: 'u2' })];
    const cutter = new BatchCutter();
    for (const e of events) cutter.add(encodeChangeItem(e), { lamport: BigInt(e.lamport), source: 'pg1', commitLsn: Lsn.parse(e.commitLsn), seq: e.seq }, e);
    const taken = cutter.take()!;
    const lines = itemText(taken.data).split('\n');
    expect(lines).toHaveLength(4);
    // An item holds its own fields only.
    expect(Object.keys(JSON.parse(lines[1]!)).sort()).toEqual(['after', 'before', 'key', 'kind', 'lsn', 'op', 'unchanged']);
    expect(taken.data.length).toBeLessThan(joinItems(events.map((e) => encodeItem(e))).length);
    expect(decodeRawMessage(taken.data).map((item) => (item.kind === 'change' ? item.value : item.kind))).toEqual(events);
    const refs = decodeRawRefs(taken.data);
    expect(refs.map((item) => (item.kind === 'change' ? [item.ref.eventId, item.ref.lamport, item.ref.table, item.key.seq] : item.kind))).toEqual([
      ['e0', '17', 'public.t', 0],
      ['e1', '17', 'public.t', 1],
      ['e2', '18', 'public.t', 2],
    ]);
    // A dead letter gets the whole event, replayable alone.
    const second = refs[1]!;
    if (second.kind !== 'change') throw new Error('expected a change');
    expect(only(decodeRawMessage(standaloneItem(second.bytes, second.ref)))).toMatchObject({ kind: 'change', value: events[1] });
    // A slim item without its index cannot be placed: poison, never a guess.
    expect(only(decodeRawMessage(second.bytes))).toMatchObject({ kind: 'poison', code: 'INVALID_MESSAGE' });
    // A field this version does not know travels in the item.
    const newer = { ...events[0]!, futureField: 'x' } as unknown as ChangeEvent;
    const withField = new BatchCutter();
    withField.add(encodeChangeItem(newer), { lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq: 0 }, newer);
    expect(only(decodeRawMessage(withField.take()!.data))).toMatchObject({ kind: 'change', value: newer });
    // A snapshot read and a change of a table whose snapshot is pending keep their fields.
    const read = { ...events[0]!, op: 'read', before: null, snapshot: 'incremental' } as ChangeEvent;
    const pending = { ...events[1]!, snapshotPending: true } as ChangeEvent;
    const flagged = new BatchCutter();
    flagged.add(encodeChangeItem(read), { lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq: 0 }, read);
    flagged.add(encodeChangeItem(pending), { lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq: 1 }, pending);
    expect(decodeRawMessage(flagged.take()!.data).map((item) => (item.kind === 'change' ? item.value : item.kind))).toEqual([read, pending]);
    // A lone event travels with its index too (and keeps its event id as message id).
    const lone = new BatchCutter();
    lone.add(encodeChangeItem(events[0]!), { lamport: 17n, source: 'pg1', commitLsn: Lsn.parse('0/16'), seq: 0 }, events[0]);
    const one = lone.take()!;
    expect(batchMsgId('r:0', one)).toBe('e0');
    expect(decodeRawMessage(one.data).map((item) => (item.kind === 'change' ? item.value : item.kind))).toEqual([events[0]]);
  });

  it('an indexed message decodes in one parse, and any line that is not one whole object falls back to line by line (poison alone)', () => {
    const events = [event(0), event(1), event(2), event(3)];
    const cutter = new BatchCutter();
    for (const e of events) cutter.add(encodeChangeItem(e), { lamport: 17n, source: 'pg1', commitLsn: Lsn.parse(e.commitLsn), seq: e.seq }, e);
    const lines = itemText(cutter.take()!.data).split('\n');
    const message = (body: string[]): Uint8Array => bytes(body.join('\n'));
    const decoded = (data: Uint8Array): unknown[] => decodeOrderedMessage(data).map((item) => (item.kind === 'change' ? item.value.eventId : `${item.kind}:${item.kind === 'poison' ? item.code : ''}`));
    expect(decoded(message(lines))).toEqual(['e0', 'e1', 'e2', 'e3']);
    // A line that is two objects, or half of one: the value count no longer matches the
    // lines, so the message is decoded line by line and only that line is poison.
    const item = (n: number): string => lines[n + 1]!;
    expect(decoded(message([lines[0]!, `${item(0)},${item(0)}`, item(1), item(2), item(3)]))).toEqual(['poison:INVALID_JSON', 'e1', 'e2', 'e3']);
    const at = item(2).indexOf(',"key"');
    expect(decoded(message([lines[0]!, item(0), item(1), item(2).slice(0, at), item(3)]))).toEqual(['e0', 'e1', 'poison:INVALID_JSON', 'e3']);
    // Two lines that are one object (the count then matches only if another line is two):
    // each line alone is not JSON.
    expect(decoded(message([lines[0]!, item(0), item(1), item(2).slice(0, at), item(2).slice(at + 1)]))).toEqual(['e0', 'e1', 'poison:INVALID_JSON', 'poison:INVALID_JSON']);
    // A line that is an array, a number, or empty-then-trailing: the same.
    expect(decoded(message([lines[0]!, item(0), '[1]', item(2), item(3)]))).toEqual(['e0', 'poison:INVALID_MESSAGE', 'e2', 'e3']);
    expect(decoded(message([lines[0]!, item(0), '7', item(2), item(3)]))).toEqual(['e0', 'poison:INVALID_MESSAGE', 'e2', 'e3']);
    expect(decoded(bytes(`${lines.join('\n')}\n`))).toEqual(['e0', 'e1', 'e2', 'e3']);
  });

  it('an index that does not match its items is ignored: the items are parsed instead', () => {
    const index = bytes({ kind: 'index', txns: [['pg1', '17', '0/16', 't', 1, 't0', 'db']], tables: [['public.t', ['id'], {}]], refs: [['e0', 0, 0, 0]] }); // one ref, two items
    const data = joinItems([index, encodeItem(event(0)), encodeItem(event(1))]);
    const refs = decodeRawRefs(data);
    expect(refs.map((item) => (item.kind === 'change' ? item.ref.eventId : item.kind))).toEqual(['e0', 'e1']);
    expect(refs.every((item) => item.kind !== 'change' || item.ref.commitTs === '2026-01-01T00:00:00Z')).toBe(true);
  });
});

