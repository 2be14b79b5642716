/**
 * The Kafka sink: a Sink (@cdc/committer) whose batches go out as one Kafka transaction
 * each, under one stable transactional id:
 *
 *   MergeBatch ─► one Kafka transaction:
 *                   Debezium records (topic per table, key = primary key)
 *                   [+ tombstones, + BEGIN/END transaction metadata]
 *                   + this committer's checkpoint (compacted topic)
 *                 ─► COMMIT
 *
 * One committer owns all partitions under one stable transactional id, so a source
 * transaction is one Kafka transaction (read_committed consumers see it whole) and a
 * restarted committer fences its zombie predecessor. A source transaction of more than
 * `streamAbove` events is the exception: it goes out in chunks, one Kafka transaction
 * each, so no process holds it whole (as Debezium, which never writes a source
 * transaction atomically); its BEGIN/END metadata still frames it whole. JetStream is
 * never acknowledged: the stream position is part of the checkpoint, committed with the events.
 *
 * Failure rules (PITFALLS 18-20):
 *  - fenced (another committer initialised our id) → stop, write nothing more;
 *  - a topic could not be created → nothing was sent: the same batch again;
 *  - any other failure of a batch → outcome unknown: recover() re-creates the producer
 *    (which aborts whatever is open), commits a barrier and re-reads our checkpoint
 *    with read_committed; the committer rewinds the partitions to it.
 */
import { randomUUID } from 'node:crypto';
import { Committer, type Applied, type ApplyContext, type CommitterOptions, type LaneStart, type MergeBatch, type Sink } from '@cdc/committer';
import { UnreachableError, retry } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import type { Admin } from '@platformatic/kafka';
import { CONFIG_RESOURCE_BROKER, kafkaClient } from './client.ts';
import {
  barrierMessage,
  checkpointMessage,
  decodeCheckpoint,
  decodeOpenTransaction,
  encodeCheckpoint,
  ensureCheckpointTopic,
  isTopicExists,
  readCheckpointThroughBarrier,
  waitForTopicLeaders,
} from './checkpoint-topic.ts';
import { KafkaAuthenticationError, KafkaFencedError, TopicCreationError, isAuthenticationError, isMessageTooLarge } from './errors.ts';
import { TransactionalProducer, type Compression, type KafkaConnection, type OutgoingRecord } from './producer.ts';
import { connectionOptions, describeSecurity, type KafkaSecurity } from './security.ts';
import { buildRecords, type RecordOptions, type TransactionProgress } from './records.ts';

/** The Kafka sink's defaults, in one place (apps/committer's config fills its variables from them). */
export const KAFKA_DEFAULTS = {
  sinkName: 'kafka',
  /** STREAM_TRANSACTIONS_ABOVE for Kafka: larger source transactions go out as several Kafka transactions. */
  streamAbove: 5_000,
  checkpointTopic: 'cdc.checkpoints',
  compression: 'none' as Compression,
  maxRequestBytes: 900_000,
  transactionTimeoutMs: 60_000,
  topicPartitions: 1,
  replicationFactor: 1,
  /** Connection attempts at start (about a minute). */
  connectAttempts: 10,
} as const;

export interface KafkaSinkOptions {
  readonly pipeline: string;
  readonly partitions: number;
  readonly brokers: readonly string[];
  /** TLS (CA, client certificate) and SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER). Default: plaintext, no auth. */
  readonly security?: KafkaSecurity | undefined;
  readonly logger: Logger;
  /** This sink's name in etcd (the reader's SINKS) and in its dead letters. Default 'kafka'. */
  readonly sinkName?: string | undefined;
  /** Default `cdc.<pipeline>.<sinkName>`: stable across restarts, unique per committer. */
  readonly transactionalId?: string | undefined;
  /** Compacted topic holding committer checkpoints. Default 'cdc.checkpoints'. */
  readonly checkpointTopic?: string | undefined;
  readonly records: RecordOptions;
  readonly compression?: Compression | undefined;
  readonly maxRequestBytes?: number | undefined;
  /** Largest record the broker takes; default: the broker's message.max.bytes. */
  readonly maxMessageBytes?: number | undefined;
  readonly transactionTimeoutMs?: number | undefined;
  /** Partitions of the table topics the committer creates. Default 1. */
  readonly topicPartitions?: number | undefined;
  /** Replication factor of the table topics the committer creates. Default 1. */
  readonly topicReplicationFactor?: number | undefined;
  /** Replication factor of the checkpoint topic, if the committer creates it. Default 1. */
  readonly checkpointReplicationFactor?: number | undefined;
  /** Connection attempts at start before giving up with UnreachableError. Default 10 (about a minute). */
  readonly connectAttempts?: number | undefined;
  /**
   * Test hook, never set by the app: runs in every Kafka transaction after its last send,
   * before its commit (tests/kafka/committer-with-failpoint.ts holds it open there so a
   * chaos test can kill the process mid-transaction for certain).
   */
  readonly beforeCommit?: ((transaction: { readonly records: number; readonly logger: Logger }) => Promise<void>) | undefined;
  /** Aborts the connection attempts at start. */
  readonly signal?: AbortSignal | undefined;
}

