/**
 * Reading Kafka topics the way a downstream consumer does (read_committed unless asked
 * otherwise), collecting every record. No vitest import: the demo and the bench use it.
 * The reading is @cdc/sink-kafka's CommittedReader (see there why not the client's own
 * consumer: its read_committed filter lets aborted records through).
 */
import { CommittedReader, connectionOptions, type KafkaSecurity } from '@cdc/sink-kafka';

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
 * Consumes `topics` from the beginning in the background; the caller closes it. Topics
 * are waited for (bounded): the committer creates them when their first record is due.
 */
export async function consumeTopics(
  brokers: readonly string[],
  topics: readonly string[],
  options: { readUncommitted?: boolean; topicTimeoutMs?: number; security?: KafkaSecurity } = {},
): Promise<TopicReader> {
  const deadline = Date.now() + (options.topicTimeoutMs ?? 120_000);
  let reader: CommittedReader | undefined;
  for (;;) {
    try {
      reader = await CommittedReader.create({
        brokers,
        clientId: 'cdc-test-reader',
        topics,
        maxWaitMs: 200,
        ...connectionOptions(options.security),
        ...(options.readUncommitted ? { readUncommitted: true } : {}),
      });
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`topics ${topics.join(', ')} not readable: ${error instanceof Error ? error.message : String(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
  const records: KafkaRecord[] = [];
  const failures: unknown[] = [];
  let closed = false;
  const active = reader;
  const loop = (async () => {
    while (!closed) {
      try {
        for (const record of await active.poll()) {
          records.push({
            topic: record.topic,
            partition: record.partition,
            offset: String(record.offset),
            key: record.key?.toString() ?? null,
            value: record.value?.toString() ?? null,
            timestamp: record.timestamp,
          });
        }
      } catch (error) {
        if (closed) return;
        failures.push(error);
        // A broker restart: keep polling (bounded by the caller's `until`).
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  })();
  return {
    records,
    async close() {
      if (closed) return;
      closed = true;
      await loop;
      await active.close();
    },
    async until(done, timeoutMs, what) {
      const until = Date.now() + timeoutMs;
      while (!done(records)) {
        if (Date.now() > until) {
          const last = failures.at(-1);
          throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${records.length} records read${last ? `; last read error: ${String(last)}` : ''})`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
  };
}
