/**
 * The Kafka committer: every partition of a pipeline into Kafka topics, exactly once.
 *
 *   deduped.0..P ─► MergedFeed ─► MergeBatch ─► one Kafka transaction:
 *                                                 Debezium records (topic per table, key = primary key)
 *                                                 [+ tombstones, + BEGIN/END transaction metadata]
 *                                                 + this committer's checkpoint (compacted topic)
 *                                               ─► COMMIT ─► etcd positions (slot feedback)
 *
 * One committer owns all partitions under one stable transactional id, so a source
 * transaction is one Kafka transaction (read_committed consumers see it whole) and a
 * restarted committer fences its zombie predecessor. A source transaction of more than
 * `streamAbove` events is the exception: it goes out in chunks, one Kafka transaction
 * each, so no process holds it whole (as Debezium, which never writes a source
 * transaction atomically); its BEGIN/END metadata still frames it whole. JetStream is never acknowledged:
 * the stream position is part of the checkpoint, committed with the events.
 *
 * Failure rules (PITFALLS 18-20):
 *  - fenced (another committer initialised our id) → stop, write nothing more;
 *  - any other failure of a batch → outcome unknown: drop the batch, re-create the
 *    producer (which aborts whatever is open), commit a barrier, re-read our checkpoint
 *    with read_committed and rewind the partitions to it; back off and go on.
 *
 * States: running ──close()/signal──► draining ──► stopped;  ──fenced/fatal──► failed.
 */
import { randomUUID } from 'node:crypto';
import type { Bus } from '@cdc/bus';
import type { CheckpointStore } from '@cdc/checkpoint';
import { CdcError, UnreachableError, formatOrderKey, retry, stageSubject, type DeadLetter } from '@cdc/core';
import { memoryFields, type Logger } from '@cdc/runtime';
import { CommitterRun, MergedFeed, PositionPublisher, type CommitterState, type LaneStart, type MergeBatch } from '@cdc/sink-pg';
import { Kafka, logLevel, type Admin, type LogEntry } from 'kafkajs';
import {
  barrierMessage,
  checkpointMessage,
  decodeCheckpoint,
  decodeOpenTransaction,
  encodeCheckpoint,
  ensureCheckpointTopic,
  readCheckpointThroughBarrier,
  waitForTopicLeaders,
} from './checkpoint-topic.ts';
import { KafkaFencedError, TopicCreationError, isMessageTooLarge } from './errors.ts';
import { TransactionalProducer, type Compression, type OutgoingRecord } from './producer.ts';
import { buildRecords, type RecordOptions, type TransactionProgress } from './records.ts';

export interface KafkaCommitterOptions {
  readonly pipeline: string;
  readonly partitions: number;
  readonly brokers: readonly string[];
  readonly bus: Bus;
  readonly checkpointStore?: CheckpointStore | undefined;
  readonly logger: Logger;
  /** This sink's name in etcd (the reader's SINKS). Default 'kafka'. */
  readonly sinkName?: string;
  /** Default `cdc.<pipeline>.<sinkName>`: stable across restarts, unique per committer. */
  readonly transactionalId?: string;
  /** Compacted topic holding committer checkpoints. Default 'cdc.checkpoints'. */
  readonly checkpointTopic?: string;
  readonly records: RecordOptions;
  readonly batchMaxEvents?: number;
  readonly batchLingerMs?: number;
  readonly maxBufferedPerPartition?: number;
  /** Bound on the encoded bytes buffered per partition (default 8 MiB). */
  readonly maxBufferedBytesPerPartition?: number;
  /** Source transactions with more events than this are written in chunks of batchMaxEvents, one Kafka transaction each. Default 5000. */
  readonly streamAbove?: number;
  readonly compression?: Compression;
  readonly maxRequestBytes?: number;
  /** Largest record the broker takes; default: the broker's message.max.bytes. */
  readonly maxMessageBytes?: number;
  readonly transactionTimeoutMs?: number;
  /** Partitions of the table topics the committer creates. Default 1. */
  readonly topicPartitions?: number;
  /** Replication factor of the table topics the committer creates. Default 1. */
  readonly topicReplicationFactor?: number;
  /** Replication factor of the checkpoint topic, if the committer creates it. Default 1. */
  readonly checkpointReplicationFactor?: number;
  readonly progressIntervalMs?: number;
  /**
   * Test failpoint: hold every transaction open this long between its last send and its
   * commit, announcing it in the log, so a chaos test can kill the process mid-transaction
   * for certain. Never set in production.
   */
  readonly holdBeforeCommitMs?: number;
  /** Connection attempts at start before giving up with UnreachableError. Default 10 (about a minute). */
  readonly connectAttempts?: number;
  readonly signal?: AbortSignal;
}