/** The committer over Kafka: the loop's options and the sink's. */
export type KafkaCommitterOptions = KafkaSinkOptions & Omit<CommitterOptions, 'logger' | 'name'>;

export interface KafkaSinkStats {
  /** Records in committed transactions (events, tombstones, metadata). */
  readonly records: number;
}

/** The committer over Kafka, with its transactional id (stable for the life of the sink). */
export type KafkaCommitter = Committer<KafkaSink> & { readonly transactionalId: string };

/** Headroom under message.max.bytes for the record batch header and record framing. */
const RECORD_OVERHEAD_BYTES = 512;
const DEFAULT_BROKER_MESSAGE_MAX_BYTES = 1_048_588;

export class KafkaSink implements Sink<KafkaSinkStats> {
  readonly name: string;
  readonly epoch = 0;
  readonly committedUnit = 'committed Kafka transaction';
  readonly #options: KafkaSinkOptions;
  readonly #logger: Logger;
  readonly #connection: KafkaConnection;
  readonly #admin: Admin;
  readonly #producer: TransactionalProducer;
  readonly #checkpointTopic: string;
  readonly #knownTopics = new Set<string>();
  readonly #stats = { records: 0 };
  #maxMessageBytes: number;
  /** The source transaction the last committed checkpoint is inside of (chunked), as Kafka holds it. */
  #progress: TransactionProgress | undefined;
  /** The last apply's outcome is unknown: the producer must be re-created before reading our checkpoint. */
  #uncertain = false;
  /** The checkpoints read at connect, handed out by the first recover(). */
  #starts: readonly LaneStart[] | undefined;
  #closing: Promise<void> | undefined;

  private constructor(parts: {
    options: KafkaSinkOptions;
    connection: KafkaConnection;
    admin: Admin;
    producer: TransactionalProducer;
    maxMessageBytes: number;
    starts: readonly LaneStart[];
    progress: TransactionProgress | undefined;
  }) {
    this.name = parts.options.sinkName ?? KAFKA_DEFAULTS.sinkName;
    this.#options = parts.options;
    this.#logger = parts.options.logger;
    this.#connection = parts.connection;
    this.#admin = parts.admin;
    this.#producer = parts.producer;
    this.#maxMessageBytes = parts.maxMessageBytes;
    this.#starts = parts.starts;
    this.#progress = parts.progress;
    this.#checkpointTopic = parts.options.checkpointTopic ?? KAFKA_DEFAULTS.checkpointTopic;
  }

