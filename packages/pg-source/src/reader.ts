/**
 * The reader of one source: slot → decoder → raw stream, watermarks, slot feedback.
 *
 *   created ──► running ──(session ended: error)──► reconnecting ──► running
 *      │           │                                       │
 *      │           └─────────── close() / signal ──► closing ──► closed
 *      └── (setup or first connect fails: Reader.create() rejects)
 *   running/reconnecting ──(non-retriable error, retries exhausted)──► failed
 *
 * Two states beyond the shared created/running/closing/closed: `reconnecting` (the
 * replication session ended and the next one is being opened from the slot; /readyz
 * is false meanwhile) and `failed` (closed with an error; `closed()` resolves with it).
 *
 * Invariants:
 *  - Events are published in slot order; each transaction's events carry one Lamport stamp.
 *  - A watermark {lamport W, lsn} is published to every partition only after every event
 *    with lamport <= W got its PubAck (RawPublisher.publishWatermark).
 *  - PostgreSQL is told an LSN only when the committer's checkpoints cover it in every
 *    partition, it is a commit end LSN we decoded, and {lsn, lamport} is already in the
 *    etcd ack ring — never ahead (PITFALLS 2, 3). Keepalives are answered with that LSN.
 *  - Any failure of a session (publish, decode, connection) ends it; the next session
 *    restarts from the slot's confirmed_flush_lsn with the clock restored for that LSN,
 *    so the replay carries the same ids and stamps.
 * Work on the session's messages and watermarks runs on one serial chain: a watermark is
 * never interleaved with the events of a transaction being published.
 */
import type { Bus } from '@cdc/bus';
import { DEFAULT_SINK, type CheckpointStore } from '@cdc/checkpoint';
import { LamportClock, Lsn, errorMessage, retry, systemClock, type Cancel, type Clock } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { AckTracker, committedByEverySink } from './ack.ts';
import type { SourceTable } from './catalog.ts';
import { withSource } from './connection.ts';
import { PgoutputDecoder, type Decoded } from './decoder.ts';
import { READER_DEFAULTS } from './defaults.ts';
import { SlotLostError } from './errors.ts';
import { WalHeartbeat } from './heartbeat.ts';
import { restoreLamport, slotAheadOfRing, type AckEntry } from './lamport-restore.ts';
import type { SourceMessage } from './pgoutput.ts';
import { HEADER_ROOM_BYTES, RawPublisher, type PublishCounters, type Watermark } from './raw-publisher.ts';
import { assertUsableSlot, readSlot, setupSource, type PreparedSource } from './setup.ts';
import { Snapshotter, type SnapshotJobProgress, type SnapshotMode } from './snapshot.ts';
import { ReplicationSession } from './stream.ts';
import { superviseSessions } from './supervisor.ts';

export type ReaderState = 'created' | 'running' | 'reconnecting' | 'closing' | 'closed' | 'failed';