export interface KafkaCommitterStats {
  /** Change events in committed transactions (tombstones and metadata excluded). */
  readonly applied: number;
  readonly records: number;
  readonly batches: number;
  readonly transactions: number;
  readonly deadLettered: number;
  readonly recoveries: number;
  readonly retries: number;
}

export type KafkaCommitterState = CommitterState;

interface PendingBatch {
  readonly merge: MergeBatch;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Headroom under message.max.bytes for the record batch header and record framing. */
const RECORD_OVERHEAD_BYTES = 512;
const DEFAULT_BROKER_MESSAGE_MAX_BYTES = 1_048_588;

export class KafkaCommitter {
  readonly #options: KafkaCommitterOptions;
  readonly #logger: Logger;
  readonly #kafka: Kafka;
  readonly #admin: Admin;
  readonly #producer: TransactionalProducer;
  readonly #feed: MergedFeed;
  readonly #positions: PositionPublisher;
  readonly #run: CommitterRun<PendingBatch>;
  readonly #checkpointTopic: string;
  readonly #knownTopics = new Set<string>();
  readonly #stats: Mutable<KafkaCommitterStats> = { applied: 0, records: 0, batches: 0, transactions: 0, deadLettered: 0, recoveries: 0, retries: 0 };
  /** Lanes as the checkpoint topic holds them (the feed's committed starts). */
  #maxMessageBytes: number;
  #pending: PendingBatch | undefined;
  /** The source transaction the last committed checkpoint is inside of (chunked), as Kafka holds it. */
  #progress: TransactionProgress | undefined;
  #needsRecovery = false;
  #progressMark = { at: Date.now(), applied: 0 };
  #closing: Promise<void> | undefined;
  /** Resolves when the loop has ended, with the error that ended it (if any). */
  readonly done: Promise<Error | undefined>;

