/**
 * One transactional, idempotent producer (@platformatic/kafka) with a stable
 * transactional id, and the rules for using it (PITFALLS 18, 19):
 *  - create() runs InitProducerId: the broker aborts whatever a predecessor with the
 *    same id left open and fences it (its next request fails INVALID_PRODUCER_EPOCH);
 *  - a batch is one transaction: every send, then commit; on any failure we abort if we
 *    can and report the outcome as unknown;
 *  - after an unknown outcome the producer is thrown away and a new one initialised
 *    (`reset`): a client's transaction state must not carry a half-finished transaction
 *    into the next one, and a late commit/abort must not land on a later transaction;
 *  - fenced means stop: never re-initialise then, the successor owns the id.
 */
import type { ConnectionOptions, Producer } from '@platformatic/kafka';
import { kafkaClient } from './client.ts';
import { withinMs } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { KafkaFencedError, KafkaTransactionError, isFencedError } from './errors.ts';

/** Record batch compression; `zstd` needs Node.js 22.15 or newer (node:zlib). */
export type Compression = 'none' | 'gzip' | 'snappy' | 'lz4' | 'zstd';
export const COMPRESSIONS: readonly Compression[] = ['none', 'gzip', 'snappy', 'lz4', 'zstd'];

/** How to reach the brokers: addresses plus the client's TLS and SASL options. */
export interface KafkaConnection extends ConnectionOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
}

export interface TransactionalProducerOptions {
  readonly connection: KafkaConnection;
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
  readonly key: string | null;
  /** null: a tombstone. */
  readonly value: string | null;
  /** Key + value bytes, for request sizing. */
  readonly bytes: number;
}

type Client = Producer<string, string, string, string>;

export class TransactionalProducer {
  readonly #options: TransactionalProducerOptions;
  #producer: Client | undefined;
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
   * and key keep their order (requests sent one after another, each awaited).
   */
  async commitTransaction(records: readonly OutgoingRecord[], beforeCommit?: () => Promise<void>): Promise<void> {
    if (this.#fenced) throw new KafkaFencedError(this.transactionalId);
    const producer = this.#producer;
    // Not connected: a reset() failed (broker down); the caller retries the reset first.
    if (producer === undefined) throw new KafkaTransactionError(this.transactionalId, 'begin', new Error('producer not initialised'));
    let step = 'begin';
    const transaction = await producer.beginTransaction().catch((error: unknown) => {
      throw this.#classify(step, error);
    });
    try {
      step = 'send';
      for (const chunk of chunksByBytes(records, this.#options.maxRequestBytes)) {
        await transaction.send({ messages: chunk.map(toMessage) });
      }
      await beforeCommit?.();
      step = 'commit';
      await transaction.commit();
    } catch (error) {
      const failure = this.#classify(step, error);
      if (!(failure instanceof KafkaFencedError)) await withinMs(transaction.abort().catch(() => undefined), 5_000);
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
    const { connection, compression } = this.#options;
    const { brokers, ...client } = connection;
    const { Producer, stringSerializers } = await kafkaClient();
    const producer: Client = new Producer({
      ...client,
      bootstrapBrokers: [...brokers],
      transactionalId: this.#options.transactionalId,
      idempotent: true,
      // "No producer known": the client's default (0, 0) names producer 0 epoch 0, which
      // the broker answers with PRODUCER_FENCED once the id has been used before (any
      // restart). With -1 / -1 InitProducerId takes over the id and bumps its epoch.
      producerId: -1n,
      producerEpoch: -1,
      acks: -1,
      // The broker's InitProducerId takes the transaction timeout from here.
      timeout: this.#options.transactionTimeoutMs,
      // Topics are created by the committer (with a clear error when that fails).
      autocreateTopics: false,
      // Short in-client retries (coordinator moves, CONCURRENT_TRANSACTIONS right after a
      // commit, which clears in milliseconds: a fixed 250 ms wait put p99 latency at 267 ms),
      // 20, 40, 80, 160 ms; a broker that stays away longer fails the transaction, and the
      // sink's recovery re-creates the producer and re-reads the checkpoint (PITFALLS 18).
      retries: 4,
      retryDelay: (_client: unknown, _operation: string, attempt: number) => Math.min(20 * 2 ** Math.max(0, attempt - 1), 160),
      serializers: stringSerializers,
      ...(compression === 'none' ? {} : { compression }),
    });
    try {
      // InitProducerId now (the client would do it lazily at the first transaction):
      // beginTransaction finds the coordinator and initialises the id; nothing is sent
      // to any partition, so cancelling the local transaction leaves nothing open.
      const transaction = await producer.beginTransaction();
      await transaction.cancel();
    } catch (error) {
      await withinMs(closeNow(producer), 5_000);
      throw this.#classify('init', error);
    }
    this.#producer = producer;
  }

  async #disconnect(): Promise<void> {
    const producer = this.#producer;
    this.#producer = undefined;
    // Bounded: a broker that is down must not hold up a reset or a shutdown.
    await withinMs(producer === undefined ? Promise.resolve() : closeNow(producer), 5_000);
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

function toMessage(record: OutgoingRecord): { topic: string; key?: string; value?: string } {
  // stringSerializers write an absent key/value as null (a tombstone has value null).
  return record.key === null
    ? record.value === null
      ? { topic: record.topic }
      : { topic: record.topic, value: record.value }
    : record.value === null
      ? { topic: record.topic, key: record.key }
      : { topic: record.topic, key: record.key, value: record.value };
}

/**
 * Closes a client; never throws. Producers and consumers close at once (`force`: in-flight
 * requests failed, not awaited); an admin client has no force. The callback forms: the
 * promise overload's types lose to the callback one for `close(true)`.
 */
type ForceClosable = { close(force: boolean, callback: () => void): void };
type Closable = { close(callback: () => void): void };

export function closeNow(client: ForceClosable | Closable): Promise<void> {
  return new Promise((resolve) => {
    try {
      // close(force, callback) on producers and consumers, close(callback) on the admin client.
      if (client.close.length >= 2) (client as ForceClosable).close(true, () => resolve());
      else (client as Closable).close(() => resolve());
    } catch {
      resolve();
    }
  });
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
