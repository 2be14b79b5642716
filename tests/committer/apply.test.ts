/**
 * The committer against real PostgreSQL, NATS JetStream and etcd, in this process:
 * synthetic deduped.<p> traffic in, sink rows, checkpoints, dead letters and etcd out.
 */
import { orderKeyOf, sleep } from '@cdc/core';
import { FencedError } from '@cdc/sink-pg';
import type pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { createTestContext, describe, expect, test, waitFor, type TestContext } from '../harness/index.ts';
import {
  DedupedPublisher,
  SourceLog,
  addAuditTrigger,
  createPipeline,
  createPublishingPipeline,
  createSinkDatabase,
  deadLetters,
  openSinkWriter,
  startCommitter,
  waitForWatermark,
} from './support.ts';

const P = 4;
let fileCtx: TestContext;
let sink: { url: string; db: pg.Client };

beforeAll(async () => {
  fileCtx = createTestContext();
  sink = await createSinkDatabase(fileCtx);
});

afterAll(async () => {
  await fileCtx.close();
});

async function table(ctx: TestContext, columns: string): Promise<string> {
  const name = ctx.uniqueName('items');
  await sink.db.query(`CREATE TABLE public.${name} (${columns})`);
  ctx.defer(`drop ${name}`, () => sink.db.query(`DROP TABLE IF EXISTS public.${name} CASCADE`));
  return name;
}

async function rows(name: string, columns = 'id, name'): Promise<Record<string, unknown>[]> {
  return (await sink.db.query(`SELECT ${columns} FROM public.${name} ORDER BY id`)).rows;
}

