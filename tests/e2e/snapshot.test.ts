/**
 * Issue #13, snapshots end to end with every app a real process and both sinks:
 *
 *  1. Initial snapshot (SNAPSHOT_MODE=initial, the default): three tables already full
 *     before the pipeline's first start — a large one, one with a composite key, one with a
 *     TOASTed column — while a workload keeps changing them (updates that leave the TOAST
 *     column unchanged among them), with the reader and the committer each SIGKILLed twice
 *     mid-snapshot. Then: the PostgreSQL sink equals the source row by row, no row was
 *     written twice for one change (the audit trigger: one write per key per commit), every
 *     Kafka key's last record equals the source row, snapshot rows are `op: "r"` with
 *     `source.snapshot: "true"`, and nothing was dead-lettered.
 *  2. Incremental backfill: a table the reader captures but whose rows predate the slot
 *     (SNAPSHOT_MODE=never), backfilled through the signal table while changes stream, the
 *     reader SIGKILLed once mid-backfill: exact, and the job resumed from its last chunk
 *     (fewer chunks read than twice the table).
 *
 * Size: SNAPSHOT_TEST_ROWS (default 60,000 in CI; the figure, 1,000,000, was run by hand).
 */
import { Bus } from '@cdc/bus';
import { readSnapshotJobs } from '@cdc/pg-source';
import pg from 'pg';
import { pino } from 'pino';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { cdc } from '../cli/support.ts';
import { addAuditTrigger, deadLetters } from '../committer/support.ts';
import { parseJson, readTopics } from '../kafka/support.ts';
import { createSourceAndSink, withClient } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';

const ROWS = Number(process.env.SNAPSHOT_TEST_ROWS ?? 60_000);
const PAIRS = 3_000;
const DOCS = 300;

const TABLES_SQL = `
CREATE TABLE snap_big (id bigint PRIMARY KEY, v integer NOT NULL, note text);
CREATE TABLE snap_pair (a integer, b text, v integer NOT NULL, PRIMARY KEY (a, b));
CREATE TABLE snap_doc (id integer PRIMARY KEY, n integer NOT NULL, doc text);
ALTER TABLE snap_doc ALTER COLUMN doc SET STORAGE EXTERNAL;`;

const FILL_SQL = `
INSERT INTO snap_big SELECT g, g, 'row ' || g FROM generate_series(1, ${ROWS}) g;
INSERT INTO snap_pair SELECT g / 3, 'k' || (g % 3), g FROM generate_series(0, ${PAIRS - 1}) g;
INSERT INTO snap_doc SELECT g, 0, repeat(md5(g::text), 200) FROM generate_series(1, ${DOCS}) g;`;

/** Each table's rows as text, in key order: what "row by row" compares. */
const DUMP = {
  snap_big: 'SELECT id::text, v::text, note FROM snap_big ORDER BY id',
  snap_pair: 'SELECT a::text, b, v::text FROM snap_pair ORDER BY a, b',
  snap_doc: 'SELECT id::text, n::text, md5(doc) AS doc FROM snap_doc ORDER BY id',
} as const;

async function dump(url: string, table: keyof typeof DUMP): Promise<string[]> {
  return withClient(url, async (client) => (await client.query<Record<string, string | null>>(DUMP[table]).catch(() => ({ rows: [] }))).rows.map((row) => JSON.stringify(Object.values(row))));
}

