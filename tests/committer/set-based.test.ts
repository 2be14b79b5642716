/**
 * The PostgreSQL sink's set-based statements (unnest arrays, named prepared statements per
 * table shape) against a real sink: repeated keys inside one batch, values of every kind
 * through array literals, and prepared statements that outlive a change of the table.
 */
import { orderKeyOf, type ChangeEvent } from '@cdc/core';
import type { LaneCheckpoint } from '@cdc/committer';
import type { SinkWriter } from '@cdc/sink-pg';
import type pg from 'pg';
import { describe, expect, test, type TestContext } from '../harness/index.ts';
import { SourceLog, addAuditTrigger, createSinkDatabase, openSinkWriter, type RowChange } from './support.ts';

async function setup(ctx: TestContext, columns: string): Promise<{ db: pg.Client; pool: pg.Pool; name: string; apply: (events: ChangeEvent[]) => ReturnType<SinkWriter['apply']> }> {
  const sink = await createSinkDatabase(ctx);
  const name = ctx.uniqueName('set');
  await sink.db.query(`CREATE TABLE public.${name} (${columns})`);
  const pipeline = ctx.uniqueName('setp');
  const { writer, pool, epoch } = await openSinkWriter(ctx, sink.url, pipeline);
  let resumeSeq = 0;
  const apply = (events: ChangeEvent[]): ReturnType<SinkWriter['apply']> => {
    resumeSeq += 1;
    const last = events.at(-1);
    const checkpoints: LaneCheckpoint[] = [{ partition: 0, resumeSeq, lastKey: last ? orderKeyOf(last) : undefined, watermark: undefined }];
    return writer.apply({ events, checkpoints, epoch, retry: false, beforeCommit: async () => undefined });
  };
  return { db: sink.db, pool, name, apply };
}

/** Named statements prepared on each of the pool's (two) connections. */
async function preparedOnPool(pool: pg.Pool): Promise<number> {
  const clients = [await pool.connect(), await pool.connect()];
  try {
    let count = 0;
    for (const client of clients) {
      count += Number((await client.query(`SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'cdc\\_%'`)).rows[0].n);
    }
    return count;
  } finally {
    for (const client of clients) client.release();
  }
}

