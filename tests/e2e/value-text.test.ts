/**
 * Values arrive intact whatever the source's session settings (PITFALLS 23). A source
 * database with `DateStyle = 'German, DMY'`, `IntervalStyle = sql_standard`,
 * `bytea_output = escape`, `extra_float_digits = 0` and a non-UTC TimeZone: pgoutput would
 * format column text with those, and the sink would swap day and month or refuse rows.
 * Every pipeline connection pins the value-text settings, so:
 *  - the PostgreSQL sink row equals the source row column by column, both read as text
 *    under the server's default settings;
 *  - the Kafka values are what a default-settings source gives (Debezium's documented JSON);
 *  - a connection whose server formats values otherwise is refused with a clear error.
 */
import { assertValueTextSettings, connectSource, SourceSettingsError } from '@cdc/pg-source';
import { convertValue } from '@cdc/sink-kafka';
import { WATCHED_TABLES } from '@cdc/testkit';
import pg from 'pg';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { parseJson, readTopics } from '../kafka/support.ts';
import { createSourceAndSink, withClient } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';

const TYPES_SQL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
  id bigint PRIMARY KEY, price numeric(12,4), born date, at_local timestamp, at_utc timestamptz,
  wait interval, blob bytea, ratio float8, tiny float4, days date[], doc jsonb, uid uuid, feeling mood,
  clock time, version int NOT NULL);`;

const ROWS = `
INSERT INTO typed VALUES
 (1, 12.5, '2024-03-04', '2024-03-04 05:06:07.891011', '2024-03-04 05:06:07.5+01', '1 year 2 mons 3 days 04:05:06.7',
  '\\x00ff10', 0.1, 1.5, '{2024-03-04,2024-12-31}', '{"a": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', '13:14:15', 1),
 (2, -0.0001, '1999-12-31', '2000-01-02 03:04:05', '2000-01-02 03:04:05-08', '-1 days +02:03:04',
  '\\x5c00275c', 'NaN', '-Infinity', '{}', '[]', '00000000-0000-0000-0000-000000000000', 'sad', '00:00:00', 1),
 (3, 'NaN', '0045-02-28 BC', '2024-02-29 23:59:59.999999', 'infinity', '-3 mons +10:00:00',
  '', 1.7976931348623157e308, 3.4028235e38, NULL, 'null', NULL, NULL, '23:59:59.999999', 1),
 (4, 99999999.9999, '2024-10-13', '2024-10-13 00:00:00', '2024-10-13 00:00:00+00', '00:00:00.000001',
  '\\x7f80', 2.2250738585072014e-308, 1e-45, '{2020-01-01}', '{"k": "\\u00e9"}', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'ok', '12:00:00', 1);`;

const COLUMNS = ['id', 'price', 'born', 'at_local', 'at_utc', 'wait', 'blob', 'ratio', 'tiny', 'days', 'doc', 'uid', 'feeling', 'clock', 'version'];

/** Rows as text under the server's default settings (no options: the postgres role has none set). */
async function rowsAsText(url: string): Promise<Record<string, string | null>[]> {
  return withClient(url, async (client) => {
    const result = await client.query<Record<string, string | null>>(
      `SELECT ${COLUMNS.map((column) => `${column}::text AS ${column}`).join(', ')} FROM typed ORDER BY id`,
    );
    return result.rows;
  });
}

async function overrideSettings(client: pg.Client, database: string): Promise<void> {
  for (const setting of ["DateStyle = 'German, DMY'", 'IntervalStyle = sql_standard', 'bytea_output = escape', 'extra_float_digits = 0', "TimeZone = 'America/New_York'"]) {
    await client.query(`ALTER DATABASE ${database} SET ${setting}`);
  }
}

describe('value text', () => {
  test("a source with German DateStyle, sql_standard intervals, escaped bytea and 0 float digits reaches both sinks unchanged", { timeout: 300_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'vtext');
    const reference = await createSourceAndSink(ctx, 'vref');
    for (const url of [dbs.sourceUrl, dbs.sinkUrl, reference.sourceUrl]) await withClient(url, (client) => client.query(TYPES_SQL));
    await withClient(ctx.servers.postgres, (client) => overrideSettings(client, dbs.sourceDb));
    // The override is real: a plain connection to the source sees German dates.
    expect(await withClient(dbs.sourceUrl, async (client) => (await client.query(`SELECT '2024-03-04'::date::text AS d`)).rows[0]?.d)).toBe('04.03.2024');

    const pipelineName = ctx.uniqueName('vtext').toLowerCase();
    const topicPrefix = ctx.uniqueName('vtext');
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: [...WATCHED_TABLES, 'public.typed'] }],
      sinkUrl: dbs.sinkUrl,
      sinks: ['postgres', 'kafka'],
      kafka: { topicPrefix, checkpointTopic: ctx.uniqueName('ckpt') },
      servers: ctx.servers,
      reorderers: 1,
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    // The literals are ISO text; the writer's session reads them as ISO whatever the defaults.
    const write = (sql: string) => withClient(dbs.sourceUrl, (client) => client.query(`SET DateStyle = 'ISO, MDY'; SET IntervalStyle = postgres; ${sql}`));
    await write(ROWS);
    await write(`UPDATE typed SET version = 2, born = '2024-01-12', wait = '-2 days 03:00:00' WHERE id = 1`);

    // --- PostgreSQL: column by column as text, both sides under the server's defaults.
    const source = await withClient(dbs.sourceUrl, async (client) => {
      await client.query("SET DateStyle = 'ISO, MDY'; SET IntervalStyle = postgres; SET bytea_output = hex; SET extra_float_digits = 1; SET TimeZone = 'UTC'");
      return (await client.query(`SELECT ${COLUMNS.map((column) => `${column}::text AS ${column}`).join(', ')} FROM typed ORDER BY id`)).rows;
    });
    const sinkRows = await waitFor(
      async () => {
        const rows = await rowsAsText(dbs.sinkUrl);
        return rows.length === 4 && rows[0]?.version === '2' ? rows : undefined;
      },
      { what: 'the four typed rows (and the update) in the sink', timeoutMs: 120_000 },
    );
    expect(source[0]?.born).toBe('2024-01-12');
    expect(sinkRows).toEqual(source);

    // --- Kafka: each record's values are what the same text under default settings converts to.
    const types = await withClient(dbs.sourceUrl, async (client) =>
      Object.fromEntries(
        (await client.query<{ name: string; oid: number }>(`SELECT attname AS name, atttypid::int AS oid FROM pg_attribute WHERE attrelid = 'typed'::regclass AND attnum > 0 AND NOT attisdropped`)).rows.map(
          (row) => [row.name, row.oid],
        ),
      ),
    );
    const records = await readTopics(ctx, [`${topicPrefix}.public.typed`]);
    await records.until((found) => found.filter((r) => r.value !== null).length >= 5, 120_000, 'five typed records');
    const latest = new Map<number, Record<string, unknown>>();
    for (const record of records.records) {
      const after = parseJson<{ after: Record<string, unknown> | null }>(record.value)?.after;
      if (after) latest.set(Number(after.id), after);
    }
    const plainJson = (value: unknown): unknown => JSON.parse(JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v)));
    for (const row of source) {
      const expected = Object.fromEntries(COLUMNS.map((column) => [column, plainJson(convertValue(row[column] ?? null, Number(types[column])))]));
      expect(latest.get(Number(row.id)), `row ${row.id}`).toEqual(expected);
    }
    // Debezium's documented JSON for the first row, independent of our converter.
    expect(latest.get(1)).toMatchObject({ id: 1, born: 19734, price: '12.5000', blob: Buffer.from([0x00, 0xff, 0x10]).toString('base64'), ratio: 0.1, at_utc: '2024-03-04T04:06:07.5Z' });
  });

  test('a connection whose server formats values otherwise is refused naming the settings; ours pins them against database and role defaults', async ({ ctx }) => {
    const admin = await ctx.pg();
    const db = ctx.uniqueName('vset').toLowerCase();
    await admin.query(`CREATE DATABASE ${db}`);
    ctx.defer(`drop ${db}`, () => admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`));
    await withClient(ctx.servers.postgres, (client) => overrideSettings(client, db));
    const url = new URL(ctx.servers.postgres);
    url.pathname = `/${db}`;
    // Every DateStyle and order the server knows, and the other settings, as database defaults.
    for (const style of ['ISO', 'SQL', 'Postgres', 'German']) {
      for (const order of ['DMY', 'MDY', 'YMD']) {
        await admin.query(`ALTER DATABASE ${db} SET DateStyle = '${style}, ${order}'`);
        const pinned = await connectSource(url.toString(), 'value-text-test');
        try {
          await assertValueTextSettings(pinned, url.toString(), 'test');
          const { rows } = await pinned.query(`SELECT '2024-03-04 05:06:07.5+01'::timestamptz::text AS ts, '2024-03-04'::date::text AS d,
            '1 day -02:00:00'::interval::text AS i, '\\x00ff'::bytea::text AS b, 0.1::float8::text AS f`);
          expect(rows[0], `${style}, ${order}`).toEqual({ ts: '2024-03-04 04:06:07.5+00', d: '2024-03-04', i: '1 day -02:00:00', b: '\\x00ff', f: '0.1' });
        } finally {
          await pinned.end();
        }
        // Without the pinned options the same server formats otherwise, and the check says so.
        const plain = new pg.Client({ connectionString: url.toString() });
        await plain.connect();
        try {
          const error = await assertValueTextSettings(plain, url.toString(), 'test').catch((e: unknown) => e);
          if (style === 'ISO') {
            expect((error as SourceSettingsError).message).not.toContain('DateStyle');
          } else {
            expect(error, `${style}, ${order}`).toBeInstanceOf(SourceSettingsError);
            expect((error as SourceSettingsError).message).toContain(`DateStyle=${style}, ${order}`);
          }
          expect((error as SourceSettingsError).message).toMatch(/IntervalStyle=sql_standard.*bytea_output=escape.*extra_float_digits=0/);
        } finally {
          await plain.end();
        }
      }
    }
  });
});