async function sinkCount(url: string, table: string): Promise<number> {
  return withClient(url, async (client) => Number((await client.query(`SELECT count(*) AS n FROM ${table}`).catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n ?? 0));
}

/** A bounded workload on the three tables: single-statement transactions, some updates leave the TOAST column unchanged. */
function startWorkload(url: string, rows: number): { stop: () => Promise<number>; finish: () => Promise<number> } {
  let running = true;
  let statements = 0;
  const done = (async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      let i = 0;
      const deadline = Date.now() + 180_000;
      while (running && Date.now() < deadline && i < 20_000) {
        i += 1;
        const id = 1 + ((i * 7919) % rows);
        switch (i % 8) {
          case 0:
            await client.query('DELETE FROM snap_big WHERE id = $1', [id]);
            break;
          case 1:
            await client.query(`INSERT INTO snap_big VALUES ($1, $2, 'new') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v`, [rows + i, i]);
            break;
          case 2:
            // The TOAST column is left unchanged: pgoutput sends it as 'u'.
            await client.query('UPDATE snap_doc SET n = n + 1 WHERE id = $1', [1 + (i % DOCS)]);
            break;
          case 3:
            await client.query('UPDATE snap_pair SET v = v + 1 WHERE a = $1', [i % (PAIRS / 3)]);
            break;
          case 4:
            await client.query(`UPDATE snap_doc SET doc = repeat(md5($2::text), 150) WHERE id = $1`, [1 + ((i * 13) % DOCS), i]);
            break;
          default:
            await client.query(`UPDATE snap_big SET v = v + 1, note = 'upd ' || $2 WHERE id = $1`, [id, i]);
        }
        statements += 1;
        if (i % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      await client.end();
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return statements;
    },
    /** Runs to its own end (20,000 statements or 3 minutes). */
    finish: async () => {
      await done;
      return statements;
    },
  };
}

describe('snapshots', () => {
  test(`initial snapshot of three tables (${ROWS.toLocaleString('en-US')} rows) under a workload, reader and committer each SIGKILLed twice: both sinks exact`, { timeout: 600_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'snap');
    for (const url of [dbs.sourceUrl, dbs.sinkUrl]) await withClient(url, (client) => client.query(TABLES_SQL));
    await withClient(dbs.sourceUrl, (client) => client.query(FILL_SQL));
    const audit = await withClient(dbs.sinkUrl, (client) => addAuditTrigger(client, 'public.snap_big'));

    const pipelineName = ctx.uniqueName('snap').toLowerCase();
    const topicPrefix = ctx.uniqueName('snap');
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: ['public.snap_big', 'public.snap_pair', 'public.snap_doc'] }],
      sinkUrl: dbs.sinkUrl,
      sinks: ['postgres', 'kafka'],
      kafka: { topicPrefix, checkpointTopic: ctx.uniqueName('ckpt') },
      servers: ctx.servers,
      reorderers: 1,
      extraEnv: { SNAPSHOT_CHUNK_ROWS: '1000' },
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const workload = startWorkload(dbs.sourceUrl, ROWS);
    ctx.defer('stop workload', () => workload.stop());

    // Kills at growing shares of the big table in the sink: reader, committer, reader, committer.
    const kills = ['reader:src1', 'committer', 'reader:src1', 'committer'] as const;
    for (const [index, name] of kills.entries()) {
      const share = Math.floor((ROWS * (index + 1)) / (kills.length + 2));
      await waitFor(async () => (await sinkCount(dbs.sinkUrl, 'snap_big')) >= share, { what: `${share} rows of snap_big in the sink`, timeoutMs: 240_000, intervalMs: 200 });
      await pipeline.kill(name);
      await pipeline.restart(name);
    }
    const statements = await workload.stop();
    expect(statements).toBeGreaterThan(500);

    for (const table of Object.keys(DUMP) as (keyof typeof DUMP)[]) {
      const source = await dump(dbs.sourceUrl, table);
      const sink = await waitFor(async () => {
        const rows = await dump(dbs.sinkUrl, table);
        return rows.length === source.length && rows.every((row, i) => row === source[i]) ? rows : undefined;
      }, { what: `${table}: sink equal to source row by row`, timeoutMs: 240_000, intervalMs: 500 }).catch(async (error: unknown) => {
        const rows = await dump(dbs.sinkUrl, table);
        const first = rows.findIndex((row, i) => row !== source[i]);
        throw new Error(`${table}: ${rows.length} sink rows vs ${source.length}; first difference at ${first}: sink ${rows[first]} source ${source[first]}`, { cause: error });
      });
      expect(sink).toEqual(source);
    }
    expect((await dump(dbs.sourceUrl, 'snap_big')).length).toBeGreaterThan(ROWS / 2);

    // No change written twice: per key at most one write per source commit and kind (the
    // workload's transactions are single statements; a delete is audited with the version it removed).
    const twice = await withClient(dbs.sinkUrl, async (client) => (await client.query(`SELECT op, id, lsn::text, count(*) AS n FROM ${audit} GROUP BY op, id, lsn HAVING count(*) > 1 LIMIT 5`)).rows);
    expect(twice).toEqual([]);
    const audited = await withClient(dbs.sinkUrl, async (client) => Number((await client.query(`SELECT count(*) AS n FROM ${audit} WHERE op = 'INSERT'`)).rows[0].n));
    expect(audited).toBeGreaterThanOrEqual(ROWS * 0.9);

    // Kafka: the last record of every key is the source row (or a delete for a key the source no longer has); reads are op "r".
    const topics = ['snap_big', 'snap_pair', 'snap_doc'].map((table) => `${topicPrefix}.public.${table}`);
    const records = await readTopics(ctx, topics);
    const sourceDocs = await withClient(dbs.sourceUrl, async (client) => (await client.query<{ id: number; n: number; doc: string }>('SELECT id, n, doc FROM snap_doc ORDER BY id')).rows);
    const lastDoc = sourceDocs.at(-1);
    const expectedBig = new Map((await dump(dbs.sourceUrl, 'snap_big')).map((row) => {
      const [id, v, note] = JSON.parse(row) as [string, string, string | null];
      return [id, JSON.stringify({ id: Number(id), v: Number(v), note })];
    }));
    // Checked every 2 s, not on every poll: a million records take a while to scan.
    let checkedAt = 0;
    let caughtUp = false;
    await records.until(() => {
      if (Date.now() - checkedAt < 2_000) return caughtUp;
      checkedAt = Date.now();
      const latest = latestByKey(records.records, `${topicPrefix}.public.snap_big`);
      caughtUp = [...expectedBig].every(([id, value]) => latest.get(id) === value);
      return caughtUp;
    }, 480_000, 'every snap_big key on Kafka at its source value');
    const latestBig = latestByKey(records.records, `${topicPrefix}.public.snap_big`);
    for (const [id, value] of latestBig) {
      if (value === null) expect(expectedBig.has(id)).toBe(false);
      else expect(value).toBe(expectedBig.get(id));
    }
    const latestDocs = latestByKey(records.records, `${topicPrefix}.public.snap_doc`);
    for (const doc of sourceDocs) {
      const value = JSON.parse(latestDocs.get(String(doc.id)) ?? 'null') as { n: number; doc?: unknown } | null;
      expect(value?.n).toBe(doc.n);
    }
    expect(lastDoc).toBeDefined();
    const reads = records.records.filter((r) => parseJson<{ op: string }>(r.value)?.op === 'r');
    expect(reads.length).toBeGreaterThan(ROWS / 2);
    expect(parseJson<{ source: { snapshot: string } }>(reads[0]?.value ?? null)?.source.snapshot).toBe('true');

    const jobs = await withClient(dbs.sourceUrl, (client) => readSnapshotJobs(client, `cdc_${pipelineName}_src1`));
    expect(jobs.map((job) => [job.table, job.status]).sort()).toEqual([
      ['public.snap_big', 'done'],
      ['public.snap_doc', 'done'],
      ['public.snap_pair', 'done'],
    ]);

    const bus = await Bus.create({ url: ctx.servers.nats, name: 'snap-test', logger: pino({ level: 'silent' }) });
    ctx.defer('bus close', () => bus.close());
    expect(await deadLetters(bus, pipelineName)).toEqual([]);
  });

  test('SNAPSHOT_MODE=initial_only: the reader publishes the existing rows, then stops by itself with exit 0; the sink holds them all', { timeout: 180_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'snaponly');
    for (const url of [dbs.sourceUrl, dbs.sinkUrl]) await withClient(url, (client) => client.query(TABLES_SQL));
    await withClient(dbs.sourceUrl, (client) => client.query(`INSERT INTO snap_big SELECT g, g, 'row ' || g FROM generate_series(1, 3000) g`));
    const pipeline = await PipelineProcesses.start({
      pipeline: ctx.uniqueName('snaponly').toLowerCase(),
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: ['public.snap_big'] }],
      sinkUrl: dbs.sinkUrl,
      sinks: ['postgres'],
      servers: ctx.servers,
      reorderers: 1,
      extraEnv: { SNAPSHOT_MODE: 'initial_only', SNAPSHOT_CHUNK_ROWS: '700' },
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const status = await pipeline.process('reader:src1').waitForExit(60_000);
    expect(status).toMatchObject({ code: 0 });
    const source = await dump(dbs.sourceUrl, 'snap_big');
    const sink = await waitFor(async () => {
      const rows = await dump(dbs.sinkUrl, 'snap_big');
      return rows.length === source.length ? rows : undefined;
    }, { what: 'the 3000 rows in the sink', timeoutMs: 60_000 });
    expect(sink).toEqual(source);
  });

  test('a table added to TABLES later is added to the reader\'s publication and its existing rows backfilled while it streams: exact', { timeout: 180_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'snapadd');
    for (const url of [dbs.sourceUrl, dbs.sinkUrl]) await withClient(url, (client) => client.query(TABLES_SQL));
    await withClient(dbs.sourceUrl, (client) => client.query(FILL_SQL));
    const pipelineName = ctx.uniqueName('snapadd').toLowerCase();
    const slot = `cdc_${pipelineName}_src1`;
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: ['public.snap_doc'] }],
      sinkUrl: dbs.sinkUrl,
      sinks: ['postgres'],
      servers: ctx.servers,
      reorderers: 1,
      extraEnv: { SNAPSHOT_CHUNK_ROWS: '500' },
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const docs = await dump(dbs.sourceUrl, 'snap_doc');
    await waitFor(async () => ((await dump(dbs.sinkUrl, 'snap_doc')).length === docs.length ? true : undefined), { what: 'snap_doc snapshotted', timeoutMs: 60_000 });
    expect(await sinkCount(dbs.sinkUrl, 'snap_pair')).toBe(0);
    // Changed while not captured: only the backfill can bring these.
    await withClient(dbs.sourceUrl, (client) => client.query('UPDATE snap_pair SET v = v + 1000 WHERE a < 100'));

    await pipeline.restart('reader:src1', { TABLES: 'public.snap_doc,public.snap_pair' });
    // Streamed while the backfill runs.
    await withClient(dbs.sourceUrl, (client) => client.query(`UPDATE snap_pair SET v = -v WHERE a % 7 = 0; DELETE FROM snap_pair WHERE a % 11 = 0; INSERT INTO snap_pair VALUES (5000, 'new', 1)`));
    const source = await dump(dbs.sourceUrl, 'snap_pair');
    const sink = await waitFor(async () => {
      const rows = await dump(dbs.sinkUrl, 'snap_pair');
      return rows.length === source.length && rows.every((row, i) => row === source[i]) ? rows : undefined;
    }, { what: 'snap_pair: sink equal to source row by row', timeoutMs: 120_000, intervalMs: 500 });
    expect(sink).toEqual(source);
    const published = await withClient(dbs.sourceUrl, async (client) => (await client.query(`SELECT tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, [slot])).rows);
    expect(published).toEqual([{ tablename: 'snap_doc' }, { tablename: 'snap_pair' }]);
    const jobs = await withClient(dbs.sourceUrl, (client) => readSnapshotJobs(client, slot));
    expect(jobs.find((job) => job.table === 'public.snap_pair')).toMatchObject({ kind: 'incremental', status: 'done' });
  });

  test('incremental backfill through the signal table while changes stream, the reader SIGKILLed once mid-backfill: exact, resumed from its last chunk', { timeout: 300_000 }, async ({ ctx }) => {
    const rows = Math.max(20_000, Math.floor(ROWS / 3));
    const dbs = await createSourceAndSink(ctx, 'backfill');
    for (const url of [dbs.sourceUrl, dbs.sinkUrl]) await withClient(url, (client) => client.query(TABLES_SQL));
    await withClient(dbs.sourceUrl, (client) => client.query(`INSERT INTO snap_big SELECT g, g, 'old ' || g FROM generate_series(1, ${rows}) g`));
    const pipelineName = ctx.uniqueName('backfill').toLowerCase();
    const slot = `cdc_${pipelineName}_src1`;
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: ['public.snap_big', 'public.snap_pair', 'public.snap_doc'] }],
      sinkUrl: dbs.sinkUrl,
      sinks: ['postgres'],
      servers: ctx.servers,
      reorderers: 1,
      extraEnv: { SNAPSHOT_MODE: 'never', SNAPSHOT_CHUNK_ROWS: '500' },
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    // Never mode: the old rows are not there, only what changes from now on.
    await withClient(dbs.sourceUrl, (client) => client.query(`UPDATE snap_big SET v = -v WHERE id <= 10`));
    await waitFor(async () => (await sinkCount(dbs.sinkUrl, 'snap_big')) === 10, { what: 'the 10 streamed updates alone', timeoutMs: 60_000 });

    const workload = startWorkload(dbs.sourceUrl, rows);
    ctx.defer('stop workload', () => workload.stop());
    // Asked for with the CLI (it writes the signal row).
    const asked = await cdc(['snapshot', 'start', 'public.snap_big', '--slot', slot, '--json'], { SOURCE_DATABASE_URL: dbs.sourceUrl });
    expect(asked.code).toBe(0);
    expect(JSON.parse(asked.stdout)).toMatchObject({ slot, tables: ['public.snap_big'] });
    await waitFor(async () => (await sinkCount(dbs.sinkUrl, 'snap_big')) >= rows / 2, { what: 'half of the backfill in the sink', timeoutMs: 180_000, intervalMs: 200 });
    await pipeline.kill('reader:src1');
    await pipeline.restart('reader:src1');
    // Changes keep streaming until the backfill is done and the workload's 20,000 changes are written.
    await waitFor(async () => (await withClient(dbs.sourceUrl, (client) => readSnapshotJobs(client, slot)))[0]?.status === 'done', { what: 'the backfill done', timeoutMs: 240_000, intervalMs: 500 });
    const streamed = await workload.finish();
    expect(streamed).toBeGreaterThan(5_000);
    console.log(`[snapshot] backfill of ${rows} rows, reader killed once at half; ${streamed} changes streamed meanwhile`);

    const source = await dump(dbs.sourceUrl, 'snap_big');
    const sink = await waitFor(async () => {
      const found = await dump(dbs.sinkUrl, 'snap_big');
      return found.length === source.length && found.every((row, i) => row === source[i]) ? found : undefined;
    }, { what: 'snap_big: sink equal to source row by row', timeoutMs: 180_000, intervalMs: 500 });
    expect(sink).toEqual(source);
    const status = await cdc(['snapshot', 'status', '--slot', slot, '--json'], { SOURCE_DATABASE_URL: dbs.sourceUrl });
    const jobs = JSON.parse(status.stdout) as Awaited<ReturnType<typeof readSnapshotJobs>>;
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({ table: 'public.snap_big', kind: 'incremental', status: 'done' });
    // Resumed, not started again: the chunks read add up to about one pass over the table.
    expect(jobs[0]!.rowsRead).toBeLessThan(rows * 1.5);
  });
});

/** Per key (the record key's payload), the last value's `after` as JSON text, or null after a delete. */
function latestByKey(records: readonly { topic: string; key: string | null; value: string | null }[], topic: string): Map<string, string | null> {
  const latest = new Map<string, string | null>();
  for (const record of records) {
    if (record.topic !== topic || record.key === null) continue;
    const key = parseJson<{ payload?: Record<string, unknown> } & Record<string, unknown>>(record.key);
    const id = String((key?.payload ?? key)?.id);
    if (record.value === null) continue; // tombstone: the delete before it decided
    const envelope = parseJson<{ op: string; after: Record<string, unknown> | null; payload?: { op: string; after: Record<string, unknown> | null } }>(record.value);
    const body = envelope?.payload ?? envelope;
    latest.set(id, body?.op === 'd' ? null : JSON.stringify(body?.after ?? null));
  }
  return latest;
}
