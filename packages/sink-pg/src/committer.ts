/**
 * The committer: every partition of a pipeline into one PostgreSQL sink, exactly once.
 *
 *   deduped.0 ─┐                                   ┌─► sink: rows + cdc_checkpoint, one transaction
 *   deduped.1 ─┼─► PartitionMerger ─► MergeBatch ──┤
 *   deduped.P ─┘   (release ≤ min watermark)       └─► etcd /checkpoints/<pipeline>/<p> (after COMMIT)
 *
 * It runs the shared ConsumerLoop: fetch (read partitions, take a batch of whole source
 * transactions) → process (apply + COMMIT in the sink) → commit (publish positions to
 * etcd, in the background: the sink is the truth, etcd only feeds the reader's slot).
 * A batch whose processing failed is kept and offered again by the next fetch, so a
 * retry applies exactly the same events.
 *
 * States:
 *   running ──close()/signal──► draining ──► stopped
 *      └──── non-retriable error (FencedError, …) ──► failed
 * `done` resolves (never rejects) with the error that stopped it, if any.
 */
import { Bus, StreamGapError, type BusMessage, type StreamReader } from '@cdc/bus';
import { DEFAULT_SINK, type CheckpointStore, type PartitionCheckpoint } from '@cdc/checkpoint';
import {
  CdcError,
  UnreachableError,
  formatOrderKey,
  retry,
  sleep,
  stageSubject,
  streamName,
  type ChangeEvent,
  type DeadLetter,
} from '@cdc/core';
import { ConsumerLoop, redactUrl, type ConsumerHandler, type Logger } from '@cdc/runtime';
import pg from 'pg';
import { acquireEpoch, readCheckpoints } from './checkpoints.ts';
import { FencedError, fromPgError } from './errors.ts';
import { decodeOrdered } from './decode.ts';
import { PartitionMerger, type LaneCheckpoint, type LaneStart, type MergeBatch } from './merge.ts';
import { TableCatalog, ensureBookkeeping } from './schema.ts';
import { SinkWriter, type Refusal } from './writer.ts';

export interface CommitterOptions {
  readonly pipeline: string;
  readonly partitions: number;
  /** postgres:// URL of the sink database. */
  readonly sinkUrl: string;
  readonly bus: Bus;
  /** Where committed positions go for slot feedback; omit to skip (tests). */
  readonly checkpointStore?: CheckpointStore | undefined;
  /** This sink's name in etcd (the reader's SINKS); default 'postgres'. */
  readonly sinkName?: string;
  readonly logger: Logger;
  /** Source table → sink table (`schema.table`); default: the same name. */
  readonly tableMap?: ReadonlyMap<string, string>;
  readonly batchMaxEvents?: number;
  readonly batchLingerMs?: number;
  /** Bound on events buffered per partition before it stops being read (default 4 × batchMaxEvents). */
  readonly maxBufferedPerPartition?: number;
  readonly progressIntervalMs?: number;
  /** Aborting it drains: the batch in hand is committed, then the committer stops. */
  readonly signal?: AbortSignal;
}

export interface CommitterStats {
  readonly epoch: number;
  /** Events in committed batches, refused ones excluded. */
  readonly applied: number;
  readonly batches: number;
  readonly transactions: number;
  readonly deadLettered: number;
  readonly replaysSkipped: number;
  readonly lateEvents: number;
  readonly rowsWritten: number;
  readonly isolatedBatches: number;
  readonly retries: number;
}

export type CommitterState = 'running' | 'draining' | 'stopped' | 'failed';

interface PendingBatch {
  readonly merge: MergeBatch;
  attempts: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Sleep between polls while no partition has anything buffered. */
const POLL_IDLE_MS = 5;
/** Pause before re-sending positions after etcd refused them. */
const ETCD_RETRY_MS = 1_000;

export class Committer {
  readonly #options: CommitterOptions;
  readonly #logger: Logger;
  readonly #pool: pg.Pool;
  readonly #writer: SinkWriter;
  readonly #controller = new AbortController();
  readonly #maxEvents: number;
  readonly #lingerMs: number;
  readonly #maxBuffered: number;
  readonly #stream: string;
  readonly #stats: Mutable<CommitterStats>;
  readonly #readers = new Map<number, StreamReader>();
  /** Checkpoints the sink holds: where a rewind restarts. */
  readonly #committed = new Map<number, LaneStart>();
  /** Partition checkpoints waiting to reach etcd (newest per partition). */
  readonly #etcdDirty = new Map<number, PartitionCheckpoint>();
  #merger: PartitionMerger;
  #pending: PendingBatch | undefined;
  #publishing: Promise<void> | undefined;
  #etcdRetry: NodeJS.Timeout | undefined;
  #loop: ConsumerLoop<PendingBatch> | undefined;
  #state: CommitterState = 'running';
  #fatal: unknown;
  #progressTimer: NodeJS.Timeout | undefined;
  #progressMark = { at: Date.now(), applied: 0 };
  #closing: Promise<void> | undefined;
  /** Resolves when the loop has ended, with the error that ended it (if any). */
  readonly done: Promise<Error | undefined>;

