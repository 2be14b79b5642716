import { changeEvent } from '@cdc/testkit';
import { describe, expect, test } from 'vitest';
import { createTableSql, shapeChanges, typeNameForOid, widening } from '../src/evolve.ts';
import type { SinkColumn, SinkTable } from '../src/schema.ts';

const noLookup = async (): Promise<string | undefined> => undefined;

function column(name: string, typeOid: number, castType: string, position: number, maxLength?: number): SinkColumn {
  return { name, castType, fullType: castType, maxLength, generated: false, position, typeOid };
}

const table: SinkTable = {
  source: 'public.items',
  qualified: '"public"."items"',
  display: 'public.items',
  primaryKey: ['id'],
  columns: new Map([
    ['id', column('id', 23, 'integer', 1)],
    ['qty', column('qty', 21, 'smallint', 2)],
    ['code', column('code', 1043, 'character varying', 3, 3)],
    ['big', column('big', 20, 'bigint', 4)],
  ]),
};

describe('type widening rules', () => {
  test.each([
    [21, 23, 'widen', 'integer'],
    [23, 20, 'widen', 'bigint'],
    [21, 20, 'widen', 'bigint'],
    [20, 1700, 'widen', 'numeric'],
    [700, 701, 'widen', 'double precision'],
    [1043, 25, 'widen', 'text'],
    [1042, 25, 'widen', 'text'],
    [1042, 1043, 'widen', 'character varying'],
  ])('sink %i, source %i → %s %s', (sink, source, kind, to) => {
    expect(widening(sink, source)).toEqual({ kind, to });
  });

  test.each([
    [20, 23],
    [20, 21],
    [701, 700],
    [25, 1043],
    [23, 23],
    [1043, 1043],
    [1700, 20],
  ])('sink %i already holds source %i', (sink, source) => {
    expect(widening(sink, source)).toEqual({ kind: 'fits' });
  });

  test.each([
    [23, 25],
    [25, 3802],
    [701, 1700],
    [1700, 701],
  ])('sink %i and source %i are unrelated (left to the casts)', (sink, source) => {
    expect(widening(sink, source)).toEqual({ kind: 'unrelated' });
  });
});

describe('OID → type name', () => {
  test('built-in OIDs are named without asking the sink', async () => {
    expect(await typeNameForOid(20, noLookup)).toBe('bigint');
    expect(await typeNameForOid(1043, noLookup)).toBe('character varying');
    expect(await typeNameForOid(3802, noLookup)).toBe('jsonb');
    expect(await typeNameForOid(1184, noLookup)).toBe('timestamp with time zone');
    // bpchar without its length would be char(1): text keeps every value.
    expect(await typeNameForOid(1042, noLookup)).toBe('text');
  });

  test('another built-in OID is asked of the sink; a user-defined or unknown OID is not named', async () => {
    const asked: number[] = [];
    const lookup = async (oid: number): Promise<string | undefined> => {
      asked.push(oid);
      return oid === 3904 ? 'int4range' : oid === 9999 ? '???' : undefined;
    };
    expect(await typeNameForOid(3904, lookup)).toBe('int4range');
    expect(await typeNameForOid(9999, lookup)).toBeUndefined();
    expect(await typeNameForOid(16_400, lookup)).toBeUndefined();
    expect(await typeNameForOid(0, lookup)).toBeUndefined();
    expect(asked).toEqual([3904, 9999]);
  });
});

describe('shape changes for an event', () => {
  const event = (after: Record<string, string | null>, columnTypes: Record<string, number>) =>
    changeEvent({ table: 'public.items', keyColumns: ['id'], key: ['1'], op: 'insert', after, columnTypes, commitLsn: '0/1000', seq: 0, lamport: 1 });

  test('a new column is added with the type of its OID, a wider source type widens the sink column', async () => {
    const changes = await shapeChanges(event({ id: '1', qty: '70000', colour: 'red', code: 'abc' }, { id: 23, qty: 23, colour: 25, code: 1043 }), table, noLookup);
    expect(changes).toEqual([
      { sql: 'ALTER TABLE "public"."items" ALTER COLUMN "qty" TYPE integer', what: 'widened column qty from smallint to integer', column: 'qty' },
      { sql: 'ALTER TABLE "public"."items" ADD COLUMN IF NOT EXISTS "colour" text', what: 'added column colour text', column: 'colour' },
    ]);
  });

  test('a column the event no longer carries and a narrower source type change nothing', async () => {
    expect(await shapeChanges(event({ id: '1', big: '5' }, { id: 23, big: 23 }), table, noLookup)).toEqual([]);
  });

  test('a new column of a user-defined type holds (SinkSchemaError naming the column)', async () => {
    const held = await shapeChanges(event({ id: '1', mood: 'happy' }, { id: 23, mood: 16_500 }), table, noLookup);
    expect(held).toMatchObject({ code: 'SINK_SCHEMA_HELD', retriable: true, context: { table: 'public.items', column: 'mood' } });
  });

  test('a missing table is created with the key as primary key and the guard columns', async () => {
    const sql = await createTableSql('public.fresh', event({ id: '1', name: 'a' }, { id: 20, name: 25 }), noLookup);
    expect(sql).toBe(
      'CREATE TABLE IF NOT EXISTS "public"."fresh" ("id" bigint NOT NULL, "name" text, _cdc_lsn pg_lsn, _cdc_seq integer, PRIMARY KEY ("id"))',
    );
  });
});