export interface ReaderOptions {
  readonly pipeline: string;
  readonly source: string;
  readonly connectionString: string;
  /** `schema.table` names; used to prepare the source when `prepared` is not given. */
  readonly tables: readonly string[];
  readonly partitions: number;
  readonly slotName: string;
  readonly publicationName: string;
  readonly bus: Bus;
  readonly checkpoints: CheckpointStore;
  /** Sink names whose committers' checkpoints gate slot feedback (all of them). Default ['postgres']. */
  readonly sinks?: readonly string[];
  readonly logger: Logger;
  /** The result of setupSource(), when the caller ran it already. */
  readonly prepared?: PreparedSource;
  /** Messages (batches of events) waiting for their PubAck; when full, reading pauses. Default READER_DEFAULTS.maxInFlight. */
  readonly maxInFlight?: number;
  /**
   * Largest encoded change event (JSON bytes) published; a larger one is dead-lettered
   * (EVENT_TOO_LARGE) with its size and this limit, and the stream goes on. Default: the
   * NATS server's max_payload less HEADER_ROOM_BYTES (PITFALLS 25).
   */
  readonly maxEventBytes?: number;
  /** Events per raw message (default WIRE_DEFAULTS.batchMaxEvents, @cdc/core). */
  readonly batchMaxEvents?: number | undefined;
  /** Encoded bytes per raw message (default WIRE_DEFAULTS.batchMaxBytes); a larger event travels alone. */
  readonly batchMaxBytes?: number | undefined;
  /** WAL heartbeat interval while watched tables are idle. Default READER_DEFAULTS.heartbeatIntervalMs. */
  readonly heartbeatIntervalMs?: number;
  /**
   * Inside a transaction, a progress mark (SourceProgress) after every this many events,
   * so the reorderer releases a large transaction as it streams instead of holding it
   * whole until its commit. Default READER_DEFAULTS.progressEveryEvents.
   */
  readonly progressEveryEvents?: number;
  /** How often a newly committed transaction is turned into a watermark. Default READER_DEFAULTS.watermarkIntervalMs. */
  readonly watermarkIntervalMs?: number;
  /** How often etcd checkpoints are read for slot feedback. Default READER_DEFAULTS.ackIntervalMs. */
  readonly ackIntervalMs?: number;
  /**
   * Snapshots (snapshot.ts): `initial` reads every table's existing rows after the slot is
   * created, `initial_only` too and then the reader stops, `never` reads none (backfills
   * asked for through the signal table run in every mode). Default
   * `never` here; the reader app defaults to `initial`. Setup queues the initial jobs
   * (setupSource's `snapshot`).
   */
  readonly snapshot?: SnapshotMode;
  /** Rows per snapshot chunk. Default SNAPSHOT_DEFAULTS.chunkRows. */
  readonly snapshotChunkRows?: number;
  /** Tables snapshotted at the same time. Default SNAPSHOT_DEFAULTS.parallelism. */
  readonly snapshotParallelism?: number;
  /** Aborting it closes the reader (also while Reader.create() is still connecting). */
  readonly signal?: AbortSignal;
  /** Reconnect policy of the replication session. */
  readonly reconnect?: { readonly attempts: number; readonly initialDelayMs: number; readonly maxDelayMs: number };
  /** Time for the supervisor's back-off, the heartbeat and the feedback timers. Default systemClock. */
  readonly clock?: Clock;
}

/** What the reader has published (per partition, acknowledged) and when it last heard from the slot; for /metrics. */
export interface ReaderCounters extends PublishCounters {
  /** When the last transaction (data or WAL heartbeat) came through the slot (ms epoch). */
  lastTransactionAt: number | undefined;
  /** Dead letters sent, by reason code. */
  readonly deadLetters: Map<string, number>;
}

export interface ReaderStats {
  readonly state: ReaderState;
  /** Change events published (sent; acknowledged unless a session failed). */
  readonly captured: number;
  readonly transactions: number;
  readonly heartbeatTransactions: number;
  readonly watermarks: number;
  readonly deadLettered: number;
  /** Of those, changes too large for the bus (EVENT_TOO_LARGE). */
  readonly tooLarge: number;
  readonly restarts: number;
  readonly walHeartbeats: number;
  readonly inFlight: number;
  /** WAL position of the last message received. */
  readonly lastLsn: string | undefined;
  /** Commit end LSN of the last transaction decoded. */
  readonly committedLsn: string | undefined;
  /** The last watermark published to every partition. */
  readonly watermark: { readonly lamport: string; readonly lsn: string } | undefined;
  /** What PostgreSQL was last told (the slot's confirmed_flush_lsn). */
  readonly confirmedLsn: string;
  readonly lamport: string;
  /** Snapshot reads published. */
  readonly snapshotRows: number;
  /** The snapshot jobs this reader knows (running, pending, finished since it started). */
  readonly snapshots: readonly SnapshotJobProgress[];
}

const STATUS_INTERVAL_MS = 10_000;
const DEFAULT_RECONNECT = { attempts: 30, initialDelayMs: 200, maxDelayMs: 5_000 };

