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
import { randomUUID } from 'node:crypto';
import { formatOrderKey, parseOrderKey, pollUntil, systemClock } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import type { LaneCheckpoint, LaneStart } from '@cdc/committer';
import type { Admin, Kafka, Message } from 'kafkajs';
import { TopicCreationError } from './errors.ts';
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

export function checkpointMessage(committer: string, value: string): Message {
  return { key: committer, value };
}

export function barrierMessage(committer: string, nonce: string): Message {
  return { key: `${committer}/barrier`, value: JSON.stringify({ barrier: nonce }) };
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
      waitForLeaders: true,
      topics: [
        {
          topic,
          numPartitions: 1,
          replicationFactor,
          configEntries: [
            { name: 'cleanup.policy', value: 'compact' },
            { name: 'segment.ms', value: String(10 * 60_000) },
            { name: 'min.cleanable.dirty.ratio', value: '0.1' },
          ],
        },
      ],
    });
  } catch (error) {
    if ((error as { type?: string }).type === 'TOPIC_ALREADY_EXISTS') return;
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
        const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
        const partitions = metadata.topics[0]?.partitions ?? [];
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
 * the caller committed just before). Bounded by `timeoutMs`.
 */
export async function readCheckpointThroughBarrier(options: {
  kafka: Kafka;
  topic: string;
  committer: string;
  nonce: string;
  logger: Logger;
  timeoutMs?: number;
}): Promise<string | undefined> {
  const groupId = `${options.committer}.checkpoint-read.${randomUUID()}`;
  // A consumer group only because kafkajs has no manual assignment; nothing is committed
  // to it and it is deleted afterwards.
  const consumer = options.kafka.consumer({ groupId, readUncommitted: false, maxWaitTimeInMs: 100, sessionTimeout: 10_000, heartbeatInterval: 1_000 });
  let latest: string | undefined;
  let records = 0;
  const barrierKey = `${options.committer}/barrier`;
  try {
    await consumer.connect();
    await consumer.subscribe({ topic: options.topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = systemClock.timer(options.timeoutMs ?? 60_000, () =>
        reject(new Error(`checkpoint barrier not seen in ${options.topic} within ${options.timeoutMs ?? 60_000} ms`)),
      );
      consumer.on(consumer.events.CRASH, (event) => {
        timer.cancel();
        reject(event.payload.error);
      });
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ message }) => {
            records += 1;
            const key = message.key?.toString();
            if (key === options.committer && message.value !== null) latest = message.value.toString();
            if (key === barrierKey && message.value?.toString().includes(options.nonce)) {
              timer.cancel();
              resolve();
            }
          },
        })
        .catch((error: unknown) => {
          timer.cancel();
          reject(error);
        });
    });
  } finally {
    await consumer.disconnect().catch(() => undefined);
    const admin = options.kafka.admin();
    await admin
      .connect()
      .then(() => admin.deleteGroups([groupId]))
      .catch(() => undefined)
      .finally(() => admin.disconnect().catch(() => undefined));
  }
  options.logger.debug({ topic: options.topic, records }, 'checkpoint topic read through the barrier');
  return latest;
}
