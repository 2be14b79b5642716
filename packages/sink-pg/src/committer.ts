/**
 * The committer: every partition of a pipeline into one PostgreSQL sink, exactly once.
 *
 *   deduped.0 ─┐                              ┌─► sink: rows + cdc_checkpoint, one transaction
 *   deduped.1 ─┼─► MergedFeed ─► MergeBatch ──┤
 *   deduped.P ─┘   (release ≤ min watermark)  └─► PositionPublisher ─► etcd /checkpoints/<pipeline>/<p> (after COMMIT)
 *
 * It runs the shared ConsumerLoop: fetch (the feed's next batch of whole source
 * transactions) → process (apply + COMMIT in the sink) → commit (publish positions to
 * etcd, in the background: the sink is the truth, etcd only feeds the reader's slot).
 * A batch whose processing failed is kept and offered again by the next fetch, so a
 * retry applies exactly the same events; a failed read rewinds the feed to the
 * committed checkpoints.
 *
 * A source transaction larger than `streamAbove` events comes in chunks: one sink
 * transaction (SinkSession) stays open across them and commits with the chunk that ends
 * it, so it lands whole and no process holds it whole. If anything fails while such a
 * transaction is open, it is rolled back and the feed rewinds to the checkpoints the
 * sink holds (read back from the sink: a COMMIT whose outcome was lost is seen there).
 *
 * States:
 *   running ──close()/signal──► draining ──► stopped
 *      └──── non-retriable error (FencedError, …) ──► failed
 * `done` resolves (never rejects) with the error that stopped it, if any.
 */
import type { Bus } from '@cdc/bus';
import { DEFAULT_SINK, type CheckpointStore } from '@cdc/checkpoint';
import { IllegalStateError, UnreachableError, formatOrderKey, retry, stageSubject, type ChangeEvent, type DeadLetter } from '@cdc/core';
import { memoryFields, redactUrl, type Logger } from '@cdc/runtime';
import pg from 'pg';
import { acquireEpoch, readCheckpoints } from './checkpoints.ts';
import { FencedError, fromPgError } from './errors.ts';
import { MergedFeed } from './feed.ts';
import type { LaneCheckpoint, LaneStart, MergeBatch } from './merge.ts';
import { PositionPublisher } from './positions.ts';
import { CommitterRun, type CommitterState } from './run.ts';
import { TableCatalog, ensureBookkeeping } from './schema.ts';
import { SinkWriter, type Refusal, type SinkSession } from './writer.ts';

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
  /** Bound on the encoded bytes buffered per partition (default 8 MiB). */
  readonly maxBufferedBytesPerPartition?: number;
  /** Source transactions with more events than this are streamed in chunks through one open sink transaction (default batchMaxEvents). */
  readonly streamAbove?: number;
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
  /** Source transactions that were applied in chunks through one open sink transaction. */
  readonly streamedTransactions: number;
  /** Rewinds to the sink's checkpoints after a failure with a streamed transaction open. */
  readonly recoveries: number;
}

export type { CommitterState };

interface PendingBatch {
  readonly merge: MergeBatch;
  attempts: number;
}

/** A sink transaction open across the chunks of a large source transaction. */
interface OpenStream {
  readonly session: SinkSession;
  /** The checkpoints of every chunk so far, newest per partition: written with the last one. */
  readonly checkpoints: Map<number, LaneCheckpoint>;
  readonly started: number;
  events: number;
  refused: number;
  rows: number;
  statements: number;
  chunks: number;
  isolated: boolean;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** What the committer counts itself (refusals as deadLettered); stats() adds the feed's replays, late events and undecodable messages. */
type OwnStats = Mutable<Omit<CommitterStats, 'replaysSkipped' | 'lateEvents'>>;

export class Committer {
  readonly #options: CommitterOptions;
  readonly #logger: Logger;
  readonly #pool: pg.Pool;
  readonly #writer: SinkWriter;
  readonly #feed: MergedFeed;
  readonly #positions: PositionPublisher;
  readonly #run: CommitterRun<PendingBatch>;
  readonly #stats: OwnStats;
  #pending: PendingBatch | undefined;
  #stream: OpenStream | undefined;
  /** A failure left the feed ahead of the sink: rewind to the sink's checkpoints before reading on. */
  #needsRecovery = false;
  #progressMark = { at: Date.now(), applied: 0 };
  #closing: Promise<void> | undefined;
  /** Resolves when the loop has ended, with the error that ended it (if any). */
  readonly done: Promise<Error | undefined>;

