/**
 * A source transaction far larger than what the Kafka committer may hold
 * (STREAM_TRANSACTIONS_ABOVE 1,000 events, chunks of 500) goes out as consecutive Kafka
 * transactions, each with the checkpoint of how far it got — including where the source
 * transaction stands (events numbered, counts per table). The real process is SIGKILLed
 * between chunks several times. A read_committed consumer must then find every event
 * exactly once, total_order 1..N without a gap or a repeat across the restarts, and ONE
 * BEGIN and ONE END (counting the whole transaction) on the metadata topic.
 */
import type { ChangeEvent } from '@cdc/core';
import { describe, expect, test } from '../harness/index.ts';
import { DedupedPublisher, SourceLog, committerProcessEnv, createPipeline, publishBigBetweenSmall, waitForNthLine } from '../committer/support.ts';
import { parseJson, readTopics } from './support.ts';

const P = 4;
const BIG = 20_000;
const KILLS = 3;
const TYPES = { id: 23, txn: 23 };

interface Envelope {
  after: { id: number; txn: number } | null;
  transaction: { id: string; total_order: number; data_collection_order: number } | null;
}

interface Metadata {
  status: 'BEGIN' | 'END';
  id: string;
  event_count: number | null;
  data_collections: { data_collection: string; event_count: number }[] | null;
}

describe('Kafka committer process, one source transaction larger than its buffers', () => {
  test('chunked into Kafka transactions: exactly once, numbered on and framed by one BEGIN/END across kills', { timeout: 300_000 }, async ({ ctx }) => {
    const { pipeline, bus } = await createPipeline(ctx);
    const prefix = ctx.uniqueName('kbig');
    const log = new SourceLog({ partitions: P });
    const out = new DedupedPublisher(bus, pipeline, P);
    const typed = (events: ChangeEvent[]): ChangeEvent[] => events.map((event) => ({ ...event, columnTypes: TYPES }));
    await publishBigBetweenSmall(out, log, { table: 'public.big', size: BIG, decorate: typed });

    const env = committerProcessEnv(ctx, pipeline, P, {
      SINK: 'kafka',
      KAFKA_BROKERS: ctx.servers.kafkaBrokers.join(','),
      KAFKA_TOPIC_PREFIX: prefix,
      KAFKA_CHECKPOINT_TOPIC: ctx.uniqueName('ckpt'),
      KAFKA_TRANSACTION_METADATA: 'true',
      KAFKA_TOMBSTONES: 'false',
      BATCH_MAX_EVENTS: '500',
      STREAM_TRANSACTIONS_ABOVE: '1000',
      LOG_LEVEL: 'debug',
    });
    const chunksBeforeKill: number[] = [];
    for (let kill = 0; kill < KILLS; kill++) {
      const app = ctx.spawnApp('apps/committer/src/main.ts', { env, name: `kafka-committer-${kill}` });
      const depth = 2 + kill * 5;
      await waitForNthLine(app, /"inside_transaction":true.*"msg":"kafka transaction committed"/, depth, 120_000);
      app.kill('SIGKILL');
      expect((await app.waitForExit(10_000)).signal).toBe('SIGKILL');
      chunksBeforeKill.push(depth);
    }
    const last = ctx.spawnApp('apps/committer/src/main.ts', { env, name: 'kafka-committer-final' });

    const events = await readTopics(ctx, [`${prefix}.public.big`]);
    const metadata = await readTopics(ctx, [`${prefix}.transaction`]);
    await events.until((records) => records.length >= BIG + 6, 180_000, `${BIG + 6} events`);
    await metadata.until((records) => records.length >= 6, 60_000, 'BEGIN and END of three transactions');
    // Anything written twice would arrive right behind: give it a moment to show.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    last.kill('SIGTERM');
    expect((await last.waitForExit(15_000)).code).toBe(0);

    const envelopes = events.records.map((record) => parseJson<Envelope>(record.value));
    const ids = envelopes.map((envelope) => envelope?.after?.id);
    expect(ids).toHaveLength(BIG + 6);
    expect(new Set(ids).size).toBe(BIG + 6);
    const big = envelopes.filter((envelope) => envelope?.after?.txn === 2);
    expect(big).toHaveLength(BIG);
    // Numbered on across chunks and restarts: 1..BIG, in order, none twice.
    const orders = big.map((envelope) => envelope?.transaction?.total_order);
    expect(orders).toEqual(Array.from({ length: BIG }, (_, i) => i + 1));
    const bigId = big[0]?.transaction?.id;
    const framing = metadata.records.map((record) => parseJson<Metadata>(record.value)).filter((value) => value?.id === bigId);
    expect(framing.map((value) => value?.status)).toEqual(['BEGIN', 'END']);
    expect(framing[1]).toMatchObject({ event_count: BIG, data_collections: [{ data_collection: 'public.big', event_count: BIG }] });
    expect(metadata.records.map((record) => parseJson<Metadata>(record.value)?.status)).toEqual(['BEGIN', 'END', 'BEGIN', 'END', 'BEGIN', 'END']);
    console.log(`[kafka] ${BIG}-event transaction in chunks; killed ${KILLS}× after ${chunksBeforeKill.join(', ')} chunk commits; ${events.records.length} records read_committed`);
  });
});
