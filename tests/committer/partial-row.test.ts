/**
 * A change that left TOAST columns out as unchanged (pgoutput 'u') to a row the sink does
 * not have is never written as a partial row with NULLs the source does not have
 * (PITFALLS 29): it is dead-lettered (SINK_ROW_ABSENT) with the reason, the rest of its
 * transaction and batch is applied, and a row the sink does have keeps its values.
 */
import { orderKeyOf, type ChangeEvent } from '@cdc/core';
import { describe, expect, test } from '../harness/index.ts';
import { SourceLog, createPublishingPipeline, createSinkDatabase, deadLetters, openSinkWriter, startCommitter, waitForWatermark } from './support.ts';

const P = 2;

describe('partial rows', () => {
  test('updates and moves with unchanged TOAST columns of rows the sink lacks are dead-lettered, never inserted with NULLs', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('toast');
    await sink.db.query(`CREATE TABLE public.${name} (id integer PRIMARY KEY, name text, body text, _cdc_lsn pg_lsn, _cdc_seq integer)`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const big = 'y'.repeat(5_000);
    // Row 1 is in the sink; rows 5 and 6 never were (they predate the pipeline).
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', name: 'a', body: big } }]));
    const mixed = log.transaction([
      { table: t, op: 'update', key: ['1'], after: { id: '1', name: 'a2', body: null }, unchanged: ['body'] },
      { table: t, op: 'update', key: ['5'], after: { id: '5', name: 'e2', body: null }, unchanged: ['body'] },
      { table: t, op: 'insert', key: ['7'], after: { id: '7', name: 'g', body: big } },
      { table: t, op: 'update', key: ['7'], after: { id: '7', name: 'g2', body: null }, unchanged: ['body'] },
    ]);
    await out.events(mixed);
    // Row 6 moves to key 8 with its body unchanged: the reader's insert(new key, before = old key).
    const moved = log.transaction([
      { table: t, op: 'insert', key: ['8'], before: { id: '6' }, after: { id: '8', name: 'h', body: null }, unchanged: ['body'] },
      { table: t, op: 'delete', key: ['6'], before: { id: '6' } },
    ]);
    await out.events(moved);
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['9'], after: { id: '9', name: 'i', body: 'small' } }]));
    await out.watermark(log.watermark());
    await out.flush();

    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    const { rows } = await sink.db.query(`SELECT id, name, length(body) AS body FROM public.${name} ORDER BY id`);
    expect(rows).toEqual([
      { id: 1, name: 'a2', body: 5_000 },
      { id: 7, name: 'g2', body: 5_000 },
      { id: 9, name: 'i', body: 5 },
    ]);
    const letters = await deadLetters(bus, pipeline);
    expect(letters.map((letter) => [letter.code, letter.eventId, letter.table])).toEqual([
      ['SINK_ROW_ABSENT', mixed[1]?.eventId, t],
      ['SINK_ROW_ABSENT', moved[0]?.eventId, t],
    ]);
    expect(letters[0]?.reason).toMatch(/no row at key .*5.*body.*unchanged/);
    expect(letters[1]?.reason).toMatch(/old key/);
    expect(committer.stats()).toMatchObject({ deadLettered: 2 });
    expect(committer.state).toBe('running');
  });

  test('a replayed move whose new row is already newer writes nothing and refuses nothing; a move of an absent row is refused', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('toast');
    await sink.db.query(`CREATE TABLE public.${name} (id integer PRIMARY KEY, name text, body text, _cdc_lsn pg_lsn, _cdc_seq integer)`);
    const pipeline = ctx.uniqueName('cmt');
    const { writer, epoch } = await openSinkWriter(ctx, sink.url, pipeline);
    const log = new SourceLog({ partitions: 1 });
    const t = `public.${name}`;
    const apply = async (events: ChangeEvent[]) =>
      writer.apply({
        events,
        checkpoints: [{ partition: 0, resumeSeq: 1, lastKey: orderKeyOf(events[events.length - 1]!), watermark: { lamport: log.lamport, positions: { src: log.lastCommitLsn } } }],
        epoch,
        retry: false,
        beforeCommit: async () => undefined,
      });
    expect((await apply(log.transaction([{ table: t, op: 'insert', key: ['2'], after: { id: '2', name: 'b', body: 'long body' } }]))).refusals).toEqual([]);
    const move = log.transaction([
      { table: t, op: 'insert', key: ['3'], before: { id: '2' }, after: { id: '3', name: 'c', body: null }, unchanged: ['body'] },
      { table: t, op: 'delete', key: ['2'], before: { id: '2' } },
    ]);
    const first = await apply(move);
    expect(first.refusals).toEqual([]);
    expect(first.rowsWritten).toBe(2);
    const state = async () => (await sink.db.query(`SELECT id, name, body FROM public.${name} ORDER BY id`)).rows;
    expect(await state()).toEqual([{ id: 3, name: 'c', body: 'long body' }]);

    // The same move again: the old row is gone, the new one holds this version already.
    const replay = await apply(move);
    expect(replay.refusals).toEqual([]);
    expect(replay.rowsWritten).toBe(0);
    expect(await state()).toEqual([{ id: 3, name: 'c', body: 'long body' }]);

    // A move from a key the sink never had: refused whole (nothing at the new key, nothing deleted).
    const absent = log.transaction([
      { table: t, op: 'insert', key: ['4'], before: { id: '40' }, after: { id: '4', name: 'd', body: null }, unchanged: ['body'] },
      { table: t, op: 'delete', key: ['40'], before: { id: '40' } },
    ]);
    const refused = await apply(absent);
    expect(refused.refusals.map((refusal) => [refusal.item, refusal.error.code])).toEqual([[0, 'SINK_ROW_ABSENT']]);
    expect(await state()).toEqual([{ id: 3, name: 'c', body: 'long body' }]);
  });
});