  private constructor(options: CommitterOptions, pool: pg.Pool, epoch: number, feed: MergedFeed, logger: Logger) {
    this.#options = options;
    this.#logger = logger;
    this.#pool = pool;
    this.#feed = feed;
    const catalog = new TableCatalog(pool, options.tableMap);
    this.#writer = new SinkWriter({ pool, catalog, pipeline: options.pipeline, logger });
    this.#stats = {
      epoch,
      applied: 0,
      batches: 0,
      transactions: 0,
      deadLettered: 0,
      rowsWritten: 0,
      isolatedBatches: 0,
      retries: 0,
      streamedTransactions: 0,
      recoveries: 0,
    };
    this.#positions = new PositionPublisher({
      store: options.checkpointStore,
      pipeline: options.pipeline,
      sink: options.sinkName ?? DEFAULT_SINK,
      logger,
    });
    // A restarted committer re-announces what the sink holds: its old keys died with its lease.
    for (const start of feed.committedStarts()) this.#positions.mark({ ...start, lastKey: start.lastKey, watermark: start.watermark }, epoch);
    this.#run = new CommitterRun<PendingBatch>({
      name: 'committer',
      logger,
      signal: options.signal,
      progressIntervalMs: options.progressIntervalMs,
      logProgress: () => this.#logProgress(),
      onFailure: () => {
        this.#stats.retries += 1;
      },
    });
    this.done = this.#run.done;
  }

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
      // Throws StreamGapError when a stored position is older than the stream holds.
      const maxEvents = options.batchMaxEvents ?? 2000;
      const feed = await MergedFeed.open(
        {
          pipeline: options.pipeline,
          bus: options.bus,
          logger,
          stage: 'committer',
          sink: options.sinkName ?? DEFAULT_SINK,
          maxEvents,
          lingerMs: options.batchLingerMs ?? 50,
          maxBuffered: options.maxBufferedPerPartition ?? 4 * maxEvents,
          maxBufferedBytes: options.maxBufferedBytesPerPartition,
          streamAbove: options.streamAbove ?? maxEvents,
        },
        starts,
      );
      const committer = new Committer(options, pool, epoch, feed, logger);
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
      committer.#start();
      return committer;
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
  }

  get state(): CommitterState {
    return this.#run.state;
  }

  get epoch(): number {
    return this.#stats.epoch;
  }

  stats(): CommitterStats {
    const feed = this.#feed.stats();
    return {
      ...this.#stats,
      deadLettered: this.#stats.deadLettered + feed.deadLettered,
      replaysSkipped: feed.replaysSkipped,
      lateEvents: feed.lateEvents,
    };
  }

  /** For /readyz: running and not stuck retrying. */
  readiness(): { ok: boolean; detail?: string } {
    return this.#run.readiness();
  }

  /** Drains (the batch in hand commits), publishes the last positions, closes readers and the pool. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#run.stop('committer closed');
      await this.#feed.close();
      await this.#pool.end().catch(() => undefined);
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
    // A batch that failed is offered again as it was: the retry applies the same events.
    if (this.#pending) return this.#pending;
    // A read failure rewinds the feed to the committed checkpoints and rethrows.
    const merge = await this.#feed.next(signal);
    if (merge === undefined) return undefined;
    this.#pending = { merge, attempts: 0 };
    return this.#pending;
  }

  /** Back to what the sink holds: its checkpoints, read from it, and the feed rewound to them. */
  async #recover(): Promise<void> {
    this.#stats.recoveries += 1;
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw fromPgError(error, {});
    }
    let starts: LaneStart[];
    try {
      starts = await readCheckpoints(client, this.#options.pipeline, this.#options.partitions);
    } catch (error) {
      throw fromPgError(error, {});
    } finally {
      client.release();
    }
    await this.#feed.rewind(starts);
    this.#needsRecovery = false;
    this.#logger.info(
      { resume: starts.map((start) => ({ partition: start.partition, resume_seq: start.resumeSeq })) },
      'recovered: resuming after the last transaction the sink committed',
    );
  }

  async #process(batch: PendingBatch): Promise<void> {
    const { merge } = batch;
    const chunk = merge.events.length > 0;
    if (this.#stream !== undefined || (chunk && merge.endsInside)) return this.#processStreamed(merge);
    // Only a chunk after an open stream starts inside a transaction; a rewind starts between two.
    if (chunk && merge.startsInside) throw new IllegalStateError('committer', 'no open sink transaction', 'apply the middle of a source transaction');
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
    this.#feed.committed(merge.checkpoints);
    for (const checkpoint of merge.checkpoints) this.#positions.mark(checkpoint, this.#stats.epoch);
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

  /**
   * A chunk of a large source transaction (or the batch after it): applied in the open
   * sink transaction; the checkpoints and COMMIT come with the chunk after which nothing
   * of it can follow. Never retried as it is: a failure rolls back and rewinds.
   */
  async #processStreamed(merge: MergeBatch): Promise<void> {
    this.#pending = undefined;
    try {
      const stream = (this.#stream ??= {
        session: await this.#writer.open(this.#stats.epoch),
        checkpoints: new Map(),
        started: Date.now(),
        events: 0,
        refused: 0,
        rows: 0,
        statements: 0,
        chunks: 0,
        isolated: false,
      });
      if (merge.events.length > 0) {
        const outcome = await stream.session.apply(merge.events.map((merged) => merged.event));
        // Before the COMMIT (which may be chunks away): a crash re-sends them, never loses them.
        if (outcome.refusals.length > 0) await this.#deadLetterRefusals(merge, outcome.refusals);
        stream.events += merge.events.length;
        stream.refused += outcome.refusals.length;
        stream.rows += outcome.rowsWritten;
        stream.statements += outcome.statements;
        stream.isolated ||= outcome.mode === 'isolated';
        stream.chunks += 1;
      }
      for (const checkpoint of merge.checkpoints) stream.checkpoints.set(checkpoint.partition, checkpoint);
      const last = merge.events.at(-1)?.event;
      if (merge.endsInside) {
        this.#logger.debug(
          { events: stream.events, chunks: stream.chunks, ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}) },
          'chunk applied; sink transaction stays open until the source transaction ends',
        );
        return;
      }
      const checkpoints = [...stream.checkpoints.values()];
      await stream.session.commit(checkpoints);
      this.#stream = undefined;
      this.#feed.committed(checkpoints);
      for (const checkpoint of checkpoints) this.#positions.mark(checkpoint, this.#stats.epoch);
      this.#stats.batches += 1;
      this.#stats.streamedTransactions += 1;
      this.#stats.transactions += merge.transactions;
      this.#stats.applied += stream.events - stream.refused;
      this.#stats.deadLettered += stream.refused;
      this.#stats.rowsWritten += stream.rows;
      if (stream.isolated) this.#stats.isolatedBatches += 1;
      this.#logger.info(
        {
          events: stream.events,
          chunks: stream.chunks,
          statements: stream.statements,
          rows: stream.rows,
          ms: Date.now() - stream.started,
          ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}),
        },
        'streamed transaction committed',
      );
    } catch (error) {
      await this.#abortStream();
      this.#needsRecovery = true;
      throw error;
    }
  }

  async #abortStream(): Promise<void> {
    const stream = this.#stream;
    this.#stream = undefined;
    await stream?.session.abort();
  }

  async #deadLetterRefusals(merge: MergeBatch, refusals: readonly Refusal[]): Promise<void> {
    for (const { item, error } of refusals) {
      const merged = merge.events[item];
      if (merged === undefined) continue;
      const event: ChangeEvent = merged.event;
      await this.#deadLetter({
        stage: 'committer',
        sink: this.#options.sinkName ?? DEFAULT_SINK,
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

  async #onStop(): Promise<void> {
    if (this.#stream !== undefined) {
      // Its end is not read yet: it cannot commit. The next committer applies it again, whole.
      this.#logger.warn({ events: this.#stream.events, chunks: this.#stream.chunks }, 'stopping with a streamed source transaction open: rolled back');
      await this.#abortStream();
    }
    if (this.#run.fatal instanceof FencedError) {
      // The new owner publishes from here on; our older positions must not overwrite its keys.
      this.#positions.discard();
      return;
    }
    await this.#positions.flush();
  }

  #logProgress(): void {
    const stats = this.stats();
    const now = Date.now();
    const seconds = Math.max(0.001, (now - this.#progressMark.at) / 1000);
    const perSecond = (stats.applied - this.#progressMark.applied) / seconds;
    this.#progressMark = { at: now, applied: stats.applied };
    this.#logger.info(
      {
        applied: stats.applied,
        batches: stats.batches,
        transactions: stats.transactions,
        events_per_s: Math.round(perSecond),
        dead_lettered: stats.deadLettered,
        replays_skipped: stats.replaysSkipped,
        retries: stats.retries,
        epoch: stats.epoch,
        ...memoryFields(),
      },
      'progress',
    );
  }
}