  private constructor(options: CommitterOptions, pool: pg.Pool, epoch: number, starts: readonly LaneStart[], logger: Logger) {
    this.#options = options;
    this.#logger = logger;
    this.#pool = pool;
    this.#maxEvents = options.batchMaxEvents ?? 2000;
    this.#lingerMs = options.batchLingerMs ?? 50;
    this.#maxBuffered = options.maxBufferedPerPartition ?? 4 * this.#maxEvents;
    this.#stream = streamName(options.pipeline, 'deduped');
    const catalog = new TableCatalog(pool, options.tableMap);
    this.#writer = new SinkWriter({ pool, catalog, pipeline: options.pipeline, logger });
    this.#stats = {
      epoch,
      applied: 0,
      batches: 0,
      transactions: 0,
      deadLettered: 0,
      replaysSkipped: 0,
      lateEvents: 0,
      rowsWritten: 0,
      isolatedBatches: 0,
      retries: 0,
    };
    for (const start of starts) {
      this.#committed.set(start.partition, start);
      // A restarted committer re-announces what the sink holds: its old keys died with its lease.
      this.#markForEtcd({ partition: start.partition, resumeSeq: start.resumeSeq, lastKey: start.lastKey, watermark: start.watermark });
    }
    this.#merger = new PartitionMerger(starts);
    if (options.signal?.aborted) this.#controller.abort(options.signal.reason);
    options.signal?.addEventListener('abort', () => this.#controller.abort(options.signal?.reason), { once: true });
    this.done = new Promise((resolve) => {
      this.#resolveDone = resolve;
    });
  }

  #resolveDone: (error: Error | undefined) => void = () => undefined;

