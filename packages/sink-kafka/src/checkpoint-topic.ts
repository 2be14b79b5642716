/**
 * The Kafka committer's checkpoint: one record per batch in a compacted topic, keyed by
 * the committer's transactional id, written in the SAME Kafka transaction as the batch's
 * events. After a crash, Kafka holds exactly the events of the committed transactions
 * and the checkpoint of the last of them: nothing applied twice, nothing skipped.
 *
 * Reading "the last committed checkpoint" needs a known end. A freshly initialised
 * producer (which has aborted or fenced whatever its predecessor left open) commits a
 * barrier record with a random nonce; a read_committed consumer reads the partition from
 * the beginning until it meets that nonce. Everything committed before the barrier was
 * read, nothing uncommitted was, and no offset arithmetic over control records is needed.
 */
import type { Admin } from '@platformatic/kafka';
import { formatOrderKey, parseOrderKey, pollUntil } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import type { LaneCheckpoint, LaneStart } from '@cdc/committer';
import { CommittedReader } from './committed-reader.ts';
import { TopicCreationError, kafkaErrorTypes } from './errors.ts';
import type { KafkaConnection } from './producer.ts';
import type { TransactionProgress } from './records.ts';

interface StoredLane {
  readonly partition: number;
  readonly resumeSeq: number;
  readonly lastKey: string | null;
  readonly lamport: string | null;
  readonly positions: Readonly<Record<string, string>>;
}

export interface StoredCheckpoint {
  readonly pipeline: string;
  readonly committer: string;
  readonly lanes: readonly StoredLane[];
  readonly committedAt: string;
  /** A source transaction streamed in chunks, if this checkpoint is inside one. */
  readonly openTransaction?: TransactionProgress | null;
}

export function encodeCheckpoint(
  pipeline: string,
  committer: string,
  lanes: readonly LaneCheckpoint[],
  openTransaction?: TransactionProgress,
  now = new Date(),
): string {
  const stored: StoredCheckpoint = {
    pipeline,
    committer,
    committedAt: now.toISOString(),
    openTransaction: openTransaction ?? null,
    lanes: [...lanes]
      .sort((a, b) => a.partition - b.partition)
      .map((lane) => ({
        partition: lane.partition,
        resumeSeq: lane.resumeSeq,
        lastKey: lane.lastKey === undefined ? null : formatOrderKey(lane.lastKey),
        lamport: lane.watermark === undefined ? null : lane.watermark.lamport.toString(),
        positions: lane.watermark?.positions ?? {},
      })),
  };
  return JSON.stringify(stored);
}

/** The source transaction the checkpoint is inside of, if any. */
export function decodeOpenTransaction(text: string | undefined): TransactionProgress | undefined {
  const stored = text === undefined ? undefined : (JSON.parse(text) as StoredCheckpoint);
  return stored?.openTransaction ?? undefined;
}

/** Lane starts for partitions 0..P-1: the stored lane, or the stream's beginning. */
export function decodeCheckpoint(text: string | undefined, partitions: number): LaneStart[] {
  const stored = text === undefined ? undefined : (JSON.parse(text) as StoredCheckpoint);
  const byPartition = new Map((stored?.lanes ?? []).map((lane) => [lane.partition, lane]));
  return Array.from({ length: partitions }, (_, partition): LaneStart => {
    const lane = byPartition.get(partition);
    if (lane === undefined) return { partition, resumeSeq: 1 };
    return {
      partition,
      resumeSeq: lane.resumeSeq,
      lastKey: lane.lastKey === null ? undefined : parseOrderKey(lane.lastKey),
      watermark: lane.lamport === null ? undefined : { lamport: BigInt(lane.lamport), positions: lane.positions },
    };
  });
}

export function checkpointMessage(committer: string, value: string): { key: string; value: string } {
  return { key: committer, value };
}

export function barrierMessage(committer: string, nonce: string): { key: string; value: string } {
  return { key: `${committer}/barrier`, value: JSON.stringify({ barrier: nonce }) };
}

/** The broker said the topic exists already (a concurrent creator won): not a failure. */
export function isTopicExists(error: unknown): boolean {
  const { types, codes } = kafkaErrorTypes(error);
  return types.includes('TOPIC_ALREADY_EXISTS') || codes.includes(36);
}

/**
 * Creates the checkpoint topic if missing: one partition (the barrier read relies on one
 * total order), compacted (only the newest record per committer matters), with small
 * segments so compaction keeps the start-up read short.
 */
export async function ensureCheckpointTopic(admin: Admin, topic: string, replicationFactor: number): Promise<void> {
  try {
    const existing = await admin.listTopics();
    if (existing.includes(topic)) return;
    await admin.createTopics({
      topics: [topic],
      partitions: 1,
      replicas: replicationFactor,
      configs: [
        { name: 'cleanup.policy', value: 'compact' },
        { name: 'segment.ms', value: String(10 * 60_000) },
        { name: 'min.cleanable.dirty.ratio', value: '0.1' },
      ],
    });
  } catch (error) {
    if (isTopicExists(error)) return;
    throw new TopicCreationError(topic, error);
  }
  await waitForTopicLeaders(admin, topic);
}

/**
 * A topic just created may not be in every metadata cache yet; producing to it then
 * fails UNKNOWN_TOPIC_OR_PARTITION. Bounded wait until all its partitions have a leader.
 */
export async function waitForTopicLeaders(admin: Admin, topic: string, timeoutMs = 15_000): Promise<void> {
  let last: unknown;
  const ready = await pollUntil(
    async () => {
      try {
        const metadata = await admin.metadata({ topics: [topic], forceUpdate: true });
        const partitions = metadata.topics.get(topic)?.partitions ?? [];
        return partitions.length > 0 && partitions.every((partition) => partition.leader >= 0) ? true : undefined;
      } catch (error) {
        last = error;
        return undefined;
      }
    },
    { timeoutMs, intervalMs: 100 },
  );
  if (ready) return;
  throw new TopicCreationError(topic, last ?? new Error(`no leader for its partitions after ${timeoutMs} ms`));
}

/**
 * The newest committed checkpoint of `committer`, read up to the barrier `nonce` (which
 * the caller committed just before) with a read_committed reader from the topic's
 * beginning. Bounded by `timeoutMs`.
 */
export async function readCheckpointThroughBarrier(options: {
  connection: KafkaConnection;
  topic: string;
  committer: string;
  nonce: string;
  logger: Logger;
  timeoutMs?: number;
}): Promise<string | undefined> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  const barrierKey = `${options.committer}/barrier`;
  const { brokers, clientId, ...connection } = options.connection;
  const reader = await CommittedReader.create({ ...connection, brokers, clientId: `${clientId}.checkpoint-read`, topics: [options.topic], maxWaitMs: 100 });
  let latest: string | undefined;
  let records = 0;
  try {
    for (;;) {
      for (const record of await reader.poll()) {
        records += 1;
        const key = record.key?.toString();
        if (key === options.committer && record.value !== null) latest = record.value.toString();
        if (key === barrierKey && record.value?.toString().includes(options.nonce)) {
          options.logger.debug({ topic: options.topic, records }, 'checkpoint topic read through the barrier');
          return latest;
        }
      }
      if (Date.now() > deadline) throw new Error(`checkpoint barrier not seen in ${options.topic} within ${timeoutMs} ms`);
    }
  } finally {
    await reader.close();
  }
}
