/**
 * A read_committed reader of whole topics: every record of committed transactions (and
 * non-transactional records), in offset order per partition, none of aborted ones.
 *
 * Written by hand, on @platformatic/kafka's raw `fetch`, because that client's own
 * read_committed filter (1.35 and 2.12) keeps one aborted range per producer id per
 * fetch response and ignores a range whose abort marker is in a later response: records
 * of aborted transactions reach the reader. A transactional id keeps its producer id
 * across re-initialisations, so a committer that aborted twice in a row (a kill, a
 * recovery) is exactly that case — and the checkpoint read through the barrier would
 * then resume from an aborted checkpoint (PITFALLS 20). `tests/kafka/read-committed.test.ts`
 * reproduces it against the broker.
 *
 * The filter is Kafka's own consumer algorithm: the fetch response lists every aborted
 * transaction overlapping the fetched range (producer id, first offset); walking the
 * batches in order, a producer becomes "aborting" when a batch reaches that first offset
 * and stops being so at its ABORT control batch; a transactional batch of an aborting
 * producer is skipped. The list is complete for every fetch, so no state crosses fetches.
 */
import { isRetriableKafkaError } from './errors.ts';
import { closeNow } from './producer.ts';
import type { ConnectionOptions, Consumer } from '@platformatic/kafka';
import { FETCH_READ_COMMITTED, FETCH_READ_UNCOMMITTED, LIST_OFFSETS_EARLIEST, kafkaClient } from './client.ts';

/** Bit 4: the batch belongs to a transaction; bit 5: it is a control batch (COMMIT/ABORT marker). */
const TRANSACTIONAL = 1 << 4;
const CONTROL = 1 << 5;
const ABORT_MARKER = 0;

export interface CommittedRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: bigint;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  /** CreateTime, ms since the epoch. */
  readonly timestamp: number;
  readonly headers: readonly (readonly [Buffer | null, Buffer | null])[];
}

/** The parts of a fetch response partition the filter reads (structural: easy to test). */
export interface FetchedPartition {
  readonly abortedTransactions?: readonly { readonly producerId: bigint; readonly firstOffset: bigint }[] | null;
  readonly records?: readonly FetchedBatch[] | null;
}

export interface FetchedBatch {
  readonly firstOffset: bigint;
  readonly lastOffsetDelta: number;
  readonly attributes: number;
  readonly producerId: bigint;
  readonly firstTimestamp: bigint;
  readonly records: readonly {
    readonly offsetDelta: number;
    readonly timestampDelta: bigint;
    readonly key: Buffer | null;
    readonly value: Buffer | null;
    readonly headers: readonly (readonly [Buffer | null, Buffer | null])[];
  }[];
}

/**
 * The committed records of one fetched partition at or after `fromOffset`, and the offset
 * to fetch next (past every batch seen, control batches and skipped ones included).
 */
export function committedRecords(
  topic: string,
  partition: number,
  fetched: FetchedPartition,
  fromOffset: bigint,
): { records: CommittedRecord[]; nextOffset: bigint } {
  const aborted = [...(fetched.abortedTransactions ?? [])].sort((a, b) => (a.firstOffset < b.firstOffset ? -1 : a.firstOffset > b.firstOffset ? 1 : 0));
  const aborting = new Set<bigint>();
  const records: CommittedRecord[] = [];
  let next = fromOffset;
  let pending = 0;
  for (const batch of fetched.records ?? []) {
    const lastOffset = batch.firstOffset + BigInt(batch.lastOffsetDelta);
    if (lastOffset + 1n > next) next = lastOffset + 1n;
    while (pending < aborted.length && (aborted[pending]?.firstOffset ?? 0n) <= lastOffset) {
      aborting.add((aborted[pending] as { producerId: bigint }).producerId);
      pending += 1;
    }
    if ((batch.attributes & CONTROL) !== 0) {
      const marker = batch.records[0]?.key;
      if (marker !== null && marker !== undefined && marker.length >= 4 && marker.readInt16BE(2) === ABORT_MARKER) aborting.delete(batch.producerId);
      continue;
    }
    if ((batch.attributes & TRANSACTIONAL) !== 0 && aborting.has(batch.producerId)) continue;
    for (const record of batch.records) {
      const offset = batch.firstOffset + BigInt(record.offsetDelta);
      if (offset < fromOffset) continue;
      records.push({
        topic,
        partition,
        offset,
        key: record.key,
        value: record.value,
        timestamp: Number(batch.firstTimestamp + record.timestampDelta),
        headers: record.headers,
      });
    }
  }
  return { records, nextOffset: next };
}

export interface CommittedReaderOptions extends ConnectionOptions {
  readonly brokers: readonly string[];
  readonly clientId?: string;
  readonly topics: readonly string[];
  /** Longest a poll waits for new data at the broker. Default 200 ms. */
  readonly maxWaitMs?: number;
  /** Upper bound of one fetch response. Default 8 MiB. */
  readonly maxBytes?: number;
  /**
   * Diagnostics and tests only: every record, aborted transactions' too (control batches
   * still skipped) — to show that a run did leave aborted data that read_committed hides.
   */
  readonly readUncommitted?: boolean;
}

