import { IllegalStateError, Lsn, PoisonEventError, computeEventId, type ChangeEvent } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import {
  countByTable,
  stringifyJson,
  toDebeziumRecord,
  toDebeziumRecords,
  tombstoneFor,
  transactionBegin,
  transactionEnd,
  transactionOrders,
  type EnvelopeOptions,
} from '../src/envelope.ts';
import { DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER, PgType } from '../src/values.ts';
import {
  documentedCreateValue,
  documentedTransactionBegin,
  documentedTransactionBlock,
  documentedTransactionEnd,
  documentedTruncateValue,
  shapeOf,
} from './debezium-documented.ts';

const NOW_MS = 1_700_000_000_123;
const options: EnvelopeOptions = { topicPrefix: 'PostgreSQL_server', now: () => NOW_MS };

const customersTypes = { id: PgType.int4, first_name: PgType.varchar, last_name: PgType.varchar, email: PgType.varchar };

function event(overrides: Partial<ChangeEvent> = {}): ChangeEvent {
  const base = {
    source: 'src',
    database: 'postgres',
    table: 'public.customers',
    keyColumns: ['id'],
    key: ['1'],
    op: 'insert' as const,
    before: null,
    after: { id: '1', first_name: 'Anne', last_name: 'Kretchmar', email: 'annek@noanswer.org' },
    unchanged: [],
    columnTypes: customersTypes,
    lsn: '0/16E8F18',
    commitLsn: '0/16E8F50',
    seq: 0,
    xid: 555,
    commitTs: '2019-05-28T08:58:24.863123Z',
    lamport: '1',
    traceId: 't',
    ...overrides,
  };
  const eventId = computeEventId({ source: base.source, table: base.table, key: base.key, lsn: base.lsn, commitLsn: base.commitLsn, seq: base.seq });
  return { kind: 'change', eventId, ...base };
}

function parseValue(record: { value: string | null }): Record<string, unknown> {
  expect(record.value).not.toBeNull();
  return JSON.parse(record.value ?? 'null') as Record<string, unknown>;
}

function sourceOf(value: Record<string, unknown>): Record<string, unknown> {
  return value['source'] as Record<string, unknown>;
}

