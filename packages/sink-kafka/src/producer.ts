/**
 * One transactional, idempotent kafkajs producer with a stable transactional id, and
 * the rules for using it (PITFALLS 18, 19):
 *  - connect() runs InitProducerId: the broker aborts whatever a predecessor with the
 *    same id left open and fences it (its next request fails INVALID_PRODUCER_EPOCH);
 *  - a batch is one transaction: every send, then commit; on any failure we abort if we
 *    can and report the outcome as unknown;
 *  - after an unknown outcome the producer is thrown away and a new one initialised
 *    (`reset`): kafkajs' transaction state machine must not carry a half-finished
 *    transaction into the next one, and a late commit/abort must not land on a later
 *    transaction;
 *  - fenced means stop: never re-initialise then, the successor owns the id.
 */
import { CompressionTypes, type Kafka, type Message, type Producer } from 'kafkajs';
import { withinMs } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { KafkaFencedError, KafkaTransactionError, isFencedError } from './errors.ts';

export type Compression = 'none' | 'gzip';

export interface TransactionalProducerOptions {
  readonly kafka: Kafka;
  readonly transactionalId: string;
  /** The broker aborts a transaction open longer than this (a paused producer's). */
  readonly transactionTimeoutMs: number;
  readonly compression: Compression;
  /** Upper bound of one produce request's payload; larger batches are sent in several requests of the same transaction. */
  readonly maxRequestBytes: number;
  readonly logger: Logger;
}

export interface OutgoingRecord {
  readonly topic: string;
  readonly message: Message;
  /** Key + value bytes, for request sizing. */
  readonly bytes: number;
}

export class TransactionalProducer {
  readonly #options: TransactionalProducerOptions;
  #producer: Producer | undefined;
  #fenced = false;

  private constructor(options: TransactionalProducerOptions) {
    this.#options = options;
  }

  /** Connects and initialises the id (fencing any predecessor). */
  static async create(options: TransactionalProducerOptions): Promise<TransactionalProducer> {
    const producer = new TransactionalProducer(options);
    await producer.#init();
    return producer;
  }

  get transactionalId(): string {
    return this.#options.transactionalId;
  }

  get fenced(): boolean {
    return this.#fenced;
  }

  /**
   * Sends `records` in order and commits them in one transaction. Records of one topic
   * and key keep their order (one in-flight request; requests sent one after another).
   */
  async commitTransaction(records: readonly OutgoingRecord[], beforeCommit?: () => Promise<void>): Promise<void> {
    if (this.#fenced) throw new KafkaFencedError(this.transactionalId);
    const producer = this.#producer;
    // Not connected: a reset() failed (broker down); the caller retries the reset first.
    if (producer === undefined) throw new KafkaTransactionError(this.transactionalId, 'begin', new Error('producer not initialised'));
    let step = 'begin';
    const transaction = await producer.transaction().catch((error: unknown) => {
      throw this.#classify(step, error);
    });
    try {
      step = 'send';
      for (const chunk of chunksByBytes(records, this.#options.maxRequestBytes)) {
        await transaction.sendBatch({
          topicMessages: groupByTopic(chunk),
          acks: -1,
          compression: this.#options.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
        });
      }
      await beforeCommit?.();
      step = 'commit';
      await transaction.commit();
    } catch (error) {
      const failure = this.#classify(step, error);
      if (!(failure instanceof KafkaFencedError)) await transaction.abort().catch(() => undefined);
      throw failure;
    }
  }

  /** After an unknown outcome: a new producer, a new InitProducerId. Not after fencing. */
  async reset(): Promise<void> {
    if (this.#fenced) throw new KafkaFencedError(this.transactionalId);
    await this.#disconnect();
    await this.#init();
  }

  async close(): Promise<void> {
    await this.#disconnect();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #init(): Promise<void> {
    const producer = this.#options.kafka.producer({
      transactionalId: this.#options.transactionalId,
      idempotent: true,
      maxInFlightRequests: 1,
      transactionTimeout: this.#options.transactionTimeoutMs,
      // Topics are created by the committer (with a clear error when that fails).
      allowAutoTopicCreation: false,
    });
    try {
      await producer.connect();
    } catch (error) {
      await producer.disconnect().catch(() => undefined);
      throw this.#classify('init', error);
    }
    this.#producer = producer;
  }

  async #disconnect(): Promise<void> {
    const producer = this.#producer;
    this.#producer = undefined;
    // Bounded: a broker that is down must not hold up a reset or a shutdown.
    await withinMs(producer?.disconnect().catch(() => undefined) ?? Promise.resolve(), 5_000);
  }

  #classify(step: string, error: unknown): KafkaFencedError | KafkaTransactionError {
    if (isFencedError(error)) {
      this.#fenced = true;
      this.#options.logger.error({ err: error, transactional_id: this.transactionalId }, 'fenced by a newer committer');
      return new KafkaFencedError(this.transactionalId, error);
    }
    return new KafkaTransactionError(this.transactionalId, step, error);
  }
}

/** Consecutive chunks of at most `maxBytes` (a record larger than that is a chunk of its own). */
export function* chunksByBytes<T extends { readonly bytes: number }>(records: readonly T[], maxBytes: number): Generator<T[]> {
  let chunk: T[] = [];
  let size = 0;
  for (const record of records) {
    if (chunk.length > 0 && size + record.bytes > maxBytes) {
      yield chunk;
      chunk = [];
      size = 0;
    }
    chunk.push(record);
    size += record.bytes;
  }
  if (chunk.length > 0) yield chunk;
}

function groupByTopic(records: readonly OutgoingRecord[]): { topic: string; messages: Message[] }[] {
  const byTopic = new Map<string, Message[]>();
  for (const record of records) {
    let messages = byTopic.get(record.topic);
    if (messages === undefined) {
      messages = [];
      byTopic.set(record.topic, messages);
    }
    messages.push(record.message);
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}
