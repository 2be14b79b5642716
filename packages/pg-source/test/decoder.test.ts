import { createHash } from 'node:crypto';
import { LamportClock, partitionOf, type ChangeEvent } from '@cdc/core';
import type { Pgoutput } from 'pg-logical-replication';
import { describe, expect, it } from 'vitest';
import { PgoutputDecoder, isoMicros, type Decoded } from '../src/decoder.ts';
import type { SourceMessage } from '../src/pgoutput.ts';

const T0 = 1_700_000_000_123_456n; // µs since the epoch

function relation(oid: number, name: string, columns: [string, number][], replicaIdentity: Pgoutput.MessageRelation['replicaIdentity'] = 'default'): Pgoutput.MessageRelation {
  return {
    tag: 'relation',
    relationOid: oid,
    schema: 'public',
    name,
    replicaIdentity,
    columns: columns.map(([column, typeOid]) => ({ name: column, flags: 0, typeOid, typeMod: -1, typeSchema: null, typeName: null, parser: (raw: unknown) => raw })),
    keyColumns: [],
  };
}

const orders = relation(16401, 'orders', [
  ['id', 23],
  ['status', 25],
  ['doc', 25],
]);
const lines = relation(16402, 'lines', [
  ['order_id', 23],
  ['line', 23],
  ['qty', 23],
]);
const loose = relation(16403, 'loose', [
  ['a', 25],
  ['b', 25],
], 'full');

const TABLES = [
  { table: 'public.orders', keyColumns: ['id'] },
  { table: 'public.lines', keyColumns: ['order_id', 'line'] },
  { table: 'public.loose', keyColumns: ['a', 'b'] },
];

function begin(finalLsn: string, commitTime = T0, xid = 700): Pgoutput.MessageBegin {
  return { tag: 'begin', commitLsn: finalLsn, commitTime, xid };
}

function commit(finalLsn: string, endLsn: string, commitTime = T0): Pgoutput.MessageCommit {
  return { tag: 'commit', flags: 0, commitLsn: finalLsn, commitEndLsn: endLsn, commitTime };
}

function decoder(lamport = 0n): PgoutputDecoder {
  return new PgoutputDecoder({ source: 'pg1', tables: TABLES, clock: new LamportClock(lamport) });
}

/** Feeds [message, lsn] pairs and returns everything decoded. */
function run(target: PgoutputDecoder, messages: [SourceMessage, string][]): Decoded[] {
  return messages.flatMap(([message, lsn]) => target.decode(message, lsn));
}

function events(decoded: Decoded[]): ChangeEvent[] {
  return decoded.flatMap((item) => (item.type === 'change' ? [item.event] : []));
}

const FINAL = '00000000/01000200';
const END = '00000000/01000230';