describe('change event value', () => {
  it('has the documented fields with the documented JSON types, top level and source', () => {
    const value = parseValue(toDebeziumRecord(event(), options));
    expect(shapeOf(value)).toEqual(shapeOf(documentedCreateValue));
    expect(shapeOf(sourceOf(value))).toEqual(shapeOf(documentedCreateValue.source));
    expect(shapeOf(value['after'] as Record<string, unknown>)).toEqual(shapeOf(documentedCreateValue.after));
  });

  it('is a create with the row converted and no before', () => {
    const value = parseValue(toDebeziumRecord(event(), options));
    expect(value['op']).toBe('c');
    expect(value['before']).toBeNull();
    expect(value['after']).toEqual(documentedCreateValue.after);
    expect(value['transaction']).toBeNull();
  });

  it('describes where the change came from', () => {
    const value = parseValue(toDebeziumRecord(event(), { ...options, version: '9.9' }));
    expect(sourceOf(value)).toEqual({
      version: '9.9',
      connector: 'postgresql',
      name: 'PostgreSQL_server',
      ts_ms: 1559033904863,
      ts_us: 1559033904863123,
      ts_ns: 1559033904863123000,
      snapshot: 'false',
      db: 'postgres',
      sequence: JSON.stringify([String(Lsn.parse('0/16E8F50')), String(Lsn.parse('0/16E8F18'))]),
      schema: 'public',
      table: 'customers',
      txId: 555,
      lsn: 24022808,
      xmin: null,
    });
  });

  it('takes the processing time from the clock it is given', () => {
    const value = parseValue(toDebeziumRecord(event(), { ...options, now: () => 42 }));
    expect([value['ts_ms'], value['ts_us'], value['ts_ns']]).toEqual([42, 42_000, 42_000_000]);
  });

  it('writes ts_ns and LSNs beyond 2^53 with all their digits', () => {
    const record = toDebeziumRecord(event({ lsn: 'FFFFFFFF/FFFFFFFF', commitLsn: 'FFFFFFFF/FFFFFFFF' }), options);
    expect(record.value).toContain('"lsn":18446744073709551615');
    expect(record.value).toContain('"ts_ns":1559033904863123000,');
    expect(record.value).toContain(`"ts_ns":${BigInt(NOW_MS) * 1_000_000n},`);
  });

  it('falls back to the configured database, then to ""', () => {
    const legacy = event({ database: undefined });
    expect(sourceOf(parseValue(toDebeziumRecord(legacy, { ...options, database: 'shop' })))['db']).toBe('shop');
    expect(sourceOf(parseValue(toDebeziumRecord(legacy, options)))['db']).toBe('');
  });

  it('marks snapshot reads', () => {
    const value = parseValue(toDebeziumRecord(event(), { ...options, snapshot: true }));
    expect(value['op']).toBe('r');
    expect(sourceOf(value)['snapshot']).toBe('true');
  });

  it('leaves before null for an update without REPLICA IDENTITY FULL, as Debezium does', () => {
    const value = parseValue(toDebeziumRecord(event({ op: 'update', before: null }), options));
    expect(value['op']).toBe('u');
    expect(value['before']).toBeNull();
    expect(value['after']).toEqual(documentedCreateValue.after);
  });

  it('fills before for an update with REPLICA IDENTITY FULL', () => {
    const before = { id: '1', first_name: 'Anne', last_name: 'K', email: 'a@b' };
    const value = parseValue(toDebeziumRecord(event({ op: 'update', before }), options));
    expect(value['before']).toEqual({ id: 1, first_name: 'Anne', last_name: 'K', email: 'a@b' });
  });

  it('never gives a create a before, even when the reader put the old key of a key change there', () => {
    const value = parseValue(toDebeziumRecord(event({ op: 'insert', key: ['2'], before: { id: '1' } }), options));
    expect(value['before']).toBeNull();
  });

  it('writes unchanged TOAST columns as the placeholder', () => {
    const value = parseValue(
      toDebeziumRecord(event({ op: 'update', after: { id: '1', first_name: 'A', last_name: 'B' }, unchanged: ['email'] }), options),
    );
    expect(value['after']).toEqual({ id: 1, first_name: 'A', last_name: 'B', email: DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER });
  });

  it('turns a value it cannot convert into a poison event naming table and column', () => {
    let caught: unknown;
    try {
      toDebeziumRecord(event({ after: { ...documentedCreateValue.after, id: 'one' } as never }), options);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(PoisonEventError);
    expect((caught as PoisonEventError).context).toMatchObject({ table: 'public.customers', column: 'id' });
  });
});

describe('change event key', () => {
  it('is the primary key struct with converted values', () => {
    expect(toDebeziumRecord(event(), options).key).toBe('{"id":1}');
  });

  it('holds every column of a composite key, in key order, exactly', () => {
    const record = toDebeziumRecord(
      event({
        table: 'sales.order_lines',
        keyColumns: ['tenant', 'order_id', 'line'],
        key: ['acme', '9223372036854775807', '3'],
        columnTypes: { tenant: PgType.text, order_id: PgType.int8, line: PgType.int2, qty: PgType.numeric },
        after: { tenant: 'acme', order_id: '9223372036854775807', line: '3', qty: '2.50' },
      }),
      options,
    );
    expect(record.key).toBe('{"tenant":"acme","order_id":9223372036854775807,"line":3}');
    expect(record.value).toContain('"after":{"tenant":"acme","order_id":9223372036854775807,"line":3,"qty":"2.50"}');
  });

  it('is null for a table without key columns', () => {
    expect(toDebeziumRecord(event({ keyColumns: [], key: [] }), options).key).toBeNull();
  });
});

describe('delete', () => {
  const deleted = event({ op: 'delete', before: { id: '1' }, after: null });

  it('carries the old key in before and no after', () => {
    const value = parseValue(toDebeziumRecord(deleted, options));
    expect(value['op']).toBe('d');
    expect(value['before']).toEqual({ id: 1 });
    expect(value['after']).toBeNull();
  });

  it('is followed by a tombstone with the same key by default', () => {
    const records = toDebeziumRecords(deleted, options);
    expect(records).toHaveLength(2);
    expect(records[1]).toEqual({ key: '{"id":1}', value: null });
    expect(tombstoneFor(records[0] ?? { key: null, value: null })).toEqual(records[1]);
  });

  it('has no tombstone when tombstones are off', () => {
    const records = toDebeziumRecords(deleted, { ...options, tombstonesOnDelete: false });
    expect(records).toHaveLength(1);
    expect(parseValue(records[0] ?? { value: null })['op']).toBe('d');
  });

  it('has no tombstone without a key: nothing to compact', () => {
    expect(toDebeziumRecords(event({ op: 'delete', keyColumns: [], key: [], before: { id: '1' }, after: null }), options)).toHaveLength(1);
  });

  it('is the only record for inserts and updates', () => {
    expect(toDebeziumRecords(event(), options)).toHaveLength(1);
  });
});

describe('truncate', () => {
  const truncated = event({ op: 'truncate', key: [], before: null, after: null });

  it('has a null key and an envelope with no rows, shaped as documented', () => {
    const record = toDebeziumRecord(truncated, options);
    expect(record.key).toBeNull();
    const value = parseValue(record);
    expect(value['op']).toBe('t');
    expect(value['before']).toBeNull();
    expect(value['after']).toBeNull();
    expect(shapeOf(value)).toEqual(shapeOf(documentedTruncateValue));
    expect(shapeOf(sourceOf(value))).toEqual(shapeOf(documentedTruncateValue.source));
  });

  it('gets no tombstone', () => {
    expect(toDebeziumRecords(truncated, options)).toHaveLength(1);
  });
});

describe('transaction metadata', () => {
  const tx = { xid: 571, commitLsn: '0/32BB448', commitTs: '2017-02-07T20:49:37.125Z' };
  const txId = `571:${Lsn.parse('0/32BB448')}`;
  const events = [
    event({ ...tx, table: 's2.a', seq: 2, key: ['3'], columnTypes: { id: PgType.int4 }, after: { id: '3' } }),
    event({ ...tx, table: 's1.a', seq: 0, key: ['1'], columnTypes: { id: PgType.int4 }, after: { id: '1' } }),
    event({ ...tx, table: 's1.a', seq: 1, key: ['2'], columnTypes: { id: PgType.int4 }, after: { id: '2' } }),
  ];

  it('numbers events in the transaction and per table', () => {
    const orders = transactionOrders(events);
    expect(events.map((e) => orders.get(e.eventId))).toEqual([
      { totalOrder: 3, dataCollectionOrder: 1 },
      { totalOrder: 1, dataCollectionOrder: 1 },
      { totalOrder: 2, dataCollectionOrder: 2 },
    ]);
  });

  it('enriches the envelope with the documented transaction block', () => {
    const orders = transactionOrders(events);
    const third = events[0] as ChangeEvent;
    const value = parseValue(toDebeziumRecord(third, { ...options, transactionMetadata: true }, orders.get(third.eventId)));
    const block = value['transaction'] as Record<string, unknown>;
    expect(shapeOf(block)).toEqual(shapeOf(documentedTransactionBlock));
    expect(block).toEqual({ id: txId, total_order: 3, data_collection_order: 1 });
  });

  it('refuses to encode without the order when metadata is on', () => {
    expect(() => toDebeziumRecord(events[0] as ChangeEvent, { ...options, transactionMetadata: true })).toThrow(IllegalStateError);
  });

  it('writes BEGIN as documented, keyed by the transaction id', () => {
    const record = transactionBegin(tx);
    expect(JSON.parse(record.key ?? 'null')).toEqual({ id: txId });
    const value = parseValue(record);
    expect(shapeOf(value)).toEqual(shapeOf(documentedTransactionBegin));
    expect(value).toEqual({ status: 'BEGIN', id: txId, ts_ms: 1486500577125, event_count: null, data_collections: null });
  });

  it('writes END with the event count per table, tables in order of first appearance', () => {
    const record = transactionEnd(tx, countByTable(events));
    expect(JSON.parse(record.key ?? 'null')).toEqual({ id: txId });
    const value = parseValue(record);
    expect(shapeOf(value)).toEqual(shapeOf(documentedTransactionEnd));
    expect(value).toEqual({
      status: 'END',
      id: txId,
      ts_ms: 1486500577125,
      event_count: 3,
      data_collections: [
        { data_collection: 's1.a', event_count: 2 },
        { data_collection: 's2.a', event_count: 1 },
      ],
    });
  });

  it('uses one id for BEGIN, every event and END of a transaction', () => {
    const orders = transactionOrders(events);
    const ids = events.map((e) => (parseValue(toDebeziumRecord(e, { ...options, transactionMetadata: true }, orders.get(e.eventId)))['transaction'] as { id: string }).id);
    expect(new Set([...ids, JSON.parse(transactionBegin(tx).value ?? '{}').id, JSON.parse(transactionEnd(tx, countByTable(events)).value ?? '{}').id])).toEqual(
      new Set([txId]),
    );
  });
});

describe('stringifyJson', () => {
  it('matches JSON.stringify where JSON.stringify can write the value', () => {
    const sample = { a: [1, 'x', null, true, { b: -0.5 }], 'quote"d': 'line\nbreak' };
    expect(stringifyJson(sample)).toBe(JSON.stringify(sample));
  });

  it('refuses non-finite numbers instead of writing null', () => {
    expect(() => stringifyJson([Number.NaN])).toThrow(RangeError);
  });
});