interface Position {
  readonly topic: string;
  readonly topicId: string;
  readonly partition: number;
  leader: number;
  leaderEpoch: number;
  offset: bigint;
}

/**
 * Reads the given topics from their beginning (no consumer group: positions are the
 * reader's own). `poll()` returns what became visible since the last poll.
 */
export class CommittedReader {
  readonly #consumer: Consumer;
  readonly #options: CommittedReaderOptions;
  #positions: Position[] = [];
  #closed = false;

  private constructor(consumer: Consumer, options: CommittedReaderOptions) {
    this.#consumer = consumer;
    this.#options = options;
  }

  static async create(options: CommittedReaderOptions): Promise<CommittedReader> {
    const { brokers, clientId, topics: _topics, maxWaitMs: _wait, maxBytes: _bytes, readUncommitted, ...connection } = options;
    const { Consumer } = await kafkaClient();
    const consumer = new Consumer({
      ...connection,
      clientId: clientId ?? 'cdc-committed-reader',
      // Required by the client's constructor; never joined (raw fetches only).
      groupId: `${clientId ?? 'cdc-committed-reader'}.unused`,
      bootstrapBrokers: [...brokers],
      isolationLevel: readUncommitted ? FETCH_READ_UNCOMMITTED : FETCH_READ_COMMITTED,
      retries: 3,
    });
    const reader = new CommittedReader(consumer, options);
    try {
      await reader.#locate(true);
    } catch (error) {
      await closeNow(consumer);
      throw error;
    }
    return reader;
  }

  /** Every partition's next offset (records before it were returned already). */
  positions(): { topic: string; partition: number; offset: bigint }[] {
    return this.#positions.map(({ topic, partition, offset }) => ({ topic, partition, offset }));
  }

  /** One fetch per leader; committed records in offset order per partition. */
  async poll(): Promise<CommittedRecord[]> {
    if (this.#closed) throw new Error('CommittedReader is closed');
    const byLeader = new Map<number, Position[]>();
    for (const position of this.#positions) {
      const list = byLeader.get(position.leader) ?? [];
      list.push(position);
      byLeader.set(position.leader, list);
    }
    const out: CommittedRecord[] = [];
    let stale = false;
    await Promise.all(
      [...byLeader].map(async ([leader, positions]) => {
        const topics = new Map<string, Position[]>();
        for (const position of positions) topics.set(position.topicId, [...(topics.get(position.topicId) ?? []), position]);
        let response;
        try {
          response = await this.#consumer.fetch({
            node: leader,
            maxWaitTime: this.#options.maxWaitMs ?? 200,
            maxBytes: this.#options.maxBytes ?? 8 * 1024 * 1024,
            isolationLevel: this.#options.readUncommitted ? FETCH_READ_UNCOMMITTED : FETCH_READ_COMMITTED,
            topics: [...topics].map(([topicId, list]) => ({
              topicId,
              partitions: list.map((position) => ({
                partition: position.partition,
                currentLeaderEpoch: position.leaderEpoch,
                fetchOffset: position.offset,
                lastFetchedEpoch: -1,
                partitionMaxBytes: this.#options.maxBytes ?? 8 * 1024 * 1024,
              })),
            })),
          });
        } catch (error) {
          // A moved leader or a fenced epoch: find the leaders again, read next time.
          stale = true;
          if (isRetriableKafkaError(error)) return;
          throw error;
        }
        for (const topic of response.responses) {
          for (const fetched of topic.partitions) {
            const position = positions.find((p) => p.topicId === topic.topicId && p.partition === fetched.partitionIndex);
            if (position === undefined) continue;
            if (fetched.errorCode !== 0) {
              stale = true;
              continue;
            }
            // read_uncommitted: the broker lists no aborted transactions, so nothing is skipped.
            const { records, nextOffset } = committedRecords(position.topic, position.partition, fetched, position.offset);
            position.offset = nextOffset;
            out.push(...records);
          }
        }
      }),
    );
    if (stale) await this.#locate(false);
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await closeNow(this.#consumer);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Leaders and topic ids from metadata; on the first call also the start offsets. */
  async #locate(initial: boolean): Promise<void> {
    const topics = [...this.#options.topics];
    const metadata = await this.#consumer.metadata({ topics, forceUpdate: true });
    const earliest = initial ? await this.#consumer.listOffsets({ topics, timestamp: LIST_OFFSETS_EARLIEST }) : undefined;
    const previous = new Map(this.#positions.map((p) => [`${p.topic}\u0000${p.partition}`, p.offset]));
    const positions: Position[] = [];
    for (const topic of topics) {
      const described = metadata.topics.get(topic);
      if (described === undefined) throw new Error(`Kafka topic ${JSON.stringify(topic)} not found`);
      described.partitions.forEach((partition, index) => {
        const offset = previous.get(`${topic}\u0000${index}`) ?? earliest?.get(topic)?.[index] ?? 0n;
        positions.push({ topic, topicId: described.id, partition: index, leader: partition.leader, leaderEpoch: partition.leaderEpoch, offset });
      });
    }
    this.#positions = positions;
  }
}