  /**
   * Connects (retrying with back-off and saying why while Kafka is unreachable), creates
   * the checkpoint topic, initialises the transactional id (fencing any predecessor) and
   * reads the last committed checkpoint.
   */
  static async create(options: KafkaSinkOptions): Promise<KafkaSink> {
    if (!Number.isInteger(options.partitions) || options.partitions < 1) {
      throw new RangeError(`partitions must be a positive integer, got ${options.partitions}`);
    }
    const { logger } = options;
    const connection: KafkaConnection = {
      brokers: [...options.brokers],
      clientId: `cdc-committer-${options.pipeline}`,
      connectTimeout: 3_000,
      requestTimeout: 30_000,
      ...connectionOptions(options.security),
    };
    const { brokers: bootstrapBrokers, ...client } = connection;
    const { Admin } = await kafkaClient();
    const admin = new Admin({ ...client, bootstrapBrokers: [...bootstrapBrokers], retries: 2, retryDelay: 200 });
    const security = describeSecurity(options.security);
    const connectOptions = {
      attempts: options.connectAttempts ?? KAFKA_DEFAULTS.connectAttempts,
      initialDelayMs: 500,
      maxDelayMs: 10_000,
      ...(options.signal ? { signal: options.signal } : {}),
      // Fenced, or credentials the broker refused: retrying cannot help.
      isRetriable: (error: unknown) => !(error instanceof KafkaFencedError) && !(error instanceof KafkaAuthenticationError),
      onRetry: ({ attempt, delayMs, error }: { attempt: number; delayMs: number; error: unknown }) =>
        logger.warn({ attempt, delay_ms: delayMs, err: error, brokers: options.brokers, security }, 'Kafka not reachable yet; retrying'),
    };
    const authenticated = <T>(step: () => Promise<T>) => async (): Promise<T> => {
      try {
        return await step();
      } catch (error) {
        if (isAuthenticationError(error)) throw new KafkaAuthenticationError(options.brokers.join(','), security, error);
        throw error;
      }
    };
    let producer: TransactionalProducer | undefined;
    try {
      await retry(
        authenticated(async () => {
          try {
            await admin.metadata({ topics: [], forceUpdate: true });
          } catch (error) {
            // (A refusal in `error` is found through the cause by `authenticated`.)
            throw new UnreachableError('Kafka', options.brokers.join(','), 'check KAFKA_BROKERS and that the broker runs', error);
          }
        }),
        connectOptions,
      );
      const checkpointTopic = options.checkpointTopic ?? KAFKA_DEFAULTS.checkpointTopic;
      await ensureCheckpointTopic(admin, checkpointTopic, options.checkpointReplicationFactor ?? KAFKA_DEFAULTS.replicationFactor);
      const maxMessageBytes = options.maxMessageBytes ?? (await brokerMessageMaxBytes(admin)) - RECORD_OVERHEAD_BYTES;
      producer = await retry(
        authenticated(() =>
          TransactionalProducer.create({
            connection,
            transactionalId: options.transactionalId ?? `cdc.${options.pipeline}.${options.sinkName ?? KAFKA_DEFAULTS.sinkName}`,
            transactionTimeoutMs: options.transactionTimeoutMs ?? KAFKA_DEFAULTS.transactionTimeoutMs,
            compression: options.compression ?? KAFKA_DEFAULTS.compression,
            maxRequestBytes: options.maxRequestBytes ?? KAFKA_DEFAULTS.maxRequestBytes,
            logger,
          }),
        ),
        connectOptions,
      );
      const initialised = producer;
      const { starts, progress } = await retry(() => readStarts({ connection, producer: initialised, checkpointTopic, partitions: options.partitions, logger }), connectOptions);
      logger.info({ checkpoint_topic: checkpointTopic, max_message_bytes: maxMessageBytes, compression: options.compression ?? KAFKA_DEFAULTS.compression, security }, 'kafka sink connected');
      return new KafkaSink({ options, connection, admin, producer, maxMessageBytes, starts, progress });
    } catch (error) {
      await producer?.close().catch(() => undefined);
      await admin.close().catch(() => undefined);
      throw error;
    }
  }

  /** Creates the sink and a running committer into it from the checkpoint Kafka holds. */
  static async createCommitter(options: KafkaCommitterOptions): Promise<KafkaCommitter> {
    const transactionalId = options.transactionalId ?? `cdc.${options.pipeline}.${options.sinkName ?? KAFKA_DEFAULTS.sinkName}`;
    const logger = options.logger.child({ component: 'kafka-committer', pipeline: options.pipeline, transactional_id: transactionalId });
    const sink = await KafkaSink.create({ ...options, transactionalId, logger });
    const starts = await sink.recover();
    const committer = await Committer.create(sink, starts, { ...options, logger, name: 'kafka-committer', streamAbove: options.streamAbove ?? KAFKA_DEFAULTS.streamAbove });
    return Object.assign(committer, { transactionalId: sink.transactionalId });
  }

  get transactionalId(): string {
    return this.#producer.transactionalId;
  }

