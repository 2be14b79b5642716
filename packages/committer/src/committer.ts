/**
 * The committer, whatever its sink: every partition of a pipeline into one Sink,
 * exactly once.
 *
 *   deduped.0 ─┐                              ┌─► sink.apply: events + checkpoints, one sink transaction
 *   deduped.1 ─┼─► MergedFeed ─► MergeBatch ──┤
 *   deduped.P ─┘   (release ≤ min watermark)  └─► PositionPublisher ─► etcd /checkpoints/<pipeline>/<sink>/<p> (after COMMIT)
 *
 * It runs the shared ConsumerLoop (CommitterRun): fetch (the feed's next batch of whole
 * source transactions) → process (sink.apply) → commit (publish positions to etcd, in
 * the background: the sink is the truth, etcd only feeds the reader's slot). A batch
 * whose apply failed is offered again as it was, so a retry applies exactly the same
 * events — unless the sink says the outcome is unknown ('recover'): then the next fetch
 * first reads the checkpoints back from the sink and rewinds the feed to them. A failed
 * read rewinds the feed to the committed checkpoints.
 *
 * States:
 *   running ──close()/signal──► closing ──► closed
 *      └──── non-retriable error (fenced, …) ──► failed   (closed, with an error)
 * Made by `Committer.create`; `close()` is idempotent; `closed()` resolves (never rejects) with the error that stopped it, if any. A fenced
 * committer discards its unpublished positions (the new owner's are newer); otherwise
 * the last ones are flushed to etcd, bounded.
 */
import type { CheckpointStore } from '@cdc/checkpoint';
import { CdcError, formatOrderKey, stageSubject, systemClock, type Clock } from '@cdc/core';
import { memoryFields, type Logger } from '@cdc/runtime';
import { COMMITTER_DEFAULTS } from './defaults.ts';
import { MergedFeed, type FeedBus, type FeedCounters } from './feed.ts';
import type { LaneStart, MergeBatch, MergedEvent } from './merge.ts';
import { PositionPublisher } from './positions.ts';
import { CommitterRun, type CommitterState } from './run.ts';
import type { Sink, SinkRefusal } from './sink.ts';

export type { CommitterState };

export interface CommitterOptions {
  readonly pipeline: string;
  readonly bus: FeedBus;
  /** Where committed positions go for slot feedback; omit to skip (tests). */
  readonly checkpointStore?: Pick<CheckpointStore, 'publishPartitions'> | undefined;
  /** Already a child logger of the sink's component. */
  readonly logger: Logger;
  /** Loop name in logs ('committer', 'kafka-committer'). */
  readonly name: string;
  readonly batchMaxEvents?: number | undefined;
  readonly batchLingerMs?: number | undefined;
  /** Bound on events buffered per partition before it stops being read (default 4 × batchMaxEvents). */
  readonly maxBufferedPerPartition?: number | undefined;
  /** Bound on the encoded bytes buffered per partition (default 8 MiB). */
  readonly maxBufferedBytesPerPartition?: number | undefined;
  /** Source transactions with more events than this come in chunks (default batchMaxEvents). */
  readonly streamAbove?: number | undefined;
  readonly progressIntervalMs?: number | undefined;
  /** Back-off between failed iterations; default COMMITTER_DEFAULTS.retry. */
  readonly retry?: { readonly initialDelayMs: number; readonly maxDelayMs: number } | undefined;
  /** Aborting it drains: the batch in hand is committed, then the committer stops. */
  readonly signal?: AbortSignal | undefined;
  /** Default: the system clock. */
  readonly clock?: Clock | undefined;
}

/** What every committer counts; a sink's own counters are added to it. */
export interface CommitterStats {
  /** Events in committed batches, refused ones excluded. */
  readonly applied: number;
  readonly batches: number;
  readonly transactions: number;
  /** Refused by the sink, and undecodable messages. */
  readonly deadLettered: number;
  readonly replaysSkipped: number;
  readonly lateEvents: number;
  /** Failed loop iterations. */
  readonly retries: number;
  /** Rewinds to the sink's checkpoints after a failure of unknown outcome. */
  readonly recoveries: number;
}

/**
 * What the committer has done, for /metrics, read at scrape time (index = partition).
 * Counted per committed sink transaction; a batch retried counts once.
 */
