/**
 * Issue #13 (PITFALLS 30): a schema change on the source mid-stream. SCHEMA_CHANGES=evolve
 * makes the PostgreSQL sink follow it (ADD COLUMN, int→bigint, DROP COLUMN kept, a new
 * table created) in the transaction of the change; fail (and anything evolve cannot fix)
 * holds the committer with the error in /readyz until the sink is fixed. Valid data is
 * never dead-lettered for the sink's shape. Real sink PostgreSQL and NATS; events as the
 * dedup gate publishes them, with the reader's column type OIDs.
 */
import type { ChangeEvent } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { addAuditTrigger, createPublishingPipeline, createSinkDatabase, deadLetters, startCommitter, waitForWatermark } from './support.ts';

const P = 2;
const INT4 = 23;
const INT8 = 20;
const TEXT = 25;

const typed = (types: Record<string, number>) => (events: ChangeEvent[]): ChangeEvent[] => events.map((event) => ({ ...event, columnTypes: types }));

describe('schema changes', () => {
  test('evolve: ADD COLUMN, int→bigint and DROP COLUMN mid-stream are followed; nothing is dead-lettered', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('evo');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer, note text)`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const v1 = typed({ id: INT4, qty: INT4, note: TEXT });
    const v2 = typed({ id: INT4, qty: INT4, note: TEXT, colour: TEXT }); // ADD COLUMN colour text
    const v3 = typed({ id: INT4, qty: INT8, note: TEXT, colour: TEXT }); // ALTER qty TYPE bigint
    const v4 = typed({ id: INT4, qty: INT8, colour: TEXT }); // DROP COLUMN note
    await out.events(v1(log.transaction([1, 2, 3].map((id) => ({ table: t, op: 'insert' as const, key: [String(id)], after: { id: String(id), qty: '1', note: `n${id}` } })))));
    await out.events(v2(log.transaction([{ table: t, op: 'insert', key: ['4'], after: { id: '4', qty: '2', note: 'n4', colour: 'red' } }])));
    await out.events(v2(log.transaction([{ table: t, op: 'update', key: ['1'], after: { id: '1', qty: '3', note: 'n1b', colour: 'blue' } }])));
    await out.events(v3(log.transaction([{ table: t, op: 'update', key: ['2'], after: { id: '2', qty: '9000000000', note: 'n2', colour: null } }])));
    await out.events(v4(log.transaction([{ table: t, op: 'insert', key: ['5'], after: { id: '5', qty: '5', colour: 'green' } }])));
    await out.events(v4(log.transaction([{ table: t, op: 'update', key: ['3'], after: { id: '3', qty: '6', colour: 'grey' } }])));
    await out.watermark(log.watermark());
    await out.flush();

    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, schemaChanges: 'evolve' });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    const { rows } = await sink.db.query(`SELECT id, qty::text AS qty, note, colour FROM ${t} ORDER BY id`);
    expect(rows).toEqual([
      { id: 1, qty: '3', note: 'n1b', colour: 'blue' },
      { id: 2, qty: '9000000000', note: 'n2', colour: null },
      // DROP COLUMN note on the source: an update leaves the sink's old value, an insert gets NULL.
      { id: 3, qty: '6', note: 'n3', colour: 'grey' },
      { id: 4, qty: '2', note: 'n4', colour: 'red' },
      { id: 5, qty: '5', note: null, colour: 'green' },
    ]);
    const types = await sink.db.query(
      `SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull FROM pg_attribute WHERE attrelid = $1::regclass AND attname IN ('qty', 'colour') ORDER BY attname`,
      [t],
    );
    expect(types.rows).toEqual([
      { attname: 'colour', type: 'text', attnotnull: false },
      { attname: 'qty', type: 'bigint', attnotnull: false },
    ]);
    expect(await deadLetters(bus, pipeline)).toEqual([]);
    expect(committer.stats()).toMatchObject({ deadLettered: 0, applied: 8 });
  });

  test('fail: a missing sink column holds the committer (its code in readiness, the error in lastFailure), ALTER TABLE on the sink lets it go on, each change exactly once', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('hold');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer)`);
    const audit = await addAuditTrigger(sink.db, t);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const v1 = typed({ id: INT4, qty: INT4 });
    const v2 = typed({ id: INT4, qty: INT4, colour: TEXT });
    await out.events(v1(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', qty: '1' } }])));
    await out.watermark(log.watermark());
    const held = v2(log.transaction([{ table: t, op: 'insert', key: ['2'], after: { id: '2', qty: '2', colour: 'red' } }]));
    await out.events(held);
    await out.events(v2(log.transaction([{ table: t, op: 'update', key: ['1'], after: { id: '1', qty: '7', colour: 'blue' } }])));
    await out.events(v1(log.transaction([{ table: t, op: 'insert', key: ['3'], after: { id: '3', qty: '3' } }])));
    await out.watermark(log.watermark());
    await out.flush();

    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, schemaChanges: 'fail', retry: { initialDelayMs: 50, maxDelayMs: 300 } });
    const readiness = await waitFor(
      async () => {
        // /readyz shows the code only; the failure in full (table, column, event, LSN) is lastFailure (and the log).
        const ready = committer.readiness();
        return !ready.ok && ready.detail === 'retrying:SINK_SCHEMA_HELD' ? { ...ready, detail: committer.lastFailure } : undefined;
      },
      { what: 'the committer holding on the missing column', timeoutMs: 15_000 },
    );
    const event = held[0];
    expect(readiness.detail).toContain(`table=${t}`);
    expect(readiness.detail).toContain('column=colour');
    expect(readiness.detail).toContain(`eventId=${event?.eventId}`);
    expect(readiness.detail).toContain(`lsn=${event?.commitLsn}`);
    // Held: nothing from the change on is applied or committed (the change before it may
    // share its batch, then it waits too).
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect([[], [{ id: 1, qty: 1 }]]).toContainEqual((await sink.db.query(`SELECT id, qty FROM ${t} ORDER BY id`)).rows);
    expect(committer.state).toBe('running');

    await sink.db.query(`ALTER TABLE ${t} ADD COLUMN colour text`);
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect((await sink.db.query(`SELECT id, qty, colour FROM ${t} ORDER BY id`)).rows).toEqual([
      { id: 1, qty: 7, colour: 'blue' },
      { id: 2, qty: 2, colour: 'red' },
      { id: 3, qty: 3, colour: null },
    ]);
    // Exactly once: one write per change (insert 1, insert 2, update 1, insert 3).
    const writes = await sink.db.query(`SELECT op, id FROM ${audit} ORDER BY n`);
    expect(writes.rows).toEqual([
      { op: 'INSERT', id: '1' },
      { op: 'INSERT', id: '2' },
      { op: 'UPDATE', id: '1' },
      { op: 'INSERT', id: '3' },
    ]);
    expect(committer.readiness().ok).toBe(true);
    expect(await deadLetters(bus, pipeline)).toEqual([]);
    expect(committer.stats()).toMatchObject({ deadLettered: 0, applied: 4 });
  });

  test('evolve: a sink column narrower than the source type (smallint for integer) is widened in the same transaction', async ({ ctx }) => {
    // The sink column is smallint, the source's integer: the value 70000 fits the source, not the sink.
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('narrow');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty smallint)`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    await out.events(typed({ id: INT4, qty: INT4 })(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', qty: '70000' } }])));
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    // int2 sink, int4 source: evolve widens it in the same transaction.
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect((await sink.db.query(`SELECT id, qty FROM ${t}`)).rows).toEqual([{ id: 1, qty: 70000 }]);
    expect(await deadLetters(bus, pipeline)).toEqual([]);
  });

  test('a value valid at the source that a narrower sink column refuses (varchar(3), no typmod to widen by) holds; an invalid one is still dead-lettered', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('short');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, code varchar(3), day date)`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const types = typed({ id: INT4, code: 1043, day: 1082 });
    await out.events(types(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', code: 'ab', day: '2024-01-02' } }])));
    await out.events(types(log.transaction([{ table: t, op: 'insert', key: ['2'], after: { id: '2', code: 'ab', day: 'not a day' } }])));
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, retry: { initialDelayMs: 50, maxDelayMs: 300 } });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    // An invalid date is input that can never be applied: dead-lettered as before.
    const letters = await waitFor(async () => ((await deadLetters(bus, pipeline)).length === 1 ? deadLetters(bus, pipeline) : undefined), { what: 'one letter', timeoutMs: 5_000 });
    expect(letters[0]).toMatchObject({ code: 'SINK_VALUE_REFUSED', column: 'day' });
    const mark = log.lamport;
    const held = types(log.transaction([{ table: t, op: 'insert', key: ['3'], after: { id: '3', code: 'toolong', day: '2024-01-03' } }]));
    await out.events(held);
    await out.watermark(log.watermark());
    await out.flush();
    const readiness = await waitFor(
      async () => {
        // /readyz shows the code only; the failure in full (table, column, event, LSN) is lastFailure (and the log).
        const ready = committer.readiness();
        return !ready.ok && ready.detail === 'retrying:SINK_SCHEMA_HELD' ? { ...ready, detail: committer.lastFailure } : undefined;
      },
      { what: 'the committer holding on the too-short column', timeoutMs: 15_000 },
    );
    expect(readiness.detail).toContain('column=code');
    expect(readiness.detail).toContain(`eventId=${held[0]?.eventId}`);
    expect(mark).toBeLessThan(log.lamport);
    await sink.db.query(`ALTER TABLE ${t} ALTER COLUMN code TYPE text`);
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect((await sink.db.query(`SELECT id, code FROM ${t} ORDER BY id`)).rows).toEqual([
      { id: 1, code: 'ab' },
      { id: 3, code: 'toolong' },
    ]);
    expect(await deadLetters(bus, pipeline)).toHaveLength(1);
  });

  test('DROP COLUMN on the source of a NOT NULL sink column holds (not a dead letter) until the sink allows NULL', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('dropnn');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, note text NOT NULL)`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const held = typed({ id: INT4 })(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1' } }]));
    await out.events(held);
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, retry: { initialDelayMs: 50, maxDelayMs: 300 } });
    const readiness = await waitFor(
      async () => {
        // /readyz shows the code only; the failure in full (table, column, event, LSN) is lastFailure (and the log).
        const ready = committer.readiness();
        return !ready.ok && ready.detail === 'retrying:SINK_SCHEMA_HELD' ? { ...ready, detail: committer.lastFailure } : undefined;
      },
      { what: 'the committer holding on the NOT NULL column', timeoutMs: 15_000 },
    );
    expect(readiness.detail).toContain('column=note');
    await sink.db.query(`ALTER TABLE ${t} ALTER COLUMN note DROP NOT NULL`);
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect((await sink.db.query(`SELECT id, note FROM ${t}`)).rows).toEqual([{ id: 1, note: null }]);
    expect(await deadLetters(bus, pipeline)).toEqual([]);
  });
});
