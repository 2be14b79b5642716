/**
 * Issue #13 end to end: ALTER TABLE on the SOURCE mid-workload (ADD COLUMN, int → bigint,
 * DROP COLUMN) with all apps running as real processes, SCHEMA_CHANGES=evolve (default).
 * The PostgreSQL sink equals the source row by row (a dropped column is kept on the sink),
 * the Kafka records carry the new field from the first change after the DDL, and nothing
 * reaches the dead-letter stream. The PostgreSQL committer is SIGKILLed around the first
 * change after the DDL and restarted: still exact.
 */
import { Bus } from '@cdc/bus';
import { WATCHED_TABLES } from '@cdc/testkit';
import { pino } from 'pino';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { deadLetters } from '../committer/support.ts';
import { parseJson, readTopics } from '../kafka/support.ts';
import { createSourceAndSink, withClient } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';

const TABLE_SQL = 'CREATE TABLE evolving (id integer PRIMARY KEY, qty integer NOT NULL, note text)';

describe('schema changes on the source', () => {
  test('ADD COLUMN, int→bigint and DROP COLUMN mid-workload, the committer killed after the DDL: both sinks exact, nothing dead-lettered', { timeout: 120_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'schema');
    for (const url of [dbs.sourceUrl, dbs.sinkUrl]) await withClient(url, (client) => client.query(TABLE_SQL));
    const pipelineName = ctx.uniqueName('schema').toLowerCase();
    const topicPrefix = ctx.uniqueName('schema');
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: [...WATCHED_TABLES, 'public.evolving'] }],
      sinkUrl: dbs.sinkUrl,
      sinks: ['postgres', 'kafka'],
      kafka: { topicPrefix, checkpointTopic: ctx.uniqueName('ckpt') },
      servers: ctx.servers,
      reorderers: 1,
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const write = (sql: string) => withClient(dbs.sourceUrl, (client) => client.query(sql));
    const sinkRow = (id: number, columns: string) =>
      withClient(dbs.sinkUrl, async (client) => (await client.query(`SELECT ${columns} FROM evolving WHERE id = $1`, [id]).catch(() => ({ rows: [] }))).rows[0]);

    await write(`INSERT INTO evolving SELECT g, g, 'n' || g FROM generate_series(1, 20) g`);
    await write(`UPDATE evolving SET qty = qty + 100 WHERE id <= 5`);
    await waitFor(async () => (await sinkRow(20, 'id'))?.id === 20, { what: 'the first rows in the sink', timeoutMs: 60_000 });

    // ADD COLUMN; the committer is killed right after the first change that carries it is applied.
    await write(`ALTER TABLE evolving ADD COLUMN colour text`);
    await write(`INSERT INTO evolving (id, qty, note, colour) VALUES (21, 21, 'n21', 'red')`);
    await waitFor(async () => (await sinkRow(21, 'colour'))?.colour === 'red', { what: 'the first change after ADD COLUMN', timeoutMs: 30_000 });
    await pipeline.kill('committer');
    await write(`UPDATE evolving SET colour = 'blue' WHERE id BETWEEN 1 AND 10`);
    await pipeline.restart('committer');

    // int → bigint, then DROP COLUMN note.
    await write(`ALTER TABLE evolving ALTER COLUMN qty TYPE bigint`);
    await write(`UPDATE evolving SET qty = 9000000000 + id WHERE id % 3 = 0`);
    await write(`ALTER TABLE evolving DROP COLUMN note`);
    await write(`INSERT INTO evolving (id, qty, colour) VALUES (22, 22, 'green')`);
    await write(`UPDATE evolving SET colour = 'grey' WHERE id IN (2, 4)`);
    await write(`DELETE FROM evolving WHERE id = 7`);
    await write(`INSERT INTO evolving (id, qty) VALUES (23, 23)`);

    const source = await withClient(dbs.sourceUrl, async (client) => (await client.query(`SELECT id, qty::text AS qty, colour FROM evolving ORDER BY id`)).rows);
    const sink = await waitFor(
      async () => {
        const rows = await withClient(dbs.sinkUrl, async (client) => (await client.query(`SELECT id, qty::text AS qty, colour FROM evolving ORDER BY id`).catch(() => ({ rows: [] }))).rows);
        return JSON.stringify(rows) === JSON.stringify(source) ? rows : undefined;
      },
      { what: 'the sink equal to the source row by row', timeoutMs: 60_000 },
    );
    expect(sink).toEqual(source);
    expect(source).toHaveLength(22);
    // The dropped column stays on the sink: old values kept, NULL for rows inserted after the DROP.
    const notes = await withClient(dbs.sinkUrl, async (client) => (await client.query(`SELECT id, note FROM evolving WHERE id IN (1, 2, 22, 23) ORDER BY id`)).rows);
    expect(notes).toEqual([
      { id: 1, note: 'n1' },
      { id: 2, note: 'n2' },
      { id: 22, note: null },
      { id: 23, note: null },
    ]);
    const qtyType = await withClient(dbs.sinkUrl, async (client) => (await client.query(`SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = 'evolving'::regclass AND attname = 'qty'`)).rows[0]?.t);
    expect(qtyType).toBe('bigint');

    // Kafka: before ADD COLUMN no colour field, from the first change after it the field is there.
    const records = await readTopics(ctx, [`${topicPrefix}.public.evolving`]);
    await records.until((found) => found.some((r) => parseJson<{ after: { id: number } | null }>(r.value)?.after?.id === 23), 60_000, 'the last insert on Kafka');
    const afters = records.records.flatMap((r) => {
      const after = parseJson<{ after: Record<string, unknown> | null }>(r.value)?.after;
      return after ? [after] : [];
    });
    const firstAfterDdl = afters.findIndex((after) => after.id === 21);
    expect(firstAfterDdl).toBeGreaterThan(0);
    for (const after of afters.slice(0, firstAfterDdl)) expect(Object.keys(after).sort()).toEqual(['id', 'note', 'qty']);
    expect(afters[firstAfterDdl]).toEqual({ id: 21, qty: 21, note: 'n21', colour: 'red' });
    expect(afters.find((after) => after.id === 22)).toEqual({ id: 22, qty: 22, colour: 'green' });
    expect(afters.find((after) => after.id === 3 && after.qty === 9_000_000_003)).toBeDefined();

    const bus = await Bus.create({ url: ctx.servers.nats, name: 'schema-test', logger: pino({ level: 'silent' }) });
    ctx.defer('bus close', () => bus.close());
    expect(await deadLetters(bus, pipelineName)).toEqual([]);
  });
});