export interface CommitterCounters {
  /** Events of committed batches: written, skipped by the version guard, or dead-lettered. */
  readonly eventsOut: number[];
  /** Dead letters sent, by reason code, per partition. */
  readonly deadLetters: Map<string, number[]>;
  /** Seconds from the source commit of a partition's last committed event to its sink commit. */
  readonly lagSeconds: (number | undefined)[];
  /** Failed batches (apply or read), by error code; `retried` those that were retriable. */
  readonly errors: Map<string, { failed: number; retried: number }>;
  /** When a batch last committed (ms epoch). */
  lastBatchAt: number | undefined;
}

/** Called once per committed sink transaction: its events and how long the apply that committed it took. */
export type BatchObserver = (events: number, seconds: number) => void;

interface PendingBatch {
  readonly merge: MergeBatch;
  attempts: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The counters of a sink type. */
type StatsOf<S extends Sink> = ReturnType<S['stats']>;

export class Committer<S extends Sink = Sink> {
  readonly sink: S;
  readonly #options: CommitterOptions;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #feed: MergedFeed;
  readonly #positions: PositionPublisher;
  readonly #run: CommitterRun<PendingBatch>;
  readonly #stats: Mutable<Omit<CommitterStats, 'replaysSkipped' | 'lateEvents'>> = {
    applied: 0,
    batches: 0,
    transactions: 0,
    deadLettered: 0,
    retries: 0,
    recoveries: 0,
  };
  readonly counters: CommitterCounters = { eventsOut: [], deadLetters: new Map(), lagSeconds: [], errors: new Map(), lastBatchAt: undefined };
  /** Events of chunks applied but held open by the sink (a streamed transaction), per partition: counted when it commits. */
  #uncommitted: number[] = [];
  #uncommittedEvents = 0;
  #lastOf: number[] = [];
  #observer: BatchObserver | undefined;
  #pending: PendingBatch | undefined;
  /** A failure left the feed ahead of the sink: rewind to the sink's checkpoints before reading on. */
  #needsRecovery = false;
  #progressMark: { at: number; applied: number };
  #closing: Promise<void> | undefined;

