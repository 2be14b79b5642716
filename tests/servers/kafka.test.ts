/**
 * What the Kafka sink relies on: a transactional producer's committed batches become
 * visible to read_committed consumers, aborted ones never do (PITFALLS 18-20). kafkajs
 * 2.2 against Kafka 3.9 (KRaft).
 */
import type { Consumer } from 'kafkajs';
import { describe, expect, test, waitFor, type TestContext } from '../harness/index.ts';

/** Subscribes from the beginning and collects every value; fails fast if the consumer crashes. */
async function collect(ctx: TestContext, topic: string, readUncommitted: boolean): Promise<{ values: string[]; crashes: unknown[]; consumer: Consumer }> {
  const consumer = await ctx.kafkaConsumer({
    groupId: ctx.uniqueName(readUncommitted ? 'uncommitted' : 'committed'),
    readUncommitted,
    maxWaitTimeInMs: 250,
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
    retry: { retries: 3 },
  });
  const values: string[] = [];
  const crashes: unknown[] = [];
  consumer.on(consumer.events.CRASH, (event) => crashes.push(event.payload.error));
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      values.push(message.value?.toString() ?? '<null>');
    },
  });
  return { values, crashes, consumer };
}

describe('Kafka transactions', () => {
  test('a read_committed consumer sees the committed transactions and none of the aborted one', async ({ ctx }) => {
    const admin = await ctx.kafkaAdmin();
    const topic = ctx.uniqueName('sink');
    expect(await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true })).toBe(true);
    ctx.defer(`delete topic ${topic}`, () => admin.deleteTopics({ topics: [topic], timeout: 10_000 }));

    const producer = await ctx.kafkaProducer({
      idempotent: true,
      maxInFlightRequests: 1,
      transactionalId: ctx.uniqueName('txn'),
      transactionTimeout: 30_000,
    });
    const commit1 = await producer.transaction();
    await commit1.send({ topic, messages: [{ key: 'k1', value: 'committed-1' }, { key: 'k2', value: 'committed-2' }] });
    await commit1.commit();
    const aborted = await producer.transaction();
    await aborted.send({ topic, messages: [{ key: 'k3', value: 'aborted-1' }, { key: 'k4', value: 'aborted-2' }] });
    await aborted.abort();
    // A commit after the abort: once it is seen, everything before it in the partition was read.
    const commit2 = await producer.transaction();
    await commit2.send({ topic, messages: [{ key: 'k5', value: 'committed-3' }] });
    await commit2.commit();

    const committed = await collect(ctx, topic, false);
    const uncommitted = await collect(ctx, topic, true);
    const seenLast = (values: string[]) => values.includes('committed-3');
    await waitFor(
      () => {
        const crash = committed.crashes[0] ?? uncommitted.crashes[0];
        if (crash) throw crash;
        return seenLast(committed.values) && seenLast(uncommitted.values);
      },
      { what: 'both consumers to read the last committed message', timeoutMs: 45_000, intervalMs: 100 },
    );

    expect(committed.values).toEqual(['committed-1', 'committed-2', 'committed-3']);
    // The control: read_uncommitted does get the aborted records, so the filter above is real.
    expect(uncommitted.values).toEqual(['committed-1', 'committed-2', 'aborted-1', 'aborted-2', 'committed-3']);
    await committed.consumer.stop();
    await uncommitted.consumer.stop();
  });
});