export class Reader {
  readonly #options: ReaderOptions;
  readonly #prepared: PreparedSource;
  readonly #log: Logger;
  readonly #abort = new AbortController();
  readonly #tracker: AckTracker;
  readonly #clock: Clock;
  /** For /metrics, read at scrape time; kept across sessions. */
  readonly counters: ReaderCounters = { messagesOut: [], eventsOut: [], lastLamportMicros: undefined, lastAckAt: undefined, lastTransactionAt: undefined, deadLetters: new Map() };
  readonly #closedPromise: Promise<Error | undefined>;
  #resolveClosed!: (error: Error | undefined) => void;

  #state: ReaderState = 'created';
  #generation = 0;
  #session: ReplicationSession | undefined;
  #snapshotter: Snapshotter | undefined;
  #decoder: PgoutputDecoder;
  #publisher: RawPublisher | undefined;
  #chain: Promise<void> = Promise.resolve();
  #heartbeat: WalHeartbeat | undefined;
  #timers: Cancel[] = [];
  #supervisor: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #draining = false;
  #failure: Error | undefined;

  #pendingWatermark: Watermark | undefined;
  #lastWatermark: Watermark | undefined;
  #watermarkQueued = false;
  /** The slot-feedback round in flight, if any. */
  #acking: Promise<void> | undefined;
  #ackWarned = false;
  #lastStatusAt = 0;

  #captured = 0;
  #snapshotRows = 0;
  /** Events of the open transaction since its last progress mark. */
  #sinceProgress = 0;
  #transactions = 0;
  #heartbeatTransactions = 0;
  #dataTransactions = 0;
  #watermarks = 0;
  #deadLettered = 0;
  #tooLarge = 0;
  #restarts = 0;
  #lastLsn: string | undefined;
  #committedLsn: string | undefined;

  private constructor(options: ReaderOptions, prepared: PreparedSource, confirmed: { lsn: Lsn; lamport: bigint }) {
    this.#options = options;
    this.#prepared = prepared;
    this.#log = options.logger.child({ component: 'reader', slot: options.slotName });
    this.#tracker = new AckTracker(confirmed);
    this.#clock = options.clock ?? systemClock;
    this.#decoder = this.#newDecoder(confirmed.lamport);
    this.#closedPromise = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    const signal = options.signal;
    if (signal) {
      const onAbort = (): void => void this.#close(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      void this.#closedPromise.then(() => signal.removeEventListener('abort', onAbort));
    }
  }

