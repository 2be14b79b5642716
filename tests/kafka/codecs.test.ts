/**
 * Every compression the Kafka sink offers round-trips: the sink's transactional producer
 * commits a transaction of records compressed with it, the broker stores the batch with
 * that codec (the batch attributes say so), and a read_committed reader gets the same
 * keys, values and tombstones back, in order.
 */
import { Consumer, FetchIsolationLevels } from '@platformatic/kafka';
import { COMPRESSIONS, CommittedReader, TransactionalProducer, closeNow, type Compression, type OutgoingRecord } from '@cdc/sink-kafka';
import { describe, expect, test } from '../harness/index.ts';
import { logger } from '../committer/support.ts';

/** Kafka's codec ids in a record batch's attributes (bits 0-2). */
const CODEC_ID: Record<Compression, number> = { none: 0, gzip: 1, snappy: 2, lz4: 3, zstd: 4 };

describe('Kafka compression', () => {
  test.for(COMPRESSIONS)('%s: stored with that codec, read back whole through read_committed', async (compression, { ctx }) => {
    const brokers = ctx.servers.kafkaBrokers;
    const topic = ctx.uniqueName(`codec-${compression}`);
    const admin = ctx.kafkaAdmin();
    await admin.createTopics({ topics: [topic], partitions: 1, replicas: 1 });
    ctx.defer(`delete topic ${topic}`, () => admin.deleteTopics({ topics: [topic] }));

    const producer = await TransactionalProducer.create({
      connection: { brokers, clientId: ctx.uniqueName('codec') },
      transactionalId: ctx.uniqueName('codec-txn'),
      transactionTimeoutMs: 30_000,
      compression,
      maxRequestBytes: 900_000,
      logger,
    });
    ctx.defer('producer close', () => producer.close());
    // Compressible values (repeated JSON), a unicode one and a tombstone.
    const records: OutgoingRecord[] = Array.from({ length: 500 }, (_, i) => {
      const value = i === 7 ? null : JSON.stringify({ id: i, note: `row ${i} ${'payload '.repeat(20)}`, text: 'zstd/lz4/snappy ✓ ü 東京' });
      return { topic, key: `{"id":${i}}`, value, bytes: 12 + (value?.length ?? 0) };
    });
    await producer.commitTransaction(records);

    const reader = await CommittedReader.create({ brokers, topics: [topic], maxWaitMs: 100 });
    ctx.defer('reader close', () => reader.close());
    const read: { key: string | null; value: string | null }[] = [];
    const deadline = Date.now() + 30_000;
    while (read.length < records.length && Date.now() < deadline) {
      for (const record of await reader.poll()) read.push({ key: record.key?.toString() ?? null, value: record.value?.toString() ?? null });
    }
    expect(read).toEqual(records.map(({ key, value }) => ({ key, value })));

    // What the broker stored: the data batch carries the codec.
    const consumer = new Consumer({ clientId: ctx.uniqueName('raw'), groupId: ctx.uniqueName('raw'), bootstrapBrokers: [...brokers] });
    ctx.defer('raw consumer close', () => closeNow(consumer));
    const metadata = await consumer.metadata({ topics: [topic] });
    const described = metadata.topics.get(topic);
    const response = await consumer.fetch({
      node: described?.partitions[0]?.leader ?? 0,
      maxWaitTime: 100,
      isolationLevel: FetchIsolationLevels.READ_COMMITTED,
      topics: [{ topicId: described?.id ?? '', partitions: [{ partition: 0, currentLeaderEpoch: -1, fetchOffset: 0n, lastFetchedEpoch: -1, partitionMaxBytes: 8_000_000 }] }],
    });
    const batches = response.responses[0]?.partitions[0]?.records ?? [];
    const dataBatches = batches.filter((batch) => (batch.attributes & (1 << 5)) === 0);
    expect(dataBatches.length).toBeGreaterThan(0);
    for (const batch of dataBatches) expect(batch.attributes & 0b111).toBe(CODEC_ID[compression]);
  });
});
