/**
 * The Kafka tests' helpers: topic readers closed with the test context (./topics.ts does
 * the reading) and an in-process Kafka committer.
 */
import type { Bus } from '@cdc/bus';
import { KafkaSink, type KafkaCommitter, type KafkaCommitterOptions, type KafkaSecurity } from '@cdc/sink-kafka';
import type { Logger } from '@cdc/runtime';
import type { TestContext } from '../harness/index.ts';
import { logger } from '../committer/support.ts';
import { consumeTopics, type TopicReader } from './topics.ts';

export { consumeTopics };

/** A committer process entry with the Kafka test failpoint (CDC_TEST_HOLD_BEFORE_COMMIT_MS): ./committer-with-failpoint.ts. */
export const KAFKA_FAILPOINT_ENTRY = 'tests/kafka/committer-with-failpoint.ts';
export type { KafkaRecord, TopicReader } from './topics.ts';

/** Starts consuming `topics` from the beginning (of the local broker unless `brokers`); closed with the context. */
export async function readTopics(
  ctx: TestContext,
  topics: readonly string[],
  options: { readUncommitted?: boolean; brokers?: readonly string[]; topicTimeoutMs?: number; security?: KafkaSecurity } = {},
): Promise<TopicReader> {
  const reader = await consumeTopics(options.brokers ?? ctx.servers.kafkaBrokers, topics, options);
  ctx.defer('kafka topic reader', () => reader.close());
  return reader;
}

/** A Kafka committer in this process, closed with the context. */
export async function startKafkaCommitter(
  ctx: TestContext,
  options: Omit<KafkaCommitterOptions, 'logger' | 'brokers'> & { bus: Bus; brokers?: readonly string[]; logger?: Logger },
): Promise<KafkaCommitter> {
  const committer = await KafkaSink.createCommitter({
    batchLingerMs: 10,
    progressIntervalMs: 60_000,
    brokers: ctx.servers.kafkaBrokers,
    ...options,
    logger: options.logger ?? logger,
  });
  ctx.defer('kafka committer close', () => committer.close());
  return committer;
}

export function parseJson<T = Record<string, unknown>>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}