  private constructor(parts: {
    options: KafkaCommitterOptions;
    logger: Logger;
    kafka: Kafka;
    admin: Admin;
    producer: TransactionalProducer;
    feed: MergedFeed;
    maxMessageBytes: number;
    progress: TransactionProgress | undefined;
  }) {
    this.#options = parts.options;
    this.#logger = parts.logger;
    this.#kafka = parts.kafka;
    this.#admin = parts.admin;
    this.#producer = parts.producer;
    this.#feed = parts.feed;
    this.#maxMessageBytes = parts.maxMessageBytes;
    this.#progress = parts.progress;
    this.#checkpointTopic = parts.options.checkpointTopic ?? 'cdc.checkpoints';
    this.#positions = new PositionPublisher({
      store: parts.options.checkpointStore,
      pipeline: parts.options.pipeline,
      sink: parts.options.sinkName ?? 'kafka',
      logger: parts.logger,
    });
    // A restarted committer re-announces what Kafka holds: its old etcd keys died with its lease.
    for (const start of parts.feed.committedStarts()) this.#positions.mark({ ...start, lastKey: start.lastKey, watermark: start.watermark }, 0);
    this.#run = new CommitterRun<PendingBatch>({
      name: 'kafka-committer',
      logger: parts.logger,
      signal: parts.options.signal,
      progressIntervalMs: parts.options.progressIntervalMs,
      logProgress: () => this.#logProgress(),
      onFailure: () => {
        this.#stats.retries += 1;
      },
    });
    this.done = this.#run.done;
  }

  /**
   * Connects (retrying with back-off and saying why while Kafka is unreachable), creates
   * the checkpoint topic, initialises the transactional id (fencing any predecessor),
   * reads the last committed checkpoint and starts reading every partition after it.
   */
  static async start(options: KafkaCommitterOptions): Promise<KafkaCommitter> {
    if (!Number.isInteger(options.partitions) || options.partitions < 1) {
      throw new RangeError(`partitions must be a positive integer, got ${options.partitions}`);
    }
    const sinkName = options.sinkName ?? 'kafka';
    const transactionalId = options.transactionalId ?? `cdc.${options.pipeline}.${sinkName}`;
    const logger = options.logger.child({ component: 'kafka-committer', pipeline: options.pipeline, transactional_id: transactionalId });
    const kafka = new Kafka({
      clientId: `cdc-committer-${options.pipeline}`,
      brokers: [...options.brokers],
      connectionTimeout: 3_000,
      requestTimeout: 30_000,
      retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 5_000 },
      logLevel: logLevel.WARN,
      logCreator: () => (entry: LogEntry) => kafkaLog(logger, entry),
    });
    const admin = kafka.admin();
    const connectOptions = {
      attempts: options.connectAttempts ?? 10,
      initialDelayMs: 500,
      maxDelayMs: 10_000,
      ...(options.signal ? { signal: options.signal } : {}),
      onRetry: ({ attempt, delayMs, error }: { attempt: number; delayMs: number; error: unknown }) =>
        logger.warn({ attempt, delay_ms: delayMs, err: error, brokers: options.brokers }, 'Kafka not reachable yet; retrying'),
    };
    let producer: TransactionalProducer | undefined;
    try {
      await retry(async () => {
        try {
          await admin.connect();
        } catch (error) {
          throw new UnreachableError('Kafka', options.brokers.join(','), 'check KAFKA_BROKERS and that the broker runs', error);
        }
      }, connectOptions);
      const checkpointTopic = options.checkpointTopic ?? 'cdc.checkpoints';
      await ensureCheckpointTopic(admin, checkpointTopic, options.checkpointReplicationFactor ?? 1);
      const maxMessageBytes = options.maxMessageBytes ?? (await brokerMessageMaxBytes(admin)) - RECORD_OVERHEAD_BYTES;
      producer = await retry(
        () =>
          TransactionalProducer.connect({
            kafka,
            transactionalId,
            transactionTimeoutMs: options.transactionTimeoutMs ?? 60_000,
            compression: options.compression ?? 'none',
            maxRequestBytes: options.maxRequestBytes ?? 900_000,
            logger,
          }),
        { ...connectOptions, isRetriable: (error) => !(error instanceof KafkaFencedError) },
      );
      const initialised = producer;
      const { starts, progress } = await retry(() => readStarts({ kafka, producer: initialised, checkpointTopic, partitions: options.partitions, logger }), {
        ...connectOptions,
        isRetriable: (error) => !(error instanceof KafkaFencedError),
      });
      const feed = await MergedFeed.open(
        {
          pipeline: options.pipeline,
          bus: options.bus,
          logger,
          stage: 'committer',
          sink: options.sinkName ?? 'kafka',
          maxEvents: options.batchMaxEvents ?? 2_000,
          lingerMs: options.batchLingerMs ?? 50,
          maxBuffered: options.maxBufferedPerPartition ?? 4 * (options.batchMaxEvents ?? 2_000),
          maxBufferedBytes: options.maxBufferedBytesPerPartition,
          streamAbove: options.streamAbove ?? 5_000,
        },
        starts,
      );
      const committer = new KafkaCommitter({ options, logger, kafka, admin, producer, feed, maxMessageBytes, progress });
      logger.info(
        {
          partitions: options.partitions,
          checkpoint_topic: checkpointTopic,
          max_message_bytes: maxMessageBytes,
          resume: starts.map((start) => ({
            partition: start.partition,
            resume_seq: start.resumeSeq,
            last_key: start.lastKey === undefined ? null : formatOrderKey(start.lastKey),
          })),
        },
        'kafka committer started',
      );
      committer.#start();
      return committer;
    } catch (error) {
      await producer?.close().catch(() => undefined);
      await admin.disconnect().catch(() => undefined);
      throw error;
    }
  }

  get state(): KafkaCommitterState {
    return this.#run.state;
  }

  get transactionalId(): string {
    return this.#producer.transactionalId;
  }

  stats(): KafkaCommitterStats {
    return { ...this.#stats, deadLettered: this.#stats.deadLettered + this.#feed.stats().deadLettered };
  }

  readiness(): { ok: boolean; detail?: string } {
    return this.#run.readiness();
  }

  /** Drains (the batch in hand commits), publishes the last positions, closes everything. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#run.stop('kafka committer closed');
      await this.#feed.close();
      await this.#producer.close();
      await this.#admin.disconnect().catch(() => undefined);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #start(): void {
    this.#positions.publish();
    this.#run.start({
      fetch: (signal) => this.#fetch(signal),
      process: (batch) => this.#process(batch),
      commit: async () => this.#positions.publish(),
      onStop: () => this.#onStop(),
    });
  }

  async #fetch(signal: AbortSignal): Promise<PendingBatch | undefined> {
    if (this.#needsRecovery) await this.#recover();
    // A batch that failed before reaching Kafka (topic creation) is offered again as it was.
    if (this.#pending) return this.#pending;
    const merge = await this.#feed.next(signal);
    if (merge === undefined) return undefined;
    this.#pending = { merge };
    return this.#pending;
  }

  /**
   * After an unknown outcome: a new producer (aborting anything open under our id), then
   * the checkpoint as Kafka committed it, and every partition rewound to it.
   */
  async #recover(): Promise<void> {
    this.#stats.recoveries += 1;
    this.#pending = undefined;
    await this.#producer.reset();
    const { starts, progress } = await readStarts({
      kafka: this.#kafka,
      producer: this.#producer,
      checkpointTopic: this.#checkpointTopic,
      partitions: this.#options.partitions,
      logger: this.#logger,
    });
    await this.#feed.rewind(starts);
    this.#progress = progress;
    this.#needsRecovery = false;
    this.#logger.info(
      { resume: starts.map((start) => ({ partition: start.partition, resume_seq: start.resumeSeq })) },
      'recovered: resuming after the last committed Kafka transaction',
    );
  }

  async #process(batch: PendingBatch): Promise<void> {
    const { merge } = batch;
    const started = Date.now();
    const built = buildRecords(merge, { ...this.#options.records, maxMessageBytes: this.#maxMessageBytes }, this.#progress);
    await this.#ensureTopics(built.records);
    // Lanes as they will stand after this batch: the checkpoint record holds every partition.
    const lanes = new Map(this.#feed.committedStarts().map((start) => [start.partition, { ...start, lastKey: start.lastKey, watermark: start.watermark }]));
    for (const checkpoint of merge.checkpoints) lanes.set(checkpoint.partition, checkpoint);
    const checkpoint = encodeCheckpoint(this.#options.pipeline, this.transactionalId, [...lanes.values()], built.progress);
    const checkpointRecord: OutgoingRecord = {
      topic: this.#checkpointTopic,
      message: checkpointMessage(this.transactionalId, checkpoint),
      bytes: checkpoint.length,
    };
    // Refusals are dead-lettered before the commit: a crash in between re-sends the letter
    // (the dead-letter subject is at-least-once), never loses it.
    for (const refusal of built.refusals) await this.#deadLetter(refusal);
    try {
      await this.#producer.commitTransaction([...built.records, checkpointRecord], this.#holdBeforeCommit(built.records.length));
    } catch (error) {
      if (error instanceof KafkaFencedError) throw error;
      if (isMessageTooLarge(error)) {
        // The broker (or topic) takes less than we thought: lower the bar under the
        // largest record so the retry dead-letters it instead of failing forever.
        const largest = Math.max(...built.records.map((record) => record.bytes));
        this.#maxMessageBytes = Math.min(this.#maxMessageBytes, largest - 1);
        this.#logger.warn({ max_message_bytes: this.#maxMessageBytes }, 'broker refused a record as too large; lowering the record size limit');
      }
      this.#needsRecovery = true;
      throw error;
    }
    this.#pending = undefined;
    this.#progress = built.progress;
    this.#feed.committed(merge.checkpoints);
    for (const lane of merge.checkpoints) this.#positions.mark(lane, 0);
    this.#stats.batches += 1;
    this.#stats.transactions += merge.transactions;
    this.#stats.applied += built.events;
    this.#stats.records += built.records.length;
    const last = merge.events.at(-1)?.event;
    this.#logger.debug(
      {
        events: merge.events.length,
        records: built.records.length,
        transactions: merge.transactions,
        inside_transaction: merge.endsInside,
        refused: built.refusals.length,
        ms: Date.now() - started,
        ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}),
      },
      'kafka transaction committed',
    );
  }

  #holdBeforeCommit(records: number): (() => Promise<void>) | undefined {
    const holdMs = this.#options.holdBeforeCommitMs ?? 0;
    if (holdMs <= 0) return undefined;
    return async () => {
      this.#logger.info({ records, hold_ms: holdMs }, 'failpoint: transaction sent, holding it open before commit');
      await new Promise((resolve) => setTimeout(resolve, holdMs));
    };
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
          waitForLeaders: true,
          topics: [{ topic, numPartitions: this.#options.topicPartitions ?? 1, replicationFactor: this.#options.topicReplicationFactor ?? 1 }],
        });
      } catch (error) {
        if ((error as { type?: string }).type !== 'TOPIC_ALREADY_EXISTS') {
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

  async #deadLetter(refusal: { error: CdcError; partition: number; seq: number; payload: string; table: string; eventId: string; lsn: string; traceId: string }): Promise<void> {
    const letter: DeadLetter & { seq: number; traceId: string } = {
      stage: 'committer',
      sink: this.#options.sinkName ?? 'kafka',
      reason: refusal.error.message,
      code: refusal.error.code,
      table: refusal.table,
      lsn: refusal.lsn,
      eventId: refusal.eventId,
      partition: refusal.partition,
      subject: stageSubject(this.#options.pipeline, 'deduped', refusal.partition),
      seq: refusal.seq,
      traceId: refusal.traceId,
      payload: refusal.payload,
      at: new Date().toISOString(),
    };
    await this.#options.bus.deadLetter(this.#options.pipeline, letter);
    this.#stats.deadLettered += 1;
    this.#logger.warn(
      { table: letter.table, code: letter.code, partition: letter.partition, lsn: letter.lsn, event_id: letter.eventId, trace_id: letter.traceId },
      `event dead-lettered: ${letter.reason}`,
    );
  }

  async #onStop(): Promise<void> {
    if (this.#run.fatal instanceof KafkaFencedError) {
      this.#positions.discard();
      return;
    }
    await this.#positions.flush();
  }

  #logProgress(): void {
    const now = Date.now();
    const seconds = Math.max(0.001, (now - this.#progressMark.at) / 1000);
    const perSecond = (this.#stats.applied - this.#progressMark.applied) / seconds;
    this.#progressMark = { at: now, applied: this.#stats.applied };
    this.#logger.info(
      {
        ...this.stats(),
        ...this.#feed.stats(),
        events_per_s: Math.round(perSecond),
        ...memoryFields(),
      },
      'progress',
    );
  }
}