  /** Prepares the source (unless `prepared` is given), restores the clock and starts streaming. */
  static async create(options: ReaderOptions): Promise<Reader> {
    const prepared =
      options.prepared ??
      (await setupSource({
        connectionString: options.connectionString,
        tables: options.tables,
        publicationName: options.publicationName,
        slotName: options.slotName,
        logger: options.logger,
      }));
    const start = prepared.slot.confirmedFlushLsn ?? Lsn.ZERO;
    const ring = await options.checkpoints.readSourceAcks(options.pipeline, options.source);
    // Only this reader confirms the slot, and it records every LSN in the ring first:
    // a slot past the whole ring was recreated or consumed by someone else (PITFALLS 8).
    if (slotAheadOfRing(start, ring)) {
      throw new SlotLostError(
        options.slotName,
        `its confirmed_flush_lsn ${Lsn.format(start)} is past every position this reader ever confirmed (newest ${ring.at(-1)?.lsn}); ` +
          'the slot was recreated or used by another consumer. If this is a deliberate reset of the pipeline, delete the ' +
          `etcd key /cdc/${options.pipeline}/sources/${options.source}/acks`,
      );
    }
    const restored = restoreLamport(start, ring);
    const reader = new Reader(options, prepared, { lsn: start, lamport: restored.lamport });
    try {
      // Before the stream: its first changes must already know which tables are pending.
      // Also with `never`: a backfill can be asked for through the signal table at any time.
      reader.#snapshotter = await Snapshotter.create({
        connectionString: options.connectionString,
        slot: options.slotName,
        tables: prepared.tables,
        mode: options.snapshot ?? 'never',
        logger: reader.#log,
        ...(options.snapshotChunkRows === undefined ? {} : { chunkRows: options.snapshotChunkRows }),
        ...(options.snapshotParallelism === undefined ? {} : { parallelism: options.snapshotParallelism }),
        clock: reader.#clock,
      });
      await reader.#begin();
      reader.#snapshotter?.start();
    } catch (error) {
      await reader.close();
      throw error;
    }
    return reader;
  }

  get state(): ReaderState {
    return this.#state;
  }

  /** Resolves once no initial snapshot job is left (at once without snapshots). */
  initialSnapshotDone(): Promise<void> {
    return this.#snapshotter?.initialDone() ?? Promise.resolve();
  }

  /** Resolves when the reader stops: with the error that stopped it, or undefined after close(). */
  closed(): Promise<Error | undefined> {
    return this.#closedPromise;
  }

  stats(): ReaderStats {
    return {
      state: this.#state,
      captured: this.#captured,
      transactions: this.#transactions,
      heartbeatTransactions: this.#heartbeatTransactions,
      watermarks: this.#watermarks,
      deadLettered: this.#deadLettered,
      tooLarge: this.#tooLarge,
      restarts: this.#restarts,
      walHeartbeats: this.#heartbeat?.emitted ?? 0,
      inFlight: this.#publisher?.inFlight ?? 0,
      lastLsn: this.#lastLsn,
      committedLsn: this.#committedLsn,
      watermark: this.#lastWatermark && { lamport: this.#lastWatermark.lamport.toString(), lsn: this.#lastWatermark.lsn },
      confirmedLsn: Lsn.format(this.#tracker.confirmed.lsn),
      lamport: this.#decoder.clock.last.toString(),
      snapshotRows: this.#snapshotRows,
      snapshots: this.#snapshotter?.progress() ?? [],
    };
  }

  /** Stops reading, publishes what was read and its watermark, confirms what is committed, disconnects. Idempotent. */
  close(): Promise<void> {
    return this.#close(new Error('reader closing'));
  }

  #close(reason: unknown): Promise<void> {
    this.#closing ??= this.#drain(reason);
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- lifecycle ------------------------------------------------------------------------

  async #begin(): Promise<void> {
    const options = this.#options;
    const first = await this.#connect();
    this.#heartbeat = new WalHeartbeat({
      connectionString: options.connectionString,
      source: options.source,
      intervalMs: options.heartbeatIntervalMs ?? READER_DEFAULTS.heartbeatIntervalMs,
      logger: this.#log,
      activity: () => this.#dataTransactions,
      clock: this.#clock,
    });
    this.#timers.push(this.#clock.every(options.watermarkIntervalMs ?? READER_DEFAULTS.watermarkIntervalMs, () => this.#tickWatermark()));
    this.#timers.push(this.#clock.every(options.ackIntervalMs ?? READER_DEFAULTS.ackIntervalMs, () => void this.#ackOnce()));
    this.#supervisor = this.#supervise(first);
  }

  async #connect(): Promise<ReplicationSession> {
    const policy = this.#options.reconnect ?? DEFAULT_RECONNECT;
    return retry(() => this.#openSession(), {
      ...policy,
      signal: this.#abort.signal,
      clock: this.#clock,
      onRetry: ({ attempt, delayMs, error }) =>
        this.#log.warn({ attempt, delay_ms: delayMs, err: error }, `replication did not start: ${errorMessage(error)}; retrying`),
    });
  }

  async #openSession(): Promise<ReplicationSession> {
    const options = this.#options;
    const generation = ++this.#generation;
    this.#publisher?.close();
    this.#publisher = undefined;
    this.#watermarkQueued = false;
    this.#pendingWatermark = undefined;

    // The slot, not our memory, says where streaming resumes (an acknowledgement may not
    // have reached the server before the last session broke).
    const slot = await withSource(options.connectionString, 'cdc-reader', (client) => readSlot(client, options.slotName));
    if (!slot) throw new SlotLostError(options.slotName, 'it no longer exists (dropped while the reader was running?)');
    assertUsableSlot(slot, this.#prepared.database);
    if (slot.walStatus === 'unreserved') {
      this.#log.warn({ slot: options.slotName, wal_status: slot.walStatus }, 'the slot is about to lose WAL (max_slot_wal_keep_size): the committer must catch up');
    }
    const confirmed = slot.confirmedFlushLsn ?? Lsn.ZERO;
    const ring = await options.checkpoints.readSourceAcks(options.pipeline, options.source);
    // Lamport 0 marks the initial slot position of a new slot, not a stamp.
    const known: AckEntry[] = this.#tracker.known().filter((p) => p.lamport > 0n).map((p) => ({ lsn: Lsn.format(p.lsn), lamport: p.lamport.toString() }));
    const restored = restoreLamport(confirmed, [...ring, ...known]);
    this.#log.info(
      { lsn: Lsn.format(confirmed), lamport: restored.lamport.toString(), restore: restored.how, ...(restored.how === 'none' ? {} : { from_lsn: restored.lsn }) },
      restored.how === 'nearest-below'
        ? 'Lamport clock resumed from the nearest ack below the slot position (approximate)'
        : 'Lamport clock resumed at the slot position',
    );
    this.#tracker.resetConfirmed({ lsn: confirmed, lamport: restored.lamport });
    this.#decoder = this.#newDecoder(restored.lamport);
    this.#publisher = new RawPublisher({
      bus: options.bus,
      pipeline: options.pipeline,
      source: options.source,
      partitions: options.partitions,
      maxInFlight: options.maxInFlight ?? READER_DEFAULTS.maxInFlight,
      maxEventBytes: options.maxEventBytes ?? options.bus.maxPayload - HEADER_ROOM_BYTES,
      batchMaxEvents: options.batchMaxEvents,
      batchMaxBytes: options.batchMaxBytes,
      onFailure: (error) => this.#sessionFailed(generation, error),
      counters: this.counters,
    });

    const session = await ReplicationSession.create({
      connectionString: options.connectionString,
      slotName: options.slotName,
      publicationName: options.publicationName,
      logger: this.#log,
      clock: this.#clock,
      handlers: {
        onData: (lsn, message) => this.#onData(generation, lsn, message),
        onKeepalive: (_lsn, shouldRespond) => {
          if (shouldRespond && generation === this.#generation) void this.#sendStatus();
        },
      },
    });
    if (this.#abort.signal.aborted) {
      await session.close();
      throw this.#abort.signal.reason;
    }
    this.#session = session;
    this.#state = 'running';
    this.#log.info({ lsn: Lsn.format(confirmed), publication: options.publicationName }, 'streaming');
    return session;
  }

  /** Restarts ended sessions (supervisor.ts: growing, bounded back-off for sessions that die young). */
  async #supervise(first: ReplicationSession): Promise<void> {
    const failure = await superviseSessions({
      first,
      reconnect: () => this.#connect(),
      closing: () => this.#closing !== undefined,
      clock: this.#clock,
      signal: this.#abort.signal,
      onEnded: () => {
        this.#restarts += 1;
        this.#state = 'reconnecting';
      },
      onRestart: ({ error, delayMs }) =>
        this.#log.warn(
          { err: error, restarts: this.#restarts, delay_ms: delayMs },
          `replication session ended (${errorMessage(error)}); resuming from the slot`,
        ),
    });
    if (failure) this.#fatal(failure);
  }

  #fatal(error: Error): void {
    this.#failure = error;
    this.#state = 'failed';
    this.#log.error({ err: error }, `reader stopped: ${errorMessage(error)}`);
    void this.close();
  }

  async #drain(reason: unknown): Promise<void> {
    const failed = this.#state === 'failed';
    if (!failed) this.#state = 'closing';
    // Messages still queued behind the one in hand are dropped: the slot resends them.
    this.#draining = true;
    this.#abort.abort(reason);
    for (const timer of this.#timers) timer.cancel();
    this.#timers = [];
    await this.#heartbeat?.close();
    await this.#chain;
    if (!failed && this.#publisher) {
      try {
        await this.#publishWatermark();
      } catch (error) {
        this.#log.warn({ err: error }, 'final watermark not published; the next start replays from the slot');
      }
      await this.#acking;
      await this.#ackOnce();
    }
    this.#publisher?.close();
    await this.#session?.close();
    await this.#supervisor;
    await this.#snapshotter?.close();
    if (!failed) this.#state = 'closed';
    this.#log.info({ ...this.stats() }, failed ? 'reader failed' : 'reader stopped');
    this.#resolveClosed(this.#failure);
  }

  // --- the serial chain -----------------------------------------------------------------

  #enqueue(generation: number, work: () => Promise<void>): Promise<void> {
    const next: Promise<void> = this.#chain.then(async () => {
      if (generation !== this.#generation || this.#draining) return;
      try {
        await work();
      } catch (error) {
        this.#sessionFailed(generation, error);
      }
    });
    this.#chain = next;
    return next;
  }

  #onData(generation: number, lsn: string, message: SourceMessage): Promise<void> {
    return this.#enqueue(generation, async () => {
      this.#lastLsn = lsn;
      for (const item of this.#decoder.decode(message, lsn)) await this.#handle(item);
    });
  }

  async #handle(item: Decoded): Promise<void> {
    const publisher = this.#publisher;
    if (!publisher) throw new Error('no publisher for the current session');
    switch (item.type) {
      case 'change': {
        const { event } = item;
        if (event.op !== 'read') this.#snapshotter?.observe(event);
        const tooLarge = await publisher.publishEvent(event);
        if (tooLarge) {
          // Never published: the rest of the transaction and the slot go on (PITFALLS 25).
          this.#log.warn(
            { err: tooLarge, lsn: event.lsn, commit_lsn: event.commitLsn, seq: event.seq, event_id: event.eventId, trace_id: event.traceId, table: event.table, bytes: tooLarge.bytes, limit: tooLarge.limit },
            'change too large for the bus: dead-lettered',
          );
          await publisher.deadLetterTooLarge(tooLarge, event);
          this.#deadLettered += 1;
          this.#countDeadLetter(tooLarge.code);
          this.#tooLarge += 1;
          return;
        }
        this.#captured += 1;
        if (event.op === 'read') this.#snapshotRows += 1;
        if (this.#log.isLevelEnabled('trace')) {
          this.#log.trace({ event_id: event.eventId, trace_id: event.traceId, lsn: event.lsn, table: event.table, op: event.op }, 'published');
        }
        if (++this.#sinceProgress >= (this.#options.progressEveryEvents ?? READER_DEFAULTS.progressEveryEvents)) {
          this.#sinceProgress = 0;
          await publisher.publishProgress(event);
        }
        return;
      }
      case 'commit': {
        this.#tracker.committed(Lsn.parse(item.commitEndLsn), item.lamport);
        this.#pendingWatermark = { lamport: item.lamport, lsn: item.commitEndLsn };
        // After the watermark is pending: a close() for initial_only publishes it in its drain.
        this.#snapshotter?.committed();
        this.#committedLsn = item.commitEndLsn;
        this.#transactions += 1;
        this.counters.lastTransactionAt = this.#clock.now();
        if (item.heartbeat) this.#heartbeatTransactions += 1;
        else this.#dataTransactions += 1;
        return;
      }
      case 'poison': {
        const { error } = item;
        this.#log.warn({ err: error, lsn: error.context.lsn, table: error.context.table }, 'poison change: dead-lettered');
        await publisher.deadLetter(error);
        this.#deadLettered += 1;
        this.#countDeadLetter(error.code);
        return;
      }
      case 'begin':
        this.#sinceProgress = 0;
        return;
      case 'snapshot': {
        const snapshotter = this.#snapshotter;
        if (!snapshotter) return;
        const chunk = await snapshotter.onMark(item.content, item.lsn);
        if (!chunk) return;
        // The chunk's rows are events of this (the high watermark's) transaction, each at
        // its place in the chunk.
        const first = this.#decoder.reserveSeqs(chunk.places, item.lsn);
        for (const read of chunk.reads) {
          await this.#handle({ type: 'change', event: this.#decoder.readEvent({ ...read, lsn: item.lsn, seq: first + read.index }) });
        }
        snapshotter.emitted(chunk.mark);
        return;
      }
    }
  }

  #countDeadLetter(code: string): void {
    this.counters.deadLetters.set(code, (this.counters.deadLetters.get(code) ?? 0) + 1);
  }

  #sessionFailed(generation: number, error: unknown): void {
    if (generation !== this.#generation) return;
    // Everything still queued for this session is dropped: the slot resends it.
    this.#generation += 1;
    const failure = error instanceof Error ? error : new Error(String(error));
    this.#log.warn({ err: failure }, `session failed: ${errorMessage(failure)}`);
    void this.#session?.fail(failure);
  }

  // --- watermarks -----------------------------------------------------------------------

  #tickWatermark(): void {
    const pending = this.#pendingWatermark;
    if (!pending || this.#watermarkQueued) return;
    if (this.#lastWatermark && pending.lamport <= this.#lastWatermark.lamport) return;
    this.#watermarkQueued = true;
    void this.#enqueue(this.#generation, async () => {
      this.#watermarkQueued = false;
      await this.#publishWatermark();
    });
  }

  /** Runs on the chain: everything committed so far is acknowledged, then announced to every partition. */
  async #publishWatermark(): Promise<void> {
    const watermark = this.#pendingWatermark;
    const publisher = this.#publisher;
    if (!watermark || !publisher) return;
    // After a reconnect the replay re-reaches stamps already announced: never announce backwards.
    if (this.#lastWatermark && watermark.lamport <= this.#lastWatermark.lamport) return;
    await publisher.publishWatermark(watermark);
    this.#lastWatermark = watermark;
    this.#watermarks += 1;
    this.#log.debug({ lamport: watermark.lamport.toString(), lsn: watermark.lsn }, 'watermark published');
  }

  // --- slot feedback --------------------------------------------------------------------

  /** One slot-feedback round; a call while one runs joins it. */
  #ackOnce(): Promise<void> {
    this.#acking ??= this.#ackRound().finally(() => {
      this.#acking = undefined;
    });
    return this.#acking;
  }

  /** Confirms to PostgreSQL what the committer has committed in every partition. */
  async #ackRound(): Promise<void> {
    const options = this.#options;
    try {
      const session = this.#session;
      if (!session?.streaming) return;
      const sinks = await Promise.all((options.sinks ?? [DEFAULT_SINK]).map((sink) => options.checkpoints.readPartitions(options.pipeline, sink)));
      const committed = committedByEverySink(sinks, options.source, options.partitions);
      const target = committed === undefined ? undefined : this.#tracker.confirmable(committed);
      if (target) {
        // The ring first: a restart must find the stamp for whatever the slot says.
        await options.checkpoints.recordSourceAck(options.pipeline, options.source, {
          lsn: Lsn.format(target.lsn),
          lamport: target.lamport.toString(),
        });
        if (session !== this.#session || !(await session.confirm(target.lsn))) return;
        this.#tracker.confirm(target);
        this.#lastStatusAt = this.#clock.now();
        this.#log.debug({ lsn: Lsn.format(target.lsn), lamport: target.lamport.toString() }, 'confirmed to PostgreSQL');
      } else if (this.#clock.now() - this.#lastStatusAt > STATUS_INTERVAL_MS) {
        await this.#sendStatus();
      }
      this.#ackWarned = false;
    } catch (error) {
      if (!this.#ackWarned) this.#log.warn({ err: error }, 'slot feedback failed; retrying');
      this.#ackWarned = true;
    }
  }

  /** Standby status with what is already confirmed: keeps the walsender alive, moves nothing. */
  async #sendStatus(): Promise<void> {
    const session = this.#session;
    if (!session?.streaming) return;
    this.#lastStatusAt = this.#clock.now();
    await session.confirm(this.#tracker.confirmed.lsn).catch(() => false);
  }

  #newDecoder(lamport: bigint): PgoutputDecoder {
    return new PgoutputDecoder({
      source: this.#options.source,
      database: this.#prepared.database,
      tables: this.#prepared.tables.map((table: SourceTable) => ({ table: table.table, keyColumns: table.keyColumns })),
      clock: new LamportClock(lamport),
      snapshotPending: (table) => this.#snapshotter?.pending(table) ?? false,
    });
  }
}