  /**
   * Connects to the sink, creates the bookkeeping tables, takes ownership (epoch + 1:
   * any older committer is fenced from its next batch on), reads the checkpoints and
   * starts reading every partition from its stored sequence.
   */
  static async start(options: CommitterOptions): Promise<Committer> {
    if (!Number.isInteger(options.partitions) || options.partitions < 1) {
      throw new RangeError(`partitions must be a positive integer, got ${options.partitions}`);
    }
    const logger = options.logger.child({ component: 'committer', pipeline: options.pipeline });
    const pool = new pg.Pool({ connectionString: options.sinkUrl, max: 3, application_name: `cdc-committer-${options.pipeline}` });
    // A connection that breaks must not crash the process: idle ones are reported by the
    // pool, checked-out ones fail their query (retriable) and are discarded on release.
    pool.on('error', (error) => logger.warn({ err: error }, 'idle sink connection failed'));
    pool.on('connect', (client) => client.on('error', () => undefined));
    try {
      const client = await retry(
        async () => {
          try {
            return await pool.connect();
          } catch (error) {
            throw new UnreachableError('sink PostgreSQL', redactUrl(options.sinkUrl), 'check SINK_DATABASE_URL and that the server runs', error);
          }
        },
        {
          attempts: 8,
          initialDelayMs: 250,
          maxDelayMs: 4_000,
          ...(options.signal ? { signal: options.signal } : {}),
          onRetry: ({ attempt, delayMs }) => logger.warn({ attempt, delay_ms: delayMs }, 'sink not reachable yet; retrying'),
        },
      );
      let epoch: number;
      let starts: LaneStart[];
      try {
        await ensureBookkeeping(client);
        epoch = await acquireEpoch(client, options.pipeline);
        starts = await readCheckpoints(client, options.pipeline, options.partitions);
      } catch (error) {
        throw fromPgError(error, {});
      } finally {
        client.release();
      }
      const stream = streamName(options.pipeline, 'deduped');
      const firstSeq = await options.bus.firstSequence(stream);
      for (const start of starts) {
        // A stored position the stream no longer holds: messages may be gone. Stop loudly.
        if ((start.lastKey !== undefined || start.watermark !== undefined) && start.resumeSeq < firstSeq) {
          throw new StreamGapError(stream, stageSubject(options.pipeline, 'deduped', start.partition), start.resumeSeq, firstSeq);
        }
      }
      const committer = new Committer(options, pool, epoch, starts, logger);
      logger.info(
        {
          epoch,
          partitions: options.partitions,
          resume: starts.map((start) => ({
            partition: start.partition,
            resume_seq: start.resumeSeq,
            last_key: start.lastKey === undefined ? null : formatOrderKey(start.lastKey),
          })),
        },
        'committer started',
      );
      try {
        await committer.#openReaders();
      } catch (error) {
        await committer.#closeReaders();
        throw error;
      }
      committer.#run();
      return committer;
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
  }

  get state(): CommitterState {
    return this.#state;
  }

  get epoch(): number {
    return this.#stats.epoch;
  }

  stats(): CommitterStats {
    return { ...this.#stats };
  }

  /** For /readyz: running and not stuck retrying. */
  readiness(): { ok: boolean; detail?: string } {
    const loop = this.#loop?.state;
    if (this.#state !== 'running') return { ok: false, detail: `committer ${this.#state}` };
    if (loop === 'failed' || loop === 'retry') return { ok: false, detail: `retrying after ${this.#loop?.consecutiveFailures} failure(s)` };
    return { ok: true };
  }

  /** Drains (the batch in hand commits), publishes the last positions, closes readers and the pool. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#state === 'running') this.#state = 'draining';
      this.#controller.abort(new Error('committer closed'));
      await this.done;
      await this.#closeReaders();
      await this.#pool.end().catch(() => undefined);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #run(): void {
    const loop = new ConsumerLoop<PendingBatch>({
      name: 'committer',
      logger: this.#logger,
      retry: { initialDelayMs: 200, maxDelayMs: 5_000 },
      onError: (error) => {
        this.#stats.retries += 1;
        // Retrying cannot help a fenced or otherwise non-retriable committer: stop.
        if (error instanceof CdcError && !error.retriable) {
          this.#fatal = error;
          this.#controller.abort(error);
        }
      },
    });
    this.#loop = loop;
    const handler: ConsumerHandler<PendingBatch> = {
      fetch: (signal) => this.#fetch(signal),
      process: (batch) => this.#process(batch),
      commit: async () => this.#publishPositions(),
      onStop: () => this.#onStop(),
    };
    this.#progressTimer = setInterval(() => this.#logProgress(), this.#options.progressIntervalMs ?? 5_000);
    this.#progressTimer.unref();
    this.#publishPositions();
    loop.run(handler, this.#controller.signal).then(
      () => this.#finish(this.#fatal),
      (error: unknown) => this.#finish(this.#fatal ?? error),
    );
  }

  #finish(error: unknown): void {
    clearInterval(this.#progressTimer);
    const failure = error === undefined ? undefined : error instanceof Error ? error : new Error(String(error));
    this.#state = failure ? 'failed' : 'stopped';
    if (failure) this.#logger.error({ err: failure }, 'committer stopped on error');
    this.#logProgress();
    this.#resolveDone(failure);
  }

  async #openReaders(): Promise<void> {
    for (const start of this.#committed.values()) {
      const reader = await this.#options.bus.openReader({
        stream: this.#stream,
        subject: stageSubject(this.#options.pipeline, 'deduped', start.partition),
        startSeq: start.resumeSeq,
        bufferMessages: Math.min(1_000, this.#maxBuffered),
      });
      this.#readers.set(start.partition, reader);
    }
  }

  async #closeReaders(): Promise<void> {
    for (const reader of this.#readers.values()) await this.#options.bus.closeReader(reader).catch(() => undefined);
    this.#readers.clear();
  }

  /** After a failed read: forget what is buffered and read again from the committed checkpoints. */
  async #rewind(): Promise<void> {
    await this.#closeReaders();
    this.#merger = new PartitionMerger([...this.#committed.values()]);
    await this.#openReaders();
  }

  async #fetch(signal: AbortSignal): Promise<PendingBatch | undefined> {
    // A batch that failed is offered again as it was: the retry applies the same events.
    if (this.#pending) return this.#pending;
    try {
      await this.#fill(signal);
    } catch (error) {
      this.#logger.warn({ err: error }, 'reading partitions failed; rewinding to the committed checkpoints');
      await this.#rewind();
      throw error;
    }
    const merge = this.#merger.take(this.#maxEvents);
    if (merge === undefined) return undefined;
    this.#pending = { merge, attempts: 0 };
    return this.#pending;
  }

  /**
   * Reads partitions until a full batch is releasable or the linger time is up. Polls
   * take only what the readers already buffered (a wait on one idle partition must not
   * hold up the others), with short sleeps while nothing arrives.
   */
  async #fill(signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.#lingerMs;
    for (;;) {
      const received = await this.#poll(signal);
      if (this.#merger.releasableAtLeast(this.#maxEvents)) return;
      const left = deadline - Date.now();
      if (left <= 0 || signal.aborted) return;
      if (received === 0) await sleep(Math.min(POLL_IDLE_MS, left), signal).catch(() => undefined);
    }
  }

  async #poll(signal: AbortSignal): Promise<number> {
    const wanted = [...this.#readers].filter(([partition]) => this.#merger.wantsMore(partition, this.#maxBuffered));
    const polled = await Promise.all(
      wanted.map(async ([partition, reader]) => {
        const room = Math.max(1, this.#maxBuffered - this.#merger.buffered(partition));
        return { partition, messages: await reader.nextBatch(Math.min(room, 1_000), 0, signal) };
      }),
    );
    let received = 0;
    for (const { partition, messages } of polled) {
      received += messages.length;
      for (const message of messages) await this.#accept(partition, message);
    }
    return received;
  }

  async #accept(partition: number, message: BusMessage): Promise<void> {
    const subject = stageSubject(this.#options.pipeline, 'deduped', partition);
    const decoded = decodeOrdered(message.data, { subject, partition });
    if (decoded instanceof Error) {
      // Dead-lettered before it counts as consumed; if this fails, the rewind reads it again.
      await this.#deadLetter({
        stage: 'committer',
        reason: decoded.message,
        code: decoded.code,
        partition,
        subject,
        payload: new TextDecoder().decode(message.data),
        at: new Date().toISOString(),
        ...(decoded.context.eventId ? { eventId: decoded.context.eventId } : {}),
        ...(decoded.context.table ? { table: decoded.context.table } : {}),
      });
      this.#merger.push(partition, message.seq, undefined);
      return;
    }
    const result = this.#merger.push(partition, message.seq, decoded);
    if (result === 'replay') this.#stats.replaysSkipped += 1;
    if (result === 'late' && decoded.kind === 'change') {
      this.#stats.lateEvents += 1;
      this.#logger.warn(
        { partition, lsn: decoded.commitLsn, event_id: decoded.eventId, trace_id: decoded.traceId },
        'event arrived after its watermark was released; applying it on its own',
      );
    }
  }