/** Commits a barrier under our (freshly initialised) id and reads our checkpoint up to it. */
async function readStarts(options: {
  kafka: Kafka;
  producer: TransactionalProducer;
  checkpointTopic: string;
  partitions: number;
  logger: Logger;
}): Promise<{ starts: LaneStart[]; progress: TransactionProgress | undefined }> {
  const nonce = randomUUID();
  const message = barrierMessage(options.producer.transactionalId, nonce);
  await options.producer.commitTransaction([{ topic: options.checkpointTopic, message, bytes: String(message.value).length }]);
  const text = await readCheckpointThroughBarrier({
    kafka: options.kafka,
    topic: options.checkpointTopic,
    committer: options.producer.transactionalId,
    nonce,
    logger: options.logger,
  });
  return { starts: decodeCheckpoint(text, options.partitions), progress: decodeOpenTransaction(text) };
}

async function brokerMessageMaxBytes(admin: Admin): Promise<number> {
  try {
    const cluster = await admin.describeCluster();
    const broker = cluster.brokers[0];
    if (broker === undefined) return DEFAULT_BROKER_MESSAGE_MAX_BYTES;
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 4 /* BROKER */, name: String(broker.nodeId), configNames: ['message.max.bytes'] }],
    });
    const value = described.resources[0]?.configEntries.find((entry) => entry.configName === 'message.max.bytes')?.configValue;
    const parsed = Number(value);
    return Number.isFinite(parsed) && parsed > 0 ? parsed : DEFAULT_BROKER_MESSAGE_MAX_BYTES;
  } catch {
    return DEFAULT_BROKER_MESSAGE_MAX_BYTES;
  }
}

/** kafkajs' own log lines through pino, at their level (secrets: none in kafkajs logs). */
function kafkaLog(logger: Logger, entry: LogEntry): void {
  const { message, ...rest } = entry.log;
  const fields = { kafkajs: entry.namespace, ...rest };
  if (entry.level <= logLevel.ERROR) logger.warn(fields, `kafkajs: ${message}`);
  else if (entry.level === logLevel.WARN) logger.warn(fields, `kafkajs: ${message}`);
  else logger.debug(fields, `kafkajs: ${message}`);
}
