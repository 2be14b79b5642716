/**
 * Kafka beside PostgreSQL, end to end from a real source:
 *  - both committers consume the same deduped stream, each with its own checkpoints:
 *    the PostgreSQL sink equals the source, Kafka holds every change exactly once;
 *  - what a Debezium consumer parses: a row of many PostgreSQL types, through pgoutput,
 *    comes out with the field names and JSON types Debezium documents for its PostgreSQL
 *    connector, plus BEGIN/END transaction metadata with per-table counts;
 *  - slot feedback waits for the slower sink: with the Kafka committer stopped, the
 *    PostgreSQL sink moves on but the slot is not confirmed past what Kafka holds.
 */
import { Lsn } from '@cdc/core';
import { runWorkload, verifySourceAgainstSink, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import type { TestContext } from '../harness/index.ts';
import { historyCount, waitForSinkToCatchUp } from '../e2e/convergence.ts';
import { createSourceAndSink, withClient } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';
import { parseJson, readTopics } from './support.ts';
import { compareHistories, kafkaHistory, sourceHistory } from './verify.ts';

const TYPED_SQL = `
CREATE TABLE typed (
  id bigint PRIMARY KEY, flag boolean, small int2, qty int4, price numeric(10,2), ratio float8,
  label text, born date, at_utc timestamptz, at_local timestamp, doc jsonb, blob bytea,
  tags text[], uid uuid, version int NOT NULL);`;

const TYPED_ROW = `(1, true, 7, 42, 12.50, 0.25, 'héllo', '2024-02-29', '2024-02-29 12:34:56.789+02',
  '2024-02-29 12:34:56.789', '{"a": [1, 2]}', '\\x00ff10', '{a,"b c"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1)`;

describe('Kafka sink beside the PostgreSQL sink, from a real source', () => {
  test('both sinks exactly once; Debezium types; transaction metadata; the slot waits for the slower sink', { timeout: 600_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'beside');
    for (const url of [dbs.sourceUrl, dbs.sinkUrl]) await withClient(url, (client) => client.query(TYPED_SQL));
    const pipelineName = ctx.uniqueName('beside').toLowerCase();
    const topicPrefix = ctx.uniqueName('beside');
    const partitions = 2;
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: [...WATCHED_TABLES, 'public.typed'] }],
      sinkUrl: dbs.sinkUrl,
      sinks: ['postgres', 'kafka'],
      kafka: { topicPrefix, checkpointTopic: ctx.uniqueName('ckpt'), env: { KAFKA_TRANSACTION_METADATA: 'true' } },
      servers: ctx.servers,
      reorderers: 1,
    });
    ctx.defer('stop pipeline', () => pipeline.stop());

    // One source transaction of two typed rows, then the mixed workload.
    await withClient(dbs.sourceUrl, (client) =>
      client.query(`BEGIN; INSERT INTO typed VALUES ${TYPED_ROW}; INSERT INTO typed (id, version) VALUES (2, 1); COMMIT;`),
    );
    await runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 3_000, clients: 2, seed: 31 });
    const pgCaughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 180_000 });
    expect(pgCaughtUp.caughtUp).toBe(true);

    // --- Debezium shape of the typed row, as a consumer parses it.
    const typed = await readTopics(ctx, [`${topicPrefix}.public.typed`]);
    await typed.until((records) => records.length >= 2, 120_000, 'the two typed rows');
    const value = parseJson<Record<string, unknown>>(typed.records[0]?.value ?? null);
    expect(parseJson(typed.records[0]?.key ?? null)).toEqual({ id: 1 });
    expect(Object.keys(value ?? {}).sort()).toEqual(['after', 'before', 'op', 'source', 'transaction', 'ts_ms', 'ts_ns', 'ts_us']);
    expect(value).toMatchObject({ op: 'c', before: null });
    expect(value?.after).toEqual({
      id: 1,
      flag: true,
      small: 7,
      qty: 42,
      price: '12.50',
      ratio: 0.25,
      label: 'héllo',
      born: 19782, // days since 1970-01-01
      at_utc: '2024-02-29T10:34:56.789Z',
      at_local: 1709210096789000, // µs since epoch (MicroTimestamp)
      doc: '{"a": [1, 2]}',
      blob: Buffer.from([0x00, 0xff, 0x10]).toString('base64'),
      tags: ['a', 'b c'],
      uid: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      version: 1,
    });
    const source = value?.source as Record<string, unknown>;
    expect(source).toMatchObject({ connector: 'postgresql', name: topicPrefix, db: dbs.sourceDb, schema: 'public', table: 'typed', snapshot: 'false', xmin: null });
    for (const field of ['ts_ms', 'txId', 'lsn']) expect(typeof source[field], `source.${field}`).toBe('number');
    expect(typeof source.version).toBe('string');
    expect(JSON.parse(String(source.sequence))).toHaveLength(2);
    const transaction = value?.transaction as { id: string; total_order: number; data_collection_order: number };
    expect(transaction).toMatchObject({ total_order: 1, data_collection_order: 1 });
    expect(transaction.id).toMatch(/^\d+:\d+$/);

    const metadata = await readTopics(ctx, [`${topicPrefix}.transaction`]);
    await metadata.until((records) => records.some((r) => r.value?.includes(transaction.id) && r.value.includes('"END"')), 60_000, 'END of the typed transaction');
    const ofTyped = metadata.records.map((r) => parseJson<Record<string, unknown>>(r.value)).filter((v) => v?.id === transaction.id);
    expect(ofTyped.map((v) => v?.status)).toEqual(['BEGIN', 'END']);
    expect(ofTyped[1]).toMatchObject({ event_count: 2, data_collections: [{ data_collection: 'public.typed', event_count: 2 }] });

    // --- Both sinks hold the workload exactly once.
    const topics = WATCHED_TABLES.map((table) => `${topicPrefix}.${table}`);
    const kafka = await readTopics(ctx, topics);
    const changes = async (): Promise<number> => historyCount(dbs.sourceUrl);
    let expected = await changes();
    await kafka.until((records) => records.filter((r) => r.value !== null).length >= expected, 120_000, `${expected} change records`);
    expect((await verifySourceAgainstSink(dbs.sourceUrl, dbs.sinkUrl)).ok).toBe(true);

    // --- The slot waits for the slower sink: stop Kafka's committer, keep writing.
    await pipeline.process('committer-kafka').stop(15_000);
    // Its etcd keys outlive it by the lease TTL; positions do not move meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const slotBefore = await confirmedLsn(dbs.sourceUrl, `cdc_${pipelineName}_src1`);
    await runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 1_000, clients: 2, seed: 32 });
    expect((await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 120_000 })).caughtUp).toBe(true);
    const postgresCommitted = await waitFor(async () => {
      const lsn = await sinkPosition(ctx.etcd(), pipelineName, 'postgres', 'src1', partitions);
      return lsn !== undefined && slotBefore !== undefined && lsn > slotBefore ? lsn : undefined;
    }, { what: 'the PostgreSQL sink positions past the slot', timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const slotWhileKafkaDown = await confirmedLsn(dbs.sourceUrl, `cdc_${pipelineName}_src1`);
    expect(slotWhileKafkaDown).toBe(slotBefore);
    expect(postgresCommitted > (slotWhileKafkaDown ?? 0n)).toBe(true);

    // Kafka's committer back: it catches up, and the slot moves on.
    await pipeline.restart('committer-kafka');
    expected = await changes();
    await kafka.until((records) => records.filter((r) => r.value !== null).length >= expected, 120_000, `${expected} change records after the restart`);
    await waitFor(async () => ((await confirmedLsn(dbs.sourceUrl, `cdc_${pipelineName}_src1`)) ?? 0n) > (slotWhileKafkaDown ?? 0n), {
      what: 'the slot to move once Kafka caught up',
      timeoutMs: 60_000,
    });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const verification = compareHistories(await sourceHistory(dbs.sourceUrl), kafkaHistory(kafka.records), { tombstones: true });
    expect(verification.mismatches).toEqual([]);
    expect(verification.ok).toBe(true);
    expect((await verifySourceAgainstSink(dbs.sourceUrl, dbs.sinkUrl)).ok).toBe(true);
  });
});

async function confirmedLsn(sourceUrl: string, slot: string): Promise<bigint | undefined> {
  return withClient(sourceUrl, async (client) => {
    const result = await client.query<{ lsn: string | null }>('SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    const text = result.rows[0]?.lsn;
    return text ? (Lsn.parse(text) as bigint) : undefined;
  });
}

/** min over partitions of a sink's published position for `source`, from etcd. */
async function sinkPosition(
  etcd: ReturnType<TestContext['etcd']>,
  pipeline: string,
  sink: string,
  source: string,
  partitions: number,
): Promise<bigint | undefined> {
  const entries = await etcd.getAll().prefix(`/checkpoints/${pipeline}/${sink}/`).strings();
  const positions = Object.values(entries).map((text) => (JSON.parse(text) as { positions: Record<string, string> }).positions[source]);
  if (positions.length < partitions || positions.some((p) => p === undefined)) return undefined;
  return positions.map((p) => (Lsn.parse(p as string) as bigint)).reduce((a, b) => (a < b ? a : b));
}