  async #process(batch: PendingBatch): Promise<void> {
    const { merge } = batch;
    const attempt = batch.attempts;
    batch.attempts += 1;
    const started = Date.now();
    const events = merge.events.map((merged) => merged.event);
    const outcome = await this.#writer.apply({
      events,
      checkpoints: merge.checkpoints,
      epoch: this.#stats.epoch,
      retry: attempt > 0,
      beforeCommit: (refusals) => this.#deadLetterRefusals(merge, refusals),
    });
    // Committed: from here on the batch must never be applied again.
    this.#pending = undefined;
    for (const checkpoint of merge.checkpoints) {
      this.#committed.set(checkpoint.partition, {
        partition: checkpoint.partition,
        resumeSeq: checkpoint.resumeSeq,
        lastKey: checkpoint.lastKey,
        watermark: checkpoint.watermark,
      });
      this.#markForEtcd(checkpoint);
    }
    this.#stats.batches += 1;
    this.#stats.transactions += merge.transactions;
    this.#stats.applied += events.length - outcome.refusals.length;
    this.#stats.deadLettered += outcome.refusals.length;
    this.#stats.rowsWritten += outcome.rowsWritten;
    if (outcome.mode === 'isolated') this.#stats.isolatedBatches += 1;
    const last = events.at(-1);
    this.#logger.debug(
      {
        events: events.length,
        transactions: merge.transactions,
        statements: outcome.statements,
        rows: outcome.rowsWritten,
        mode: outcome.mode,
        attempt,
        ms: Date.now() - started,
        ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}),
      },
      'batch committed',
    );
  }

  async #deadLetterRefusals(merge: MergeBatch, refusals: readonly Refusal[]): Promise<void> {
    for (const { item, error } of refusals) {
      const merged = merge.events[item];
      if (merged === undefined) continue;
      const event: ChangeEvent = merged.event;
      await this.#deadLetter({
        stage: 'committer',
        reason: error.message,
        code: error.code,
        table: error.context.table ?? event.table,
        lsn: event.commitLsn,
        eventId: event.eventId,
        partition: merged.partition,
        subject: stageSubject(this.#options.pipeline, 'deduped', merged.partition),
        ...(error.context.column ? { column: error.context.column } : {}),
        ...(error.context.sqlstate ? { sqlstate: error.context.sqlstate } : {}),
        seq: merged.seq,
        traceId: event.traceId,
        payload: JSON.stringify(event),
        at: new Date().toISOString(),
      });
    }
  }

  async #deadLetter(letter: DeadLetter & { sqlstate?: string; seq?: number; traceId?: string }): Promise<void> {
    await this.#options.bus.deadLetter(this.#options.pipeline, letter);
    this.#logger.warn(
      {
        table: letter.table,
        column: letter.column,
        code: letter.code,
        sqlstate: letter.sqlstate,
        partition: letter.partition,
        lsn: letter.lsn,
        event_id: letter.eventId,
        trace_id: letter.traceId,
      },
      `event dead-lettered: ${letter.reason}`,
    );
  }

  #markForEtcd(checkpoint: LaneCheckpoint): void {
    if (checkpoint.watermark === undefined) return;
    this.#etcdDirty.set(checkpoint.partition, {
      partition: checkpoint.partition,
      positions: checkpoint.watermark.positions,
      lamport: checkpoint.watermark.lamport.toString(),
      epoch: this.#stats.epoch,
      updatedAt: new Date().toISOString(),
    });
  }

  /**
   * Sends the newest committed positions to etcd in the background, one publish at a
   * time: a slow or failing etcd never holds up applying. What committed meanwhile is
   * sent right after; a failed publish puts its entries back (unless newer ones arrived)
   * and is retried after a pause, with or without new batches.
   */
  #publishPositions(): void {
    const store = this.#options.checkpointStore;
    if (store === undefined) {
      this.#etcdDirty.clear();
      return;
    }
    if (this.#publishing !== undefined || this.#etcdDirty.size === 0) return;
    const checkpoints = [...this.#etcdDirty.values()];
    this.#etcdDirty.clear();
    this.#publishing = store.publishPartitions(this.#options.pipeline, checkpoints, this.#options.sinkName ?? DEFAULT_SINK).then(
      () => {
        this.#publishing = undefined;
        this.#publishPositions();
      },
      (error: unknown) => {
        this.#publishing = undefined;
        for (const checkpoint of checkpoints) {
          if (!this.#etcdDirty.has(checkpoint.partition)) this.#etcdDirty.set(checkpoint.partition, checkpoint);
        }
        this.#logger.warn({ err: error, partitions: checkpoints.map((c) => c.partition) }, 'publishing positions to etcd failed; will retry');
        if (this.#etcdRetry === undefined && this.#state === 'running') {
          this.#etcdRetry = setTimeout(() => {
            this.#etcdRetry = undefined;
            this.#publishPositions();
          }, ETCD_RETRY_MS);
          this.#etcdRetry.unref();
        }
      },
    );
  }

  async #onStop(): Promise<void> {
    if (this.#state === 'running') this.#state = 'draining';
    clearTimeout(this.#etcdRetry);
    if (this.#fatal instanceof FencedError) {
      // The new owner publishes from here on; our older positions must not overwrite its keys.
      this.#etcdDirty.clear();
      return;
    }
    // The last positions reach etcd before we exit (bounded: etcd may be the thing that is down).
    const flush = async (): Promise<void> => {
      for (let round = 0; round < 3 && (this.#publishing !== undefined || this.#etcdDirty.size > 0); round++) {
        while (this.#publishing !== undefined) await this.#publishing;
        this.#publishPositions();
      }
      while (this.#publishing !== undefined) await this.#publishing;
    };
    await Promise.race([flush(), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
  }

  #logProgress(): void {
    const now = Date.now();
    const seconds = Math.max(0.001, (now - this.#progressMark.at) / 1000);
    const perSecond = (this.#stats.applied - this.#progressMark.applied) / seconds;
    this.#progressMark = { at: now, applied: this.#stats.applied };
    this.#logger.info(
      {
        applied: this.#stats.applied,
        batches: this.#stats.batches,
        transactions: this.#stats.transactions,
        events_per_s: Math.round(perSecond),
        dead_lettered: this.#stats.deadLettered,
        replays_skipped: this.#stats.replaysSkipped,
        retries: this.#stats.retries,
        epoch: this.#stats.epoch,
      },
      'progress',
    );
  }
}