describe('set-based sink statements', () => {
  test('a snapshot read writes a row the sink lacks or holds older, and nothing over a row already equal to it (triggers see one write per change)', async ({ ctx }) => {
    const { db, name, apply } = await setup(ctx, 'id integer PRIMARY KEY, name text, doc jsonb');
    const audit = await addAuditTrigger(db, `public.${name}`);
    const t = `public.${name}`;
    const log = new SourceLog({ partitions: 1 });
    const row = (id: number, value: string) => ({ id: String(id), name: value, doc: `{"v": "${value}"}` });
    // Streamed first: rows 1 and 2 as they are now, row 3 at an older value.
    await apply(log.transaction([1, 2].map((id) => ({ table: t, op: 'insert' as const, key: [String(id)], after: row(id, `n${id}`) }))));
    await apply(log.transaction([{ table: t, op: 'insert', key: ['3'], after: row(3, 'old') }]));
    // Then a chunk's reads: 1 equal, 2 equal, 3 newer, 4 absent from the sink.
    const reads = log.transaction([1, 2, 3, 4].map((id) => ({ table: t, op: 'read' as const, key: [String(id)], after: row(id, `n${id}`) })));
    expect(await apply(reads)).toMatchObject({ mode: 'batched', refusals: [] });
    expect((await db.query(`SELECT id, name, doc::text AS doc FROM ${t} ORDER BY id`)).rows).toEqual([1, 2, 3, 4].map((id) => ({ id, name: `n${id}`, doc: `{"v": "n${id}"}` })));
    const writes = (await db.query(`SELECT op, id FROM ${audit} ORDER BY n`)).rows;
    expect(writes).toEqual([
      { op: 'INSERT', id: '1' },
      { op: 'INSERT', id: '2' },
      { op: 'INSERT', id: '3' },
      { op: 'UPDATE', id: '3' },
      { op: 'INSERT', id: '4' },
    ]);
  });

  test('a batch that inserts, updates and deletes the same key applies the final state of every key, each write once', async ({ ctx }) => {
    const { db, name, apply } = await setup(ctx, 'id integer PRIMARY KEY, name text');
    const audit = await addAuditTrigger(db, `public.${name}`);
    const t = `public.${name}`;
    const log = new SourceLog({ partitions: 1 });
    const up = (op: 'insert' | 'update', id: number, value: string): RowChange => ({ table: t, op, key: [String(id)], after: { id: String(id), name: value } });
    const del = (id: number): RowChange => ({ table: t, op: 'delete', key: [String(id)], before: { id: String(id) } });
    // One source transaction, one sink batch: key 1 ends deleted, key 2 updated twice, key 3
    // deleted and inserted again, key 4 untouched after its insert.
    const events = log.transaction([
      up('insert', 1, 'a1'),
      up('insert', 2, 'a2'),
      up('update', 1, 'b1'),
      up('insert', 3, 'a3'),
      up('update', 2, 'b2'),
      del(1),
      up('update', 2, 'c2'),
      del(3),
      up('insert', 4, 'a4'),
      up('insert', 3, 'again3'),
    ]);
    const outcome = await apply(events);
    expect(outcome).toMatchObject({ mode: 'batched', refusals: [] });
    expect((await db.query(`SELECT id, name, _cdc_seq AS seq FROM public.${name} ORDER BY id`)).rows).toEqual([
      { id: 2, name: 'c2', seq: 6 },
      { id: 3, name: 'again3', seq: 9 },
      { id: 4, name: 'a4', seq: 8 },
    ]);
    // Every change wrote exactly once, in order: 7 upserts and 2 deletes that found their row.
    const writes = (await db.query(`SELECT op, id, seq FROM ${audit} ORDER BY n`)).rows;
    expect(writes).toEqual([
      { op: 'INSERT', id: '1', seq: 0 },
      { op: 'INSERT', id: '2', seq: 1 },
      { op: 'UPDATE', id: '1', seq: 2 },
      { op: 'INSERT', id: '3', seq: 3 },
      { op: 'UPDATE', id: '2', seq: 4 },
      { op: 'DELETE', id: '1', seq: 2 },
      { op: 'UPDATE', id: '2', seq: 6 },
      { op: 'DELETE', id: '3', seq: 3 },
      { op: 'INSERT', id: '4', seq: 8 },
      { op: 'INSERT', id: '3', seq: 9 },
    ]);
    expect(outcome.rowsWritten).toBe(10);
  });

  test('values of every kind survive the column arrays: NULL, quotes, braces, json, bytea, numeric, arrays and 2-D arrays', async ({ ctx }) => {
    const columns = 'id integer PRIMARY KEY, t text, s varchar(12), n numeric(20,6), j jsonb, js json, b bytea, tags integer[], grid integer[], words text[], ts timestamptz, d date';
    const { db, name, apply } = await setup(ctx, columns);
    const t = `public.${name}`;
    const log = new SourceLog({ partitions: 1 });
    const full = {
      t: 'say "hi", {braces} \\ back\\slash',
      s: 'NULL',
      n: '-12345678901234.500001',
      j: '{"a": [1, "two", null], "b": {"c": "\\"q\\""}}',
      js: '{ "keep":  "spacing" }',
      b: '\\x00ff5c22',
      tags: '{1,NULL,3}',
      grid: '{{1,2},{3,4}}',
      words: '{"a,b","c\\"d",NULL,"NULL"}',
      ts: '2026-12-02 10:00:00.5+00',
      d: '2026-12-02',
    };
    const empty = Object.fromEntries(Object.keys(full).map((column) => [column, null]));
    const events = log.transaction([
      { table: t, op: 'insert', key: ['1'], after: { id: '1', ...full } },
      { table: t, op: 'insert', key: ['2'], after: { id: '2', ...empty } },
      { table: t, op: 'insert', key: ['3'], after: { id: '3', ...full, t: '', s: ' ', words: '{}' } },
    ]);
    expect(await apply(events)).toMatchObject({ mode: 'batched', refusals: [], rowsWritten: 3 });
    const text = Object.keys(full).map((column) => `${column}::text AS ${column}`).join(', ');
    const stored = (await db.query(`SELECT id, ${text} FROM public.${name} ORDER BY id`)).rows;
    expect(stored).toEqual([
      {
        id: 1,
        ...full,
        j: '{"a": [1, "two", null], "b": {"c": "\\"q\\""}}',
        ts: '2026-12-02 10:00:00.5+00',
      },
      { id: 2, ...empty },
      { id: 3, ...full, t: '', s: ' ', words: '{}' },
    ]);
    expect(stored[0]?.grid).toBe('{{1,2},{3,4}}');
  });

  test('named statements go on working after the sink table changes: a column added, a column retyped', async ({ ctx }) => {
    const { db, pool, name, apply } = await setup(ctx, 'id integer PRIMARY KEY, name text, qty integer');
    const t = `public.${name}`;
    const log = new SourceLog({ partitions: 1 });
    const inserts = (from: number, extra: Record<string, string> = {}): ChangeEvent[] =>
      log.transaction(Array.from({ length: 5 }, (_, i) => ({ table: t, op: 'insert' as const, key: [String(from + i)], after: { id: String(from + i), name: `n${from + i}`, qty: '1', ...extra } })));
    const updateOnly = (ids: number[], qty: string): ChangeEvent[] =>
      log.transaction(ids.map((id) => ({ table: t, op: 'update' as const, key: [String(id)], after: { id: String(id), qty, name: null }, unchanged: ['name'] })));
    // Several batches of each shape: both pool connections prepare them.
    for (let round = 0; round < 4; round++) {
      expect(await apply(inserts(round * 10))).toMatchObject({ mode: 'batched', refusals: [] });
      expect(await apply(updateOnly([round * 10, round * 10 + 1], '2'))).toMatchObject({ mode: 'batched', refusals: [], rowsWritten: 2 });
    }
    expect(await preparedOnPool(pool)).toBeGreaterThanOrEqual(2);

    await db.query(`ALTER TABLE public.${name} ADD COLUMN note text`);
    // The same shapes again, through the statements prepared before the change.
    for (let round = 4; round < 8; round++) {
      expect(await apply(inserts(round * 10))).toMatchObject({ mode: 'batched', refusals: [] });
      expect(await apply(updateOnly([round * 10], '3'))).toMatchObject({ mode: 'batched', refusals: [], rowsWritten: 1 });
    }
    // Events that carry the new column: the catalog looks the table up again, a new shape.
    expect(await apply(inserts(100, { note: 'new' }))).toMatchObject({ mode: 'batched', refusals: [] });

    // qty becomes bigint: the cached shape still casts to integer[] and the first big value is
    // refused; the table is looked up again and the batch applied with the new shape.
    await db.query(`ALTER TABLE public.${name} ALTER COLUMN qty TYPE bigint`);
    const big = log.transaction([{ table: t, op: 'update', key: ['100'], after: { id: '100', name: 'n100', qty: '5000000000', note: 'big' } }]);
    expect(await apply(big)).toMatchObject({ refusals: [], rowsWritten: 1 });
    expect(await apply(inserts(200, { qty: '6000000000' }))).toMatchObject({ mode: 'batched', refusals: [], rowsWritten: 5 });
    expect(await apply(updateOnly([200, 201], '7000000000'))).toMatchObject({ mode: 'batched', refusals: [], rowsWritten: 2 });

    const counts = (await db.query(`SELECT count(*)::int AS n, count(note)::int AS notes, max(qty)::text AS max FROM public.${name}`)).rows[0];
    expect(counts).toEqual({ n: 8 * 5 + 5 + 5, notes: 5, max: '7000000000' });
    expect((await db.query(`SELECT id, name, qty::text, note FROM public.${name} WHERE id IN (0, 40, 100, 201) ORDER BY id`)).rows).toEqual([
      { id: 0, name: 'n0', qty: '2', note: null },
      { id: 40, name: 'n40', qty: '3', note: null },
      { id: 100, name: 'n100', qty: '5000000000', note: 'big' },
      { id: 201, name: 'n201', qty: '7000000000', note: null },
    ]);
  });
});