describe('committer', () => {
  test('applies inserts, updates and deletes from every partition, with each row’s version', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text, qty integer');
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    await out.events(log.transaction(Array.from({ length: 20 }, (_, i) => ({ table: t, op: 'insert' as const, key: [String(i + 1)], after: { id: String(i + 1), name: `n${i + 1}`, qty: String(i) } }))));
    await out.events(log.transaction([1, 2, 3].map((id) => ({ table: t, op: 'update' as const, key: [String(id)], after: { id: String(id), name: `u${id}`, qty: '100' } }))));
    await out.events(log.transaction([4, 5].map((id) => ({ table: t, op: 'delete' as const, key: [String(id)], before: { id: String(id) } }))));
    await out.watermark(log.watermark());
    await out.flush();

    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, checkpointStore: undefined });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);

    const expected = Array.from({ length: 20 }, (_, i) => i + 1)
      .filter((id) => id !== 4 && id !== 5)
      .map((id) => ({ id, name: id <= 3 ? `u${id}` : `n${id}`, qty: id <= 3 ? 100 : id - 1 }));
    expect(await rows(name, 'id, name, qty')).toEqual(expected);
    // The guard columns were added and carry each row's version.
    const version = await sink.db.query(`SELECT _cdc_lsn::text AS lsn, _cdc_seq AS seq FROM public.${name} WHERE id = 2`);
    expect(version.rows[0]).toEqual({ lsn: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/), seq: 1 });
    expect(committer.stats()).toMatchObject({ applied: 25, transactions: 3, deadLettered: 0 });
  });

  test('publishes each partition’s committed positions to etcd, with the epoch', async ({ ctx }) => {
    const { CheckpointStore } = await import('@cdc/checkpoint');
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const { pipeline, bus } = await createPipeline(ctx);
    const store = await CheckpointStore.create({ url: ctx.servers.etcd, logger: (await import('./support.ts')).logger });
    ctx.defer('etcd store close', () => store.close());
    const log = new SourceLog({ partitions: P });
    const out = new DedupedPublisher(bus, pipeline, P);
    await out.events(log.transaction(Array.from({ length: 8 }, (_, i) => ({ table: `public.${name}`, op: 'insert' as const, key: [String(i)], after: { id: String(i), name: 'a' } }))));
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, checkpointStore: store });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    const published = await waitFor(
      async () => {
        const map = await store.readPartitions(pipeline);
        return map.size === P && [...map.values()].every((c) => c.lamport === log.lamport.toString()) ? map : undefined;
      },
      { what: 'positions of every partition in etcd', timeoutMs: 10_000 },
    );
    for (let p = 0; p < P; p++) {
      expect(published.get(p)).toMatchObject({ partition: p, positions: { src: log.lastCommitLsn }, lamport: log.lamport.toString(), epoch: committer.epoch });
    }
  });

  test('restarting with its checkpoints, replayed messages apply nothing twice; a full replay is absorbed by the version guard', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const audit = await addAuditTrigger(sink.db, `public.${name}`);
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const history = [
      log.transaction(Array.from({ length: 12 }, (_, i) => ({ table: t, op: 'insert' as const, key: [String(i)], after: { id: String(i), name: 'v1' } }))),
      log.transaction(Array.from({ length: 6 }, (_, i) => ({ table: t, op: 'update' as const, key: [String(i)], after: { id: String(i), name: 'v2' } }))),
      log.transaction(Array.from({ length: 3 }, (_, i) => ({ table: t, op: 'update' as const, key: [String(i)], after: { id: String(i), name: 'v3' } }))),
    ];
    for (const tx of history) await out.events(tx);
    await out.watermark(log.watermark());
    await out.flush();
    const first = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    await first.close();
    const auditAfterFirst = Number((await sink.db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n);
    expect(auditAfterFirst).toBe(21);
    const snapshot = await rows(name);

    // The same messages again (new Nats-Msg-Ids: a replay the stream does not absorb), then one new transaction.
    out.newRound();
    for (const tx of history) await out.events(tx);
    await out.watermark(log.watermark());
    const fresh = log.transaction([{ table: t, op: 'insert', key: ['100'], after: { id: '100', name: 'new' } }]);
    await out.events(fresh);
    await out.watermark(log.watermark());
    await out.flush();
    const second = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(second.stats().replaysSkipped).toBe(21);
    expect(second.stats().applied).toBe(1);
    await second.close();
    expect(await rows(name)).toEqual([...snapshot, { id: 100, name: 'new' }]);

    // Lose the checkpoints entirely: everything is read again from sequence 1. The guard absorbs it.
    await sink.db.query('DELETE FROM cdc_checkpoint WHERE pipeline = $1', [pipeline]);
    const third = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(third.stats().applied).toBeGreaterThan(0);
    expect(await rows(name)).toEqual([...snapshot, { id: 100, name: 'new' }]);
    const writes = await sink.db.query(`SELECT op, id, lsn::text, seq, count(*)::int AS n FROM ${audit} GROUP BY 1, 2, 3, 4 HAVING count(*) > 1`);
    expect(writes.rows).toEqual([]);
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n)).toBe(22);
  });

  test('a stale change (older version) never overwrites or deletes a newer row', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P, { startLsn: 0x5_0000_0000n });
    const t = `public.${name}`;
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', name: 'v1' } }, { table: t, op: 'insert', key: ['2'], after: { id: '2', name: 'v1' } }]));
    await out.events(log.transaction([{ table: t, op: 'update', key: ['1'], after: { id: '1', name: 'v2' } }, { table: t, op: 'update', key: ['2'], after: { id: '2', name: 'v2' } }]));
    await out.watermark(log.watermark());
    // Later in the stream (higher lamport) but from an older position of the same source.
    const stale = new SourceLog({ partitions: P, startLsn: 0x4_0000_0000n, startLamport: log.lamport + 10n });
    await out.events(stale.transaction([{ table: t, op: 'update', key: ['1'], after: { id: '1', name: 'stale' } }, { table: t, op: 'delete', key: ['2'], before: { id: '2' } }]));
    await out.watermark(stale.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, stale.lamport);
    expect(await rows(name)).toEqual([
      { id: 1, name: 'v2' },
      { id: 2, name: 'v2' },
    ]);
  });

  test('an unchanged-TOAST column keeps its sink value', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text, body text');
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const big = 'x'.repeat(10_000);
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', name: 'a', body: big } }]));
    await out.events(log.transaction([{ table: t, op: 'update', key: ['1'], after: { id: '1', name: 'b', body: null }, unchanged: ['body'] }]));
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(await rows(name, 'id, name, length(body) AS body')).toEqual([{ id: 1, name: 'b', body: 10_000 }]);
  });

  test('a column or table the sink lacks is added or created (SCHEMA_CHANGES=evolve), never dead-lettered', async ({ ctx }) => {
    // Issue #13: these were dead-lettered (SINK_COLUMN_MISSING / SINK_TABLE_MISSING) and lost.
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const fresh = ctx.uniqueName('fresh');
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', name: 'a' } }]));
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['2'], after: { id: '2', name: 'b', colour: 'red' } }]));
    await out.events(log.transaction([{ table: `public.${fresh}`, op: 'insert', key: ['9'], after: { id: '9' } }]));
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['3'], after: { id: '3', name: 'c' } }]));
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(await rows(name, 'id, name, colour')).toEqual([
      { id: 1, name: 'a', colour: null },
      { id: 2, name: 'b', colour: 'red' },
      { id: 3, name: 'c', colour: null },
    ]);
    expect((await sink.db.query(`SELECT id FROM public.${fresh}`)).rows).toEqual([{ id: '9' }]);
    expect(await deadLetters(bus, pipeline)).toEqual([]);
    expect(committer.state).toBe('running');
    expect(committer.stats()).toMatchObject({ deadLettered: 0, applied: 4 });
  });

  test('values the column types refuse are dead-lettered with the column and SQLSTATE, without a crash', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, qty integer, code varchar(3)');
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const first = log.transaction([
      { table: t, op: 'insert', key: ['1'], after: { id: '1', qty: '5', code: 'ab' } },
      { table: t, op: 'insert', key: ['2'], after: { id: '2', qty: 'abc', code: 'ab' } },
    ]);
    await out.events(first);
    const tooLong = log.transaction([{ table: t, op: 'insert', key: ['3'], after: { id: '3', qty: '1', code: 'toolong' } }]);
    await out.events(tooLong);
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['4'], after: { id: '4', qty: '7', code: 'xyz' } }]));
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(await rows(name, 'id, qty, code')).toEqual([
      { id: 1, qty: 5, code: 'ab' },
      { id: 4, qty: 7, code: 'xyz' },
    ]);
    const letters = await deadLetters(bus, pipeline);
    expect(letters.map((l) => [l.eventId, l.column, l.sqlstate, l.code])).toEqual([
      [first[1]?.eventId, 'qty', '22P02', 'SINK_VALUE_REFUSED'],
      [tooLong[0]?.eventId, 'code', '22001', 'SINK_VALUE_REFUSED'],
    ]);
    expect(letters[0]?.reason).toMatch(/qty.*integer/);
    expect(committer.state).toBe('running');
    expect(committer.stats().isolatedBatches).toBeGreaterThan(0);
  });

  test('TABLE_MAP routes a source table to another sink table', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    await out.events(log.transaction([{ table: 'app.customers', op: 'insert', key: ['1'], after: { id: '1', name: 'mapped' } }]));
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, tableMap: new Map([['app.customers', `public.${name}`]]) });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(await rows(name)).toEqual([{ id: 1, name: 'mapped' }]);
  });

  test('a second committer fences the first: its next batch fails with FencedError and it stops without writing', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const audit = await addAuditTrigger(sink.db, `public.${name}`);
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', name: 'a' } }]));
    await out.watermark(log.watermark());
    await out.flush();
    const older = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);

    const newer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    expect(newer.epoch).toBe(older.epoch + 1);
    await out.events(log.transaction([{ table: t, op: 'update', key: ['1'], after: { id: '1', name: 'b' } }, { table: t, op: 'insert', key: ['2'], after: { id: '2', name: 'c' } }]));
    await out.watermark(log.watermark());
    await out.flush();

    const failure = await Promise.race([older.closed(), new Promise((resolve) => setTimeout(() => resolve('timeout'), 15_000))]);
    expect(failure).toBeInstanceOf(FencedError);
    expect(failure).toMatchObject({ code: 'COMMITTER_FENCED', retriable: false });
    expect(older.state).toBe('failed');
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(await rows(name)).toEqual([
      { id: 1, name: 'b' },
      { id: 2, name: 'c' },
    ]);
    expect(newer.stats().applied).toBe(2);
    expect(older.stats().applied).toBe(1);
    const stored = await sink.db.query('SELECT DISTINCT epoch::int AS epoch FROM cdc_checkpoint WHERE pipeline = $1', [pipeline]);
    expect(stored.rows).toEqual([{ epoch: newer.epoch }]);
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n)).toBe(3);
  });

  test('sink connections killed while it applies: batches are retried, every version is still written exactly once', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const audit = await addAuditTrigger(sink.db, `public.${name}`);
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const transactions = 1500;
    for (let j = 0; j < transactions; j++) {
      await out.events(
        log.transaction([
          { table: t, op: j < 10 ? 'insert' : 'update', key: [String(j % 10)], after: { id: String(j % 10), name: `v${j}` } },
          { table: t, op: 'insert', key: [String(1000 + j)], after: { id: String(1000 + j), name: 'x' } },
        ]),
      );
      if (j % 10 === 9) await out.watermark(log.watermark());
    }
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, batchMaxEvents: 40, batchLingerMs: 2 });
    let terminated = 0;
    for (let i = 0; i < 15; i++) {
      await sleep(20 + Math.random() * 40);
      const result = await sink.db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [`cdc-committer-${pipeline}`]);
      terminated += result.rowCount ?? 0;
    }
    await waitForWatermark(sink.db, pipeline, P, log.lamport, 60_000);
    expect(terminated).toBeGreaterThan(0);
    expect(committer.stats().retries).toBeGreaterThan(0);
    expect(committer.state).toBe('running');
    const current = await sink.db.query(`SELECT id, name FROM public.${name} WHERE id < 10 ORDER BY id`);
    expect(current.rows).toEqual(Array.from({ length: 10 }, (_, id) => ({ id, name: `v${transactions - 10 + id}` })));
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM public.${name}`)).rows[0].n)).toBe(10 + transactions);
    const twice = await sink.db.query(`SELECT op, id, lsn::text, seq FROM ${audit} GROUP BY 1, 2, 3, 4 HAVING count(*) > 1`);
    expect(twice.rows).toEqual([]);
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n)).toBe(2 * transactions);
  });

  test('a streamed transaction: a refused row is dead-lettered, connections killed mid-stream roll it back, it commits whole and once', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, qty integer NOT NULL');
    const audit = await addAuditTrigger(sink.db, `public.${name}`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const size = 6_000;
    const big = log.transaction(
      Array.from({ length: size }, (_, i) => ({ table: t, op: 'insert' as const, key: [String(i)], after: { id: String(i), qty: i === 3_333 ? 'abc' : String(i) } })),
    );
    await out.events(big);
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, batchMaxEvents: 200, streamAbove: 500, batchLingerMs: 2 });
    // Kill the connection holding the open sink transaction, twice, while it streams.
    let terminated = 0;
    for (let i = 0; i < 500 && terminated < 2 && committer.stats().streamedTransactions === 0; i++) {
      await sleep(10);
      const result = await sink.db.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND xact_start < now() - interval '50 ms'",
        [`cdc-committer-${pipeline}`],
      );
      terminated += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) > 0) await waitFor(() => committer.stats().recoveries >= terminated, { what: 'the committer to recover', timeoutMs: 20_000 });
    }
    await waitForWatermark(sink.db, pipeline, P, log.lamport, 60_000);
    const stats = committer.stats();
    expect(stats).toMatchObject({ streamedTransactions: 1, transactions: 1, applied: size - 1, deadLettered: 1 });
    expect(terminated).toBe(2);
    expect(stats.recoveries).toBe(2);
    expect(committer.state).toBe('running');
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM public.${name}`)).rows[0].n)).toBe(size - 1);
    const letters = await deadLetters(bus, pipeline);
    // Dead-lettered before COMMIT: a rolled-back attempt may have published it too (same Nats-Msg-Id).
    expect([...new Set(letters.map((l) => [l.eventId, l.column, l.sqlstate].join()))]).toEqual([[big[3_333]?.eventId, 'qty', '22P02'].join()]);
    const twice = await sink.db.query(`SELECT op, id, lsn::text, seq FROM ${audit} GROUP BY 1, 2, 3, 4 HAVING count(*) > 1`);
    expect(twice.rows).toEqual([]);
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n)).toBe(size - 1);
    console.log(`[committer] streamed ${size}-row transaction: ${terminated} connections killed, ${stats.recoveries} recoveries`);
  });

  test('closed while a streamed transaction is open: rolled back, nothing of it visible; the next committer applies it whole', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, qty integer NOT NULL');
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    const size = 5_000;
    await out.events(log.transaction(Array.from({ length: size }, (_, i) => ({ table: `public.${name}`, op: 'insert' as const, key: [String(i)], after: { id: String(i), qty: '1' } }))));
    await out.watermark(log.watermark());
    await out.flush();
    const options = { pipeline, partitions: P, sinkUrl: sink.url, batchMaxEvents: 100, streamAbove: 200, batchLingerMs: 2 };
    const first = await startCommitter(ctx, options);
    // Drain once the sink transaction is open and a few chunks in.
    await waitFor(
      async () => {
        const { rows: open } = await sink.db.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND xact_start < now() - interval '30 ms'", [`cdc-committer-${pipeline}`]);
        return open.length > 0;
      },
      { what: 'an open streamed sink transaction', timeoutMs: 20_000, intervalMs: 5 },
    );
    await first.close();
    expect(first.state).toBe('closed');
    expect(first.stats().streamedTransactions).toBe(0);
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM public.${name}`)).rows[0].n)).toBe(0);
    const second = await startCommitter(ctx, options);
    await waitForWatermark(sink.db, pipeline, P, log.lamport, 60_000);
    expect(second.stats()).toMatchObject({ streamedTransactions: 1, applied: size });
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM public.${name}`)).rows[0].n)).toBe(size);
  });

  test('a streamed transaction arriving slowly, with heartbeats below it in between, is committed only once whole', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, qty integer NOT NULL');
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, batchMaxEvents: 100, streamAbove: 200, batchLingerMs: 2 });
    const size = 3_000;
    const before = log.watermark();
    const events = log.transaction(Array.from({ length: size }, (_, i) => ({ table: `public.${name}`, op: 'insert' as const, key: [String(i)], after: { id: String(i), qty: '1' } })));
    let partial = 0;
    for (let start = 0; start < size; start += 300) {
      await out.events(events.slice(start, start + 300));
      await out.flush();
      await sleep(40);
      // The reorderer's heartbeats while the transaction is still arriving (below its
      // lamport), after the committer took what it could: batches of watermarks only.
      for (let p = 0; p < P; p++) await out.raw(p, before, `hb-slow:${p}:${start}`);
      await out.flush();
      await sleep(40);
      const visible = Number((await sink.db.query(`SELECT count(*) AS n FROM public.${name}`)).rows[0].n);
      if (visible !== 0) partial += 1;
    }
    expect(partial).toBe(0);
    await out.watermark(log.watermark());
    await out.flush();
    await waitForWatermark(sink.db, pipeline, P, log.lamport, 30_000);
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM public.${name}`)).rows[0].n)).toBe(size);
    expect(committer.stats()).toMatchObject({ streamedTransactions: 1, transactions: 1, applied: size });
  });

  test('a retried batch whose COMMIT had landed (outcome unknown to the client) is not applied again', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const audit = await addAuditTrigger(sink.db, `public.${name}`);
    const pipeline = ctx.uniqueName('cmt');
    const { writer, pool, epoch } = await openSinkWriter(ctx, sink.url, pipeline);
    const log = new SourceLog({ partitions: 1 });
    const events = log.transaction([{ table: `public.${name}`, op: 'insert', key: ['1'], after: { id: '1', name: 'a' } }]);
    const checkpoints = [{ partition: 0, resumeSeq: 3, lastKey: orderKeyOf(events[0]!), watermark: { lamport: log.lamport, positions: { src: log.lastCommitLsn } } }];
    const request = { events, checkpoints, epoch, retry: false, beforeCommit: async () => undefined };
    expect((await writer.apply(request)).mode).toBe('batched');
    expect((await writer.apply({ ...request, retry: true })).mode).toBe('already-committed');
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n)).toBe(1);
    // A writer whose epoch is no longer the owner's writes nothing.
    const newer = await pool.query('UPDATE cdc_owner SET epoch = epoch + 1 WHERE pipeline = $1 RETURNING epoch', [pipeline]);
    expect(Number(newer.rows[0].epoch)).toBe(epoch + 1);
    await expect(writer.apply({ ...request, checkpoints: [{ ...checkpoints[0]!, resumeSeq: 4 }] })).rejects.toBeInstanceOf(FencedError);
  });

  test('an undecodable message on deduped.<p> is dead-lettered and the partition moves on', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    await out.raw(2, new TextEncoder().encode('{not json'), 'garbage-1');
    await out.raw(1, { kind: 'mystery', lamport: '1' }, 'garbage-2');
    await out.events(log.transaction([{ table: `public.${name}`, op: 'insert', key: ['1'], after: { id: '1', name: 'a' } }]));
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(await rows(name)).toEqual([{ id: 1, name: 'a' }]);
    const letters = await deadLetters(bus, pipeline);
    expect(letters.map((l) => [l.code, l.partition]).sort()).toEqual([
      ['POISON_EVENT', 1],
      ['POISON_EVENT', 2],
    ]);
    expect(letters.find((l) => l.partition === 2)?.payload).toBe('{not json');
  });

  test('one poison item inside a batch message is dead-lettered alone; its neighbours in the same message are applied', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const { pipeline, bus } = await createPipeline(ctx);
    const log = new SourceLog({ partitions: P });
    const out = new DedupedPublisher(bus, pipeline, P);
    const t = `public.${name}`;
    const [a, b, c] = log.transaction([1, 2, 3].map((id) => ({ table: t, op: 'insert' as const, key: [String(id)], after: { id: String(id), name: `n${id}` } })));
    await out.batch(0, [a!, new TextEncoder().encode('{"kind":"change","table":"x"'), b!, c!]);
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(await rows(name)).toEqual([
      { id: 1, name: 'n1' },
      { id: 2, name: 'n2' },
      { id: 3, name: 'n3' },
    ]);
    const letters = await deadLetters(bus, pipeline);
    expect(letters.map((l) => [l.code, l.partition, l.payload])).toEqual([['POISON_EVENT', 0, '{"kind":"change","table":"x"']]);
  });

  test('a message holding several source transactions, cut by the sink batch limit, is applied whole per transaction and resumed inside the message without repeats', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text');
    const audit = await addAuditTrigger(sink.db, `public.${name}`);
    await sink.db.query(`ALTER TABLE ${audit} ADD COLUMN sink_xid bigint DEFAULT txid_current()`);
    const { pipeline, bus } = await createPipeline(ctx);
    const log = new SourceLog({ partitions: P });
    const out = new DedupedPublisher(bus, pipeline, P);
    const t = `public.${name}`;
    const sizes = [3, 3, 2, 4];
    let id = 0;
    const transactions = sizes.map((size) => log.transaction(Array.from({ length: size }, () => ({ table: t, op: 'insert' as const, key: [String(++id)], after: { id: String(id), name: 'v' } }))));
    // All four in ONE message on partition 0: 12 events, a sink batch holds at most 4.
    await out.batch(0, transactions.flat());
    await out.watermark(log.watermark());
    await out.flush();
    const first = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, batchMaxEvents: 4 });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    const perSource = await sink.db.query<{ lsn: string; rows: string; xids: string }>(
      `SELECT lsn::text, count(*) AS rows, count(DISTINCT sink_xid) AS xids FROM ${audit} GROUP BY lsn ORDER BY lsn`,
    );
    // Each source transaction whole in one sink transaction; never two sink transactions for one.
    expect(perSource.rows.map((r) => [Number(r.rows), Number(r.xids)])).toEqual(sizes.map((size) => [size, 1]));
    // The batch limit (4, closed at the first transaction boundary at or past it) really cut
    // the one message across sink transactions: 3+3 | 2+4.
    const perSink = await sink.db.query<{ n: string }>(`SELECT count(DISTINCT lsn) AS n FROM ${audit} GROUP BY sink_xid ORDER BY min(n)`);
    expect(perSink.rows.map((r) => Number(r.n))).toEqual([2, 2]);

    // A new committer resumes from the checkpoints (inside that message): nothing again.
    await first.close();
    const before = Number((await sink.db.query<{ n: string }>(`SELECT count(*) AS n FROM ${audit}`)).rows[0]?.n);
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, batchMaxEvents: 4 });
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect(Number((await sink.db.query<{ n: string }>(`SELECT count(*) AS n FROM ${audit}`)).rows[0]?.n)).toBe(before);
    expect(before).toBe(12);
  });

  test('throughput: applies 20 000 single-row transactions over 4 partitions', async ({ ctx }) => {
    const name = await table(ctx, 'id integer PRIMARY KEY, name text, qty integer, note text');
    const { pipeline, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    const total = 20_000;
    for (let i = 0; i < total; i++) {
      await out.events(log.transaction([{ table: t, op: 'insert', key: [String(i)], after: { id: String(i), name: `n${i}`, qty: String(i % 100), note: 'some text' } }]));
      if (i % 100 === 99) await out.watermark(log.watermark());
    }
    await out.watermark(log.watermark());
    await out.flush();
    const started = Date.now();
    const committer = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, batchMaxEvents: 2000, batchLingerMs: 50 });
    await waitForWatermark(sink.db, pipeline, P, log.lamport, 60_000);
    const seconds = (Date.now() - started) / 1000;
    const stats = committer.stats();
    console.log(`[committer] throughput: ${total} events in ${seconds.toFixed(2)} s = ${Math.round(total / seconds)} events/s (${stats.batches} batches)`);
    expect(stats.applied).toBe(total);
    expect(Number((await sink.db.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n)).toBe(total);
  });
});