describe('PgoutputDecoder', () => {
  it('decodes an insert with the documented fields, text values and the transaction position', () => {
    const out = run(decoder(), [
      [orders, '0/1000100'],
      [begin(FINAL), '0/1000100'],
      [{ tag: 'insert', relation: orders, new: { id: '1', status: 'new', doc: null } }, '0/1000150'],
      [commit(FINAL, END), '0/1000200'],
    ]);
    const [event] = events(out);
    expect(event).toMatchObject({
      kind: 'change',
      source: 'pg1',
      table: 'public.orders',
      keyColumns: ['id'],
      key: ['1'],
      op: 'insert',
      before: null,
      after: { id: '1', status: 'new', doc: null },
      unchanged: [],
      columnTypes: { id: 23, status: 25, doc: 25 },
      lsn: '0/1000150',
      commitLsn: '0/1000200',
      seq: 0,
      xid: 700,
      commitTs: '2023-11-14T22:13:20.123456Z',
      lamport: T0.toString(),
    });
    expect(event?.eventId).toMatch(/^[0-9a-f]{32}$/);
    expect(event?.traceId).toMatch(/^[0-9a-f]{32}$/);
    // Pinned: a replay (any version) must give the transaction the same trace id.
    expect(event?.traceId).toBe(createHash('sha256').update('pg1:0/1000200').digest('hex').slice(0, 32));
    const last = out.at(-1);
    expect(last).toEqual({ type: 'commit', xid: 700, commitLsn: '0/1000200', commitEndLsn: '0/1000230', lamport: T0, changes: 1, heartbeat: false });
  });

  it('gives several rows sharing one WAL record LSN distinct ids through their index in the transaction', () => {
    const out = events(
      run(decoder(), [
        [lines, '0/1000100'],
        [begin(FINAL), '0/1000100'],
        [{ tag: 'insert', relation: lines, new: { order_id: '1', line: '1', qty: '5' } }, '0/1000150'],
        [{ tag: 'insert', relation: lines, new: { order_id: '1', line: '2', qty: '5' } }, '0/1000150'],
        [{ tag: 'insert', relation: lines, new: { order_id: '1', line: '1', qty: '6' } }, '0/1000150'],
        [commit(FINAL, END), '0/1000200'],
      ]),
    );
    expect(out.map((e) => e.seq)).toEqual([0, 1, 2]);
    expect(new Set(out.map((e) => e.eventId)).size).toBe(3);
    expect(new Set(out.map((e) => e.lamport)).size).toBe(1);
    expect(new Set(out.map((e) => e.traceId)).size).toBe(1);
  });

  it('produces the same ids and stamps when the same messages are replayed from the same clock', () => {
    const stream: [SourceMessage, string][] = [
      [orders, '0/1000100'],
      [begin(FINAL), '0/1000100'],
      [{ tag: 'insert', relation: orders, new: { id: '7', status: 'a', doc: 'x' } }, '0/1000150'],
      [{ tag: 'update', relation: orders, key: null, old: null, new: { id: '7', status: 'b', doc: 'x' } }, '0/1000180'],
      [commit(FINAL, END), '0/1000200'],
      [begin('0/1000300', T0 + 5n, 701), '0/1000260'],
      [{ tag: 'delete', relation: orders, key: { id: '7', status: undefined, doc: undefined }, old: null }, '0/1000280'],
      [commit('0/1000300', '0/1000330', T0 + 5n), '0/1000300'],
    ];
    const first = events(run(decoder(T0 - 10n), stream));
    const second = events(run(decoder(T0 - 10n), stream));
    expect(second).toEqual(first);
    expect(first.map((e) => [e.op, e.lamport])).toEqual([
      ['insert', T0.toString()],
      ['update', T0.toString()],
      ['delete', (T0 + 5n).toString()],
    ]);
  });

  it('stamps a transaction committed at an earlier time than the previous one with previous + 1', () => {
    const out = run(decoder(T0), [
      [orders, '0/1'],
      [begin(FINAL, T0 - 1_000n), '0/1000100'],
      [{ tag: 'insert', relation: orders, new: { id: '1', status: 's', doc: null } }, '0/1000150'],
      [commit(FINAL, END), '0/1000200'],
    ]);
    expect(events(out)[0]?.lamport).toBe((T0 + 1n).toString());
  });

  it('splits an update that changes the primary key into a delete of the old key and an insert of the new one', () => {
    const out = events(
      run(decoder(), [
        [orders, '0/1'],
        [begin(FINAL), '0/1000100'],
        [
          { tag: 'update', relation: orders, key: { id: '1', status: undefined, doc: undefined }, old: null, new: { id: '2', status: 'moved', doc: 'd' } },
          '0/1000150',
        ],
        [commit(FINAL, END), '0/1000200'],
      ]),
    );
    expect(out.map((e) => [e.op, e.key, e.seq])).toEqual([
      ['delete', ['1'], 0],
      ['insert', ['2'], 1],
    ]);
    expect(out[0]?.before).toEqual({ id: '1' });
    expect(out[1]?.after).toEqual({ id: '2', status: 'moved', doc: 'd' });
    expect(out[0]?.lamport).toBe(out[1]?.lamport);
    // The halves are routed by their own keys: they may well be different partitions.
    expect(partitionOf('public.orders', ['1'], 8)).not.toBe(partitionOf('public.orders', ['2'], 8));
  });

  it('a key change with an unchanged TOAST column inserts the new key first, naming the old key, then deletes the old key', () => {
    const out = events(
      run(decoder(), [
        [orders, '0/1'],
        [begin(FINAL), '0/1000100'],
        [
          { tag: 'update', relation: orders, key: { id: '1', status: undefined, doc: undefined }, old: null, new: { id: '2', status: 'moved', doc: undefined } },
          '0/1000150',
        ],
        [commit(FINAL, END), '0/1000200'],
      ]),
    );
    expect(out.map((e) => [e.op, e.key, e.seq])).toEqual([
      ['insert', ['2'], 0],
      ['delete', ['1'], 1],
    ]);
    // The sink copies `doc` from the row at the old key before that row is deleted.
    expect(out[0]?.before).toEqual({ id: '1' });
    expect(out[0]?.unchanged).toEqual(['doc']);
    expect(out[0]?.after).toEqual({ id: '2', status: 'moved' });
  });

  it('lists an unchanged TOAST column in `unchanged` and leaves it out of `after` (never null)', () => {
    const out = events(
      run(decoder(), [
        [orders, '0/1'],
        [begin(FINAL), '0/1000100'],
        [{ tag: 'update', relation: orders, key: null, old: null, new: { id: '3', status: 'paid', doc: undefined } }, '0/1000150'],
        [commit(FINAL, END), '0/1000200'],
      ]),
    );
    expect(out).toHaveLength(1);
    expect(out[0]?.op).toBe('update');
    expect(out[0]?.unchanged).toEqual(['doc']);
    expect(out[0]?.after).toEqual({ id: '3', status: 'paid' });
    expect(out[0]?.after && 'doc' in out[0].after).toBe(false);
  });

  it('emits one truncate per table with an empty key', () => {
    const out = events(
      run(decoder(), [
        [orders, '0/1'],
        [lines, '0/1'],
        [begin(FINAL), '0/1000100'],
        [{ tag: 'truncate', cascade: false, restartIdentity: false, relations: [orders, lines] }, '0/1000150'],
        [commit(FINAL, END), '0/1000200'],
      ]),
    );
    expect(out.map((e) => [e.op, e.table, e.key, e.seq])).toEqual([
      ['truncate', 'public.orders', [], 0],
      ['truncate', 'public.lines', [], 1],
    ]);
    expect(out[0]?.eventId).not.toBe(out[1]?.eventId);
  });

  it('keys a REPLICA IDENTITY FULL table without primary key by all columns: an update is delete + insert', () => {
    const out = events(
      run(decoder(), [
        [loose, '0/1'],
        [begin(FINAL), '0/1000100'],
        [{ tag: 'update', relation: loose, key: null, old: { a: 'x', b: 'y' }, new: { a: 'x', b: 'z' } }, '0/1000150'],
        [{ tag: 'delete', relation: loose, key: null, old: { a: 'x', b: 'z' } }, '0/1000170'],
        [commit(FINAL, END), '0/1000200'],
      ]),
    );
    expect(out.map((e) => [e.op, e.key])).toEqual([
      ['delete', ['x', 'y']],
      ['insert', ['x', 'z']],
      ['delete', ['x', 'z']],
    ]);
    expect(out[2]?.before).toEqual({ a: 'x', b: 'z' });
  });

  it('marks a transaction that only carries the cdc-heartbeat message as heartbeat-only', () => {
    const out = run(decoder(), [
      [begin(FINAL), '0/1000100'],
      [{ tag: 'message', flags: 1, transactional: true, messageLsn: '0/1000150', prefix: 'cdc-heartbeat', content: new TextEncoder().encode('pg1') }, '0/1000150'],
      [commit(FINAL, END), '0/1000200'],
    ]);
    expect(out.map((item) => item.type)).toEqual(['begin', 'commit']);
    expect(out[1]).toMatchObject({ type: 'commit', heartbeat: true, changes: 0, lamport: T0, commitEndLsn: '0/1000230' });
  });

  it('turns a change to a relation never described, or an unparsable message, into a poison event with its LSN', () => {
    const out = run(decoder(), [
      [begin(FINAL), '0/1000100'],
      [{ tag: 'insert', relation: orders, new: { id: '1', status: 's', doc: null } }, '0/1000150'],
      [{ tag: 'invalid', error: new Error('missing relation'), relationOid: 999 }, '0/1000160'],
      [orders, '0/1000170'],
      [{ tag: 'insert', relation: orders, new: { id: '2', status: 's', doc: null } }, '0/1000180'],
      [commit(FINAL, END), '0/1000200'],
    ]);
    const poison = out.flatMap((item) => (item.type === 'poison' ? [item.error] : []));
    expect(poison).toHaveLength(2);
    expect(poison[0]?.code).toBe('POISON_EVENT');
    expect(poison[0]?.retriable).toBe(false);
    expect(poison[0]?.context).toMatchObject({ table: 'public.orders', lsn: '0/1000150' });
    expect(poison[1]?.context).toMatchObject({ lsn: '0/1000160', relationOid: 999 });
    // The transaction goes on: the next change is decoded, with the first index.
    expect(events(out).map((e) => [e.key, e.seq])).toEqual([[['2'], 0]]);
  });

  it('refuses changes outside a transaction as a protocol error (not retriable)', () => {
    const target = decoder();
    target.decode(orders, '0/1');
    expect(() => target.decode({ tag: 'insert', relation: orders, new: { id: '1', status: null, doc: null } }, '0/2')).toThrow(/outside a transaction/);
  });
});

describe('isoMicros', () => {
  it('keeps microseconds', () => {
    expect(isoMicros(1_000_001n)).toBe('1970-01-01T00:00:01.000001Z');
  });
});