  private constructor(sink: S, feed: MergedFeed, options: CommitterOptions) {
    this.sink = sink;
    this.#options = options;
    this.#logger = options.logger;
    this.#clock = options.clock ?? systemClock;
    this.#feed = feed;
    this.#progressMark = { at: this.#clock.now(), applied: 0 };
    this.#positions = new PositionPublisher({
      store: options.checkpointStore,
      pipeline: options.pipeline,
      sink: sink.name,
      logger: options.logger,
      clock: this.#clock,
    });
    // A restarted committer re-announces what the sink holds: its old keys died with its lease.
    for (const start of feed.committedStarts()) this.#positions.mark({ ...start, lastKey: start.lastKey, watermark: start.watermark }, sink.epoch);
    this.#run = new CommitterRun<PendingBatch>({
      name: options.name,
      logger: options.logger,
      signal: options.signal,
      progressIntervalMs: options.progressIntervalMs,
      retry: options.retry,
      clock: this.#clock,
      logProgress: () => this.#logProgress(),
      onFailure: () => {
        this.#stats.retries += 1;
      },
    });
  }

  /**
   * Starts reading every partition from `starts` (the checkpoints the sink holds) into
   * `sink`, which it owns from here on: closed by close(), or now if the start fails.
   * Throws StreamGapError when a stored position is older than the stream holds.
   */
  static async create<S extends Sink>(sink: S, starts: readonly LaneStart[], options: CommitterOptions): Promise<Committer<S>> {
    const maxEvents = options.batchMaxEvents ?? COMMITTER_DEFAULTS.batchMaxEvents;
    let feed: MergedFeed;
    try {
      feed = await MergedFeed.create(
        {
          pipeline: options.pipeline,
          bus: options.bus,
          logger: options.logger,
          stage: 'committer',
          sink: sink.name,
          maxEvents,
          lingerMs: options.batchLingerMs ?? COMMITTER_DEFAULTS.batchLingerMs,
          maxBuffered: options.maxBufferedPerPartition ?? COMMITTER_DEFAULTS.bufferedBatchesPerPartition * maxEvents,
          maxBufferedBytes: options.maxBufferedBytesPerPartition ?? COMMITTER_DEFAULTS.maxBufferedBytesPerPartition,
          streamAbove: options.streamAbove ?? maxEvents,
          clock: options.clock,
        },
        starts,
      );
    } catch (error) {
      await sink.close().catch(() => undefined);
      throw error;
    }
    const committer = new Committer(sink, feed, options);
    options.logger.info(
      {
        sink: sink.name,
        epoch: sink.epoch,
        partitions: starts.length,
        resume: starts.map((start) => ({
          partition: start.partition,
          resume_seq: start.resumeSeq,
          last_key: start.lastKey === undefined ? null : formatOrderKey(start.lastKey),
        })),
      },
      `${options.name} started`,
    );
    committer.#start();
    return committer;
  }

  get state(): CommitterState {
    return this.#run.state;
  }

  get epoch(): number {
    return this.sink.epoch;
  }

  stats(): CommitterStats & StatsOf<S> {
    const feed = this.#feed.stats();
    return {
      ...(this.sink.stats() as StatsOf<S>),
      ...this.#stats,
      deadLettered: this.#stats.deadLettered + feed.deadLettered,
      replaysSkipped: feed.replaysSkipped,
      lateEvents: feed.lateEvents,
    };
  }

  /** For /readyz: running and not stuck retrying; the detail is a reason code (`retrying:SINK_SCHEMA_HELD`). */
  readiness(): { ok: boolean; detail?: string } {
    return this.#run.readiness();
  }

  /** Why the last batch failed, in full (table, column, event, LSN): for logs and tests, never /readyz. */
  get lastFailure(): string | undefined {
    return this.#run.lastFailure;
  }

  /** The code of the error the loop is retrying after, while it is. */
  get failingCode(): string | undefined {
    return this.#run.failingCode;
  }

  /** Fenced by a newer owner (stopped for good). */
  get fenced(): boolean {
    return this.#run.fatal !== undefined && this.sink.isFenced(this.#run.fatal);
  }

  /** The last batch to etcd failed and is retried. */
  get positionsFailing(): boolean {
    return this.#positions.failing;
  }

  /** The read side's counters (messages and events in, per partition). */
  get feedCounters(): FeedCounters {
    return this.#feed.counters;
  }

  /** Called for every committed sink transaction from now on (histograms); one observer. */
  observe(observer: BatchObserver): void {
    this.#observer = observer;
  }

  /** Resolves (never rejects) when the loop has ended, with the error that ended it (if any). */
  closed(): Promise<Error | undefined> {
    return this.#run.closed();
  }

  /** Drains (the batch in hand commits), publishes the last positions, closes the readers and the sink. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#run.close(`${this.#options.name} closed`);
      await this.#feed.close();
      await this.sink.close();
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
    this.#pending = undefined;
    this.#uncommitted = [];
    this.#uncommittedEvents = 0;
    const starts = await this.sink.recover();
    await this.#feed.rewind(starts);
    this.#needsRecovery = false;
    this.#logger.info(
      { resume: starts.map((start) => ({ partition: start.partition, resume_seq: start.resumeSeq })) },
      `recovered: resuming after the last ${this.sink.committedUnit}`,
    );
  }

  async #process(batch: PendingBatch): Promise<void> {
    const { merge } = batch;
    const attempt = batch.attempts;
    batch.attempts += 1;
    let applied;
    const started = this.#observer ? performance.now() : 0;
    try {
      applied = await this.sink.apply(merge, {
        attempt,
        committed: this.#feed.committedStarts(),
        deadLetter: (refusals) => this.#deadLetter(refusals),
      });
    } catch (error) {
      const retried = this.sink.afterFailure(error);
      if (retried === 'recover') this.#needsRecovery = true;
      this.#countError(error);
      throw error;
    }
    // Applied (committed, or held open by the sink): from here on the batch must never be applied again.
    this.#pending = undefined;
    this.#countApplied(merge);
    if (applied.committed === undefined) return;
    this.#countCommitted(merge, started);
    this.#feed.committed(applied.committed);
    for (const checkpoint of applied.committed) this.#positions.mark(checkpoint, this.sink.epoch);
    this.#stats.batches += 1;
    this.#stats.transactions += merge.transactions;
    this.#stats.applied += applied.applied;
  }

  /** Per batch, not per event label: one pass adding to plain arrays. */
  #countApplied(merge: MergeBatch): void {
    const events = merge.events;
    const uncommitted = this.#uncommitted;
    const lastOf: number[] = [];
    for (let i = 0; i < events.length; i++) {
      const p = (events[i] as MergedEvent).partition;
      uncommitted[p] = (uncommitted[p] ?? 0) + 1;
      lastOf[p] = i;
    }
    this.#lastOf = lastOf;
    this.#uncommittedEvents += events.length;
  }

  #countCommitted(merge: MergeBatch, started: number): void {
    const c = this.counters;
    const now = this.#clock.now();
    const uncommitted = this.#uncommitted;
    for (let p = 0; p < uncommitted.length; p++) {
      const n = uncommitted[p];
      if (n !== undefined) c.eventsOut[p] = (c.eventsOut[p] ?? 0) + n;
    }
    // Lag per partition: the last event of each partition in this batch (a few Date.parse per batch).
    const lastOf = this.#lastOf;
    for (let p = 0; p < lastOf.length; p++) {
      const index = lastOf[p];
      if (index === undefined) continue;
      const committedAt = Date.parse((merge.events[index] as MergedEvent).event.commitTs);
      if (Number.isFinite(committedAt)) c.lagSeconds[p] = Math.max(0, (now - committedAt) / 1000);
    }
    c.lastBatchAt = now;
    const events = this.#uncommittedEvents;
    this.#uncommitted = [];
    this.#uncommittedEvents = 0;
    this.#observer?.(events, (performance.now() - started) / 1000);
  }

  #countError(error: unknown): void {
    const code = error instanceof CdcError ? error.code : 'UNKNOWN';
    let entry = this.counters.errors.get(code);
    if (!entry) {
      entry = { failed: 0, retried: 0 };
      this.counters.errors.set(code, entry);
    }
    entry.failed += 1;
    if (!(error instanceof CdcError) || error.retriable) entry.retried += 1;
  }

  #countDeadLetter(code: string, partition: number): void {
    let perPartition = this.counters.deadLetters.get(code);
    if (!perPartition) {
      perPartition = [];
      this.counters.deadLetters.set(code, perPartition);
    }
    perPartition[partition] = (perPartition[partition] ?? 0) + 1;
  }

  async #deadLetter(refusals: readonly SinkRefusal[]): Promise<void> {
    for (const { event: merged, error } of refusals) {
      const { event } = merged;
      const column = typeof error.context.column === 'string' ? error.context.column : undefined;
      const sqlstate = typeof error.context.sqlstate === 'string' ? error.context.sqlstate : undefined;
      const letter = {
        stage: 'committer',
        sink: this.sink.name,
        reason: error.message,
        code: error.code,
        table: error.context.table ?? event.table,
        lsn: event.commitLsn,
        eventId: event.eventId,
        partition: merged.partition,
        subject: stageSubject(this.#options.pipeline, 'deduped', merged.partition),
        ...(column ? { column } : {}),
        ...(sqlstate ? { sqlstate } : {}),
        seq: merged.seq,
        traceId: event.traceId,
        payload: JSON.stringify(event),
        at: new Date(this.#clock.now()).toISOString(),
      };
      await this.#options.bus.deadLetter(this.#options.pipeline, letter);
      // Counted when sent (a letter is out whether or not its batch commits; a retry's repeat is absorbed by its id).
      this.#stats.deadLettered += 1;
      this.#countDeadLetter(letter.code, letter.partition);
      this.#logger.warn(
        {
          table: letter.table,
          column,
          code: letter.code,
          sqlstate,
          partition: letter.partition,
          lsn: letter.lsn,
          event_id: letter.eventId,
          trace_id: letter.traceId,
        },
        `event dead-lettered: ${letter.reason}`,
      );
    }
  }

  async #onStop(): Promise<void> {
    if (this.sink.isFenced(this.#run.fatal)) {
      // The new owner publishes from here on; our older positions must not overwrite its keys.
      this.#positions.discard();
      return;
    }
    await this.#positions.flush();
  }

  #logProgress(): void {
    const stats = this.stats();
    const now = this.#clock.now();
    const seconds = Math.max(0.001, (now - this.#progressMark.at) / 1000);
    const perSecond = (stats.applied - this.#progressMark.applied) / seconds;
    this.#progressMark = { at: now, applied: stats.applied };
    // Log fields are snake_case; the sink's own counters join them under their snake_case names.
    const own = Object.fromEntries(Object.entries(this.sink.stats()).map(([name, value]) => [name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), value as unknown]));
    this.#logger.info(
      {
        ...own,
        applied: stats.applied,
        batches: stats.batches,
        transactions: stats.transactions,
        events_per_s: Math.round(perSecond),
        dead_lettered: stats.deadLettered,
        replays_skipped: stats.replaysSkipped,
        late_events: stats.lateEvents,
        retries: stats.retries,
        recoveries: stats.recoveries,
        ...memoryFields(),
      },
      'progress',
    );
  }
}