  stats(): KafkaSinkStats {
    return { ...this.#stats };
  }

  /**
   * The checkpoint as Kafka committed it. After an unknown outcome first a new producer,
   * aborting anything open under our id.
   */
  async recover(): Promise<readonly LaneStart[]> {
    const connected = this.#starts;
    this.#starts = undefined;
    if (connected !== undefined && !this.#uncertain) return connected;
    await this.#producer.reset();
    const { starts, progress } = await readStarts({
      connection: this.#connection,
      producer: this.#producer,
      checkpointTopic: this.#checkpointTopic,
      partitions: this.#options.partitions,
      logger: this.#logger,
    });
    this.#uncertain = false;
    this.#progress = progress;
    return starts;
  }

  afterFailure(): 'retry' | 'recover' {
    // Only a failed transaction leaves its outcome unknown; before it (topics, dead letters) nothing was sent.
    return this.#uncertain ? 'recover' : 'retry';
  }

  isFenced(error: unknown): boolean {
    return error instanceof KafkaFencedError;
  }

  async apply(merge: MergeBatch, context: ApplyContext): Promise<Applied> {
    const started = Date.now();
    const built = buildRecords(merge, { ...this.#options.records, maxMessageBytes: this.#maxMessageBytes }, this.#progress);
    await this.#ensureTopics(built.records);
    // Lanes as they will stand after this batch: the checkpoint record holds every partition.
    const lanes = new Map(context.committed.map((start) => [start.partition, { ...start, lastKey: start.lastKey, watermark: start.watermark }]));
    for (const checkpoint of merge.checkpoints) lanes.set(checkpoint.partition, checkpoint);
    const checkpoint = encodeCheckpoint(this.#options.pipeline, this.transactionalId, [...lanes.values()], built.progress);
    const checkpointRecord: OutgoingRecord = {
      topic: this.#checkpointTopic,
      ...checkpointMessage(this.transactionalId, checkpoint),
      bytes: checkpoint.length,
    };
    // Refusals are dead-lettered before the commit: a crash in between re-sends the letter
    // (the dead-letter subject is at-least-once), never loses it.
    await context.deadLetter(built.refusals);
    const hook = this.#options.beforeCommit;
    const records = built.records.length;
    try {
      await this.#producer.commitTransaction([...built.records, checkpointRecord], hook === undefined ? undefined : () => hook({ records, logger: this.#logger }));
    } catch (error) {
      if (error instanceof KafkaFencedError) throw error;
      if (isMessageTooLarge(error)) {
        // The broker (or topic) takes less than we thought: lower the bar under the
        // largest record so the retry dead-letters it instead of failing forever.
        const largest = Math.max(...built.records.map((record) => record.bytes));
        this.#maxMessageBytes = Math.min(this.#maxMessageBytes, largest - 1);
        this.#logger.warn({ max_message_bytes: this.#maxMessageBytes }, 'broker refused a record as too large; lowering the record size limit');
      }
      this.#uncertain = true;
      throw error;
    }
    this.#progress = built.progress;
    this.#stats.records += records;
    const last = merge.events.at(-1)?.event;
    this.#logger.debug(
      {
        events: merge.events.length,
        records,
        transactions: merge.transactions,
        inside_transaction: merge.endsInside,
        refused: built.refusals.length,
        ms: Date.now() - started,
        ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}),
      },
      'kafka transaction committed',
    );
    return { committed: merge.checkpoints, applied: built.events };
  }

  /** Creates the topics a batch routes to that we have not seen yet (idempotent). */
  async #ensureTopics(records: readonly OutgoingRecord[]): Promise<void> {
    const missing = [...new Set(records.map((record) => record.topic))].filter((topic) => !this.#knownTopics.has(topic));
    if (missing.length === 0) return;
    const existing = new Set(await this.#admin.listTopics());
    for (const topic of missing) {
      if (existing.has(topic)) {
        this.#knownTopics.add(topic);
        continue;
      }
      try {
        await this.#admin.createTopics({
          topics: [topic],
          partitions: this.#options.topicPartitions ?? KAFKA_DEFAULTS.topicPartitions,
          replicas: this.#options.topicReplicationFactor ?? KAFKA_DEFAULTS.replicationFactor,
        });
      } catch (error) {
        if (!isTopicExists(error)) {
          const failure = new TopicCreationError(topic, error);
          this.#logger.error({ err: failure, topic }, failure.message);
          throw failure;
        }
      }
      await waitForTopicLeaders(this.#admin, topic);
      this.#knownTopics.add(topic);
      this.#logger.info({ topic }, 'topic created');
    }
  }

  /** Closes the producer (aborting anything open) and the admin client. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#producer.close();
      await this.#admin.close().catch(() => undefined);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Commits a barrier under our (freshly initialised) id and reads our checkpoint up to it. */
async function readStarts(options: {
  connection: KafkaConnection;
  producer: TransactionalProducer;
  checkpointTopic: string;
  partitions: number;
  logger: Logger;
}): Promise<{ starts: LaneStart[]; progress: TransactionProgress | undefined }> {
  const nonce = randomUUID();
  const message = barrierMessage(options.producer.transactionalId, nonce);
  await options.producer.commitTransaction([{ topic: options.checkpointTopic, ...message, bytes: message.value.length }]);
  const text = await readCheckpointThroughBarrier({
    connection: options.connection,
    topic: options.checkpointTopic,
    committer: options.producer.transactionalId,
    nonce,
    logger: options.logger,
  });
  return { starts: decodeCheckpoint(text, options.partitions), progress: decodeOpenTransaction(text) };
}

async function brokerMessageMaxBytes(admin: Admin): Promise<number> {
  try {
    const metadata = await admin.metadata({ topics: [] });
    const nodeId = [...metadata.brokers.keys()][0];
    if (nodeId === undefined) return DEFAULT_BROKER_MESSAGE_MAX_BYTES;
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ resourceType: CONFIG_RESOURCE_BROKER, resourceName: String(nodeId), configurationKeys: ['message.max.bytes'] }],
    });
    const value = described[0]?.configs.find((entry) => entry.name === 'message.max.bytes')?.value;
    const parsed = Number(value);
    return Number.isFinite(parsed) && parsed > 0 ? parsed : DEFAULT_BROKER_MESSAGE_MAX_BYTES;
  } catch {
    return DEFAULT_BROKER_MESSAGE_MAX_BYTES;
  }
}
