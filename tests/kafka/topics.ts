/**
 * Reading Kafka topics the way a downstream consumer does (read_committed unless asked
 * otherwise), collecting every record. No vitest import: the demo and the bench use it.
 */
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { waitFor } from '../harness/wait.ts';

export interface KafkaRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly key: string | null;
  readonly value: string | null;
  /** CreateTime (ms since the epoch) as the producer set it. */
  readonly timestamp?: number;
}

export interface TopicReader {
  readonly records: KafkaRecord[];
  /** Resolves once `done(records)` holds; rejects after `timeoutMs` with what was read. */
  until(done: (records: readonly KafkaRecord[]) => boolean, timeoutMs: number, what: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Consumes `topics` from the beginning; the caller closes it. Topics named
 * exactly are waited for (bounded): the committer creates them when their first record
 * is due, and subscribing to a topic that does not exist yet fails.
 */
export async function consumeTopics(
  kafka: Kafka,
  topics: readonly (string | RegExp)[],
  options: { readUncommitted?: boolean; topicTimeoutMs?: number } = {},
): Promise<TopicReader> {
  const named = topics.filter((topic): topic is string => typeof topic === 'string');
  if (named.length > 0) {
    const admin = kafka.admin();
    await admin.connect();
    try {
      await waitFor(async () => {
        const existing = new Set(await admin.listTopics());
        return named.every((topic) => existing.has(topic));
      }, { what: `topics ${named.join(', ')}`, timeoutMs: options.topicTimeoutMs ?? 120_000 });
    } finally {
      await admin.disconnect();
    }
  }
  const groupId = `cdc-reader-${randomUUID()}`;
  const consumer = kafka.consumer({
    groupId,
    readUncommitted: options.readUncommitted ?? false,
    maxWaitTimeInMs: 200,
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
    // New topics matching a regex are picked up by a metadata refresh.
    metadataMaxAge: 1_000,
  });
  await consumer.connect();
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await consumer.disconnect().catch(() => undefined);
    const admin = kafka.admin();
    await admin
      .connect()
      .then(() => admin.deleteGroups([groupId]))
      .catch(() => undefined)
      .finally(() => admin.disconnect().catch(() => undefined));
  };
  const crashes: unknown[] = [];
  consumer.on(consumer.events.CRASH, (event) => crashes.push(event.payload.error));
  await consumer.subscribe({ topics: [...topics], fromBeginning: true });
  const records: KafkaRecord[] = [];
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      records.push({
        topic,
        partition,
        offset: message.offset,
        key: message.key?.toString() ?? null,
        value: message.value?.toString() ?? null,
        timestamp: Number(message.timestamp),
      });
    },
  });
  return {
    records,
    close,
    async until(done, timeoutMs, what) {
      const deadline = Date.now() + timeoutMs;
      while (!done(records)) {
        if (crashes.length > 0) throw new Error(`kafka reader crashed: ${String(crashes[0])}`);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${records.length} records read)`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
  };
}

