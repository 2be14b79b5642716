/**
 * What every committer reads: the deduped.<p> partitions of one pipeline, merged into
 * batches of whole source transactions (PartitionMerger), from the checkpoints its sink
 * stores. The sink side (PostgreSQL, Kafka) only applies a batch and its checkpoints in
 * one transaction of its own, then calls `committed`.
 *
 *   deduped.0 ─┐
 *   deduped.1 ─┼─► StreamReader × P ─► PartitionMerger ─► next() ─► MergeBatch
 *   deduped.P ─┘        ▲
 *                       └── rewind(): back to the last committed checkpoints
 *
 * Undecodable messages are dead-lettered here and count as consumed, so a partition
 * keeps moving. The feed owns its readers: close() closes them.
 */
import { StreamGapError, type BusMessage } from '@cdc/bus';
import { CdcError, Headers, WIRE_DEFAULTS, decodeOrderedMessage, itemText, poisonIdentity, stageSubject, streamName, systemClock, type Clock, type DeadLetter } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { COMMITTER_DEFAULTS } from './defaults.ts';
import { PartitionMerger, type LaneCheckpoint, type LaneStart, type MergeBatch, type TakeOptions } from './merge.ts';

/** One partition's reader, as the feed uses it (a @cdc/bus StreamReader). */
export interface FeedReader {
  /** Up to `max` messages, waiting at most `lingerMs` for the first. */
  nextBatch(max: number, lingerMs: number, signal?: AbortSignal): Promise<BusMessage[]>;
  /** Resolves once a message is ready to take (never rejects); without it the feed polls. */
  ready?(): Promise<void>;
  /** True once the reader's consumer has ended (it returns nothing from then on). */
  readonly isClosed?: boolean;
}

/** What the feed needs of the bus: a @cdc/bus Bus (a unit test passes a stand-in). */
export interface FeedBus {
  firstSequence(stream: string): Promise<number>;
  openReader(options: { stream: string; subject: string; startSeq: number; bufferMessages: number }): Promise<FeedReader>;
  closeReader(reader: FeedReader): Promise<void>;
  deadLetter(pipeline: string, letter: DeadLetter): Promise<unknown>;
}

export interface MergedFeedOptions {
  readonly pipeline: string;
  readonly bus: FeedBus;
  readonly logger: Logger;
  /** Name in dead letters and logs ('committer'). */
  readonly stage: string;
  /** The sink this feed is read for: named in its dead letters, so two sinks' letters never collide. */
  readonly sink: string;
  readonly maxEvents: number;
  readonly lingerMs: number;
  /** Bound on events buffered per partition before it stops being read. */
  readonly maxBuffered: number;
  /** Bound on the encoded bytes buffered per partition (wide rows reach it before maxBuffered). Default 8 MiB. */
  readonly maxBufferedBytes?: number | undefined;
  /**
   * Source transactions with more events than this come in chunks (MergeBatch
   * startsInside/endsInside) instead of whole, so memory stays flat. Default: whole.
   */
  readonly streamAbove?: number | undefined;
  /** Default: the system clock. */
  readonly clock?: Clock | undefined;
}

export interface FeedStats {
  readonly deadLettered: number;
  readonly replaysSkipped: number;
  readonly lateEvents: number;
}

/** Per partition (index = partition), for /metrics: read at scrape time, added to per message. */
export interface FeedCounters {
  /** Messages read from deduped.<p> (again after a rewind). */
  readonly messagesIn: number[];
  /** Change events in them (Cdc-Count). */
  readonly eventsIn: number[];
  /** Undecodable items dead-lettered (POISON_EVENT). */
  readonly poison: number[];
}

/** Sleep between polls while nothing arrives, for readers that cannot say when a message is ready. */
const POLL_IDLE_MS = 5;

/** The reason a finished wait's timer is aborted with (nobody reads it). */
const WAIT_OVER = 'wait over';

export class MergedFeed {
  readonly #options: MergedFeedOptions;
  readonly #stream: string;
  readonly #clock: Clock;
  readonly #readers = new Map<number, FeedReader>();
  /** Checkpoints the sink holds: where a rewind restarts. */
  readonly #committed = new Map<number, LaneStart>();
  readonly #stats = { deadLettered: 0, replaysSkipped: 0, lateEvents: 0 };
  readonly counters: FeedCounters = { messagesIn: [], eventsIn: [], poison: [] };
  #merger: PartitionMerger;

  private constructor(options: MergedFeedOptions, starts: readonly LaneStart[]) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#stream = streamName(options.pipeline, 'deduped');
    for (const start of starts) this.#committed.set(start.partition, start);
    this.#merger = new PartitionMerger(starts);
  }

  /**
   * Opens a reader per partition at its stored sequence. A stored position the stream no
   * longer holds means messages may be gone: StreamGapError, loudly, before reading.
   */
  static async create(options: MergedFeedOptions, starts: readonly LaneStart[]): Promise<MergedFeed> {
    const feed = new MergedFeed(options, starts);
    await feed.#assertNoGap(starts);
    try {
      await feed.#openReaders();
    } catch (error) {
      await feed.close();
      throw error;
    }
    return feed;
  }

  stats(): FeedStats {
    return { ...this.#stats };
  }

  /** The checkpoints the sink holds, as last told by `committed` (or the starts). */
  committedStarts(): LaneStart[] {
    return [...this.#committed.values()];
  }

  /**
   * The next batch (whole source transactions, up to `maxEvents`, or a chunk of one
   * larger than `streamAbove`), waiting at most the linger time for it to fill while
   * input keeps arriving; once a poll finds nothing new, what is releasable goes at once.
   * Undefined when nothing moved. A read failure rewinds to the committed checkpoints
   * and rethrows.
   */
  async next(signal: AbortSignal): Promise<MergeBatch | undefined> {
    try {
      await this.#fill(signal);
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'reading partitions failed; rewinding to the committed checkpoints');
      await this.rewind();
      throw error;
    }
    return this.#merger.take(this.#options.maxEvents, this.#takeOptions());
  }

  #takeOptions(): TakeOptions {
    return this.#options.streamAbove === undefined ? {} : { streamAbove: this.#options.streamAbove };
  }

  /** The sink committed these checkpoints: a later rewind starts from them. */
  committed(checkpoints: readonly LaneCheckpoint[]): void {
    for (const checkpoint of checkpoints) this.#committed.set(checkpoint.partition, { ...checkpoint });
  }

  /**
   * Forgets everything buffered and reads again from `starts` (default: the committed
   * checkpoints). A sink that re-read its own checkpoints after an uncertain failure
   * passes them here.
   */
  async rewind(starts?: readonly LaneStart[]): Promise<void> {
    if (starts !== undefined) {
      await this.#assertNoGap(starts);
      for (const start of starts) this.#committed.set(start.partition, start);
    }
    await this.#closeReaders();
    this.#merger = new PartitionMerger([...this.#committed.values()]);
    await this.#openReaders();
  }

  async close(): Promise<void> {
    await this.#closeReaders();
  }

  async #assertNoGap(starts: readonly LaneStart[]): Promise<void> {
    const firstSeq = await this.#options.bus.firstSequence(this.#stream);
    for (const start of starts) {
      if ((start.lastKey !== undefined || start.watermark !== undefined) && start.resumeSeq < firstSeq) {
        throw new StreamGapError(this.#stream, stageSubject(this.#options.pipeline, 'deduped', start.partition), start.resumeSeq, firstSeq);
      }
    }
  }

  async #openReaders(): Promise<void> {
    for (const start of this.#committed.values()) {
      const reader = await this.#options.bus.openReader({
        stream: this.#stream,
        subject: stageSubject(this.#options.pipeline, 'deduped', start.partition),
        startSeq: start.resumeSeq,
        // Messages carry up to WIRE_DEFAULTS.batchMaxEvents events each: read ahead about
        // maxBuffered events, not maxBuffered messages (up to 64 KiB each).
        bufferMessages: Math.max(16, Math.min(1_000, Math.ceil(this.#options.maxBuffered / WIRE_DEFAULTS.batchMaxEvents))),
      });
      this.#readers.set(start.partition, reader);
    }
  }

  async #closeReaders(): Promise<void> {
    for (const reader of this.#readers.values()) await this.#options.bus.closeReader(reader).catch(() => undefined);
    this.#readers.clear();
  }

  /**
   * Reads partitions until a full batch is releasable or the linger time is up. Polls
   * take only what the readers already buffered (a wait on one idle partition must not
   * hold up the others), with short sleeps while nothing arrives.
   */
  async #fill(signal: AbortSignal): Promise<void> {
    const deadline = this.#clock.now() + this.#options.lingerMs;
    for (;;) {
      const received = await this.#poll(signal);
      // The cheap count first; the plan (which may hold back an unfinished transaction) only then.
      if (this.#merger.releasableAtLeast(this.#options.maxEvents) && this.#merger.wouldRelease(this.#options.maxEvents, this.#takeOptions())) return;
      // The input is idle: what is releasable goes now. The linger only ever waits for
      // input that keeps arriving (issue 12: no stage waits out a linger on idle input).
      if (received === 0 && this.#merger.wouldRelease(this.#options.maxEvents, this.#takeOptions())) return;
      const left = deadline - this.#clock.now();
      if (left <= 0 || signal.aborted) return;
      if (received === 0) await this.#waitForInput(left, signal);
    }
  }

  /**
   * Nothing arrived: sleeps until a partition the merger wants more of has a message ready,
   * or `ms` is up (issue 12: polling every 5 ms cost the idle committer ~10 % of a core).
   */
  async #waitForInput(ms: number, signal: AbortSignal): Promise<void> {
    const { maxBuffered } = this.#options;
    const maxBytes = this.#options.maxBufferedBytes ?? COMMITTER_DEFAULTS.maxBufferedBytesPerPartition;
    const ready: Promise<void>[] = [];
    for (const [partition, reader] of this.#readers) {
      if (!this.#merger.wantsMore(partition, maxBuffered, maxBytes)) continue;
      if (!reader.ready) {
        await this.#clock.sleep(Math.min(POLL_IDLE_MS, ms), signal).catch(() => undefined);
        return;
      }
      ready.push(reader.ready());
    }
    if (ready.length === 0) return;
    const stop = new AbortController();
    // A reason given: abort() without one builds a DOMException each time (issue 12: it showed in the profile).
    const onAbort = (): void => stop.abort(WAIT_OVER);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await Promise.race([...ready, this.#clock.sleep(ms, stop.signal).catch(() => undefined)]);
    } finally {
      signal.removeEventListener('abort', onAbort);
      stop.abort(WAIT_OVER);
    }
  }

  async #poll(signal: AbortSignal): Promise<number> {
    const { maxBuffered } = this.#options;
    const maxBytes = this.#options.maxBufferedBytes ?? COMMITTER_DEFAULTS.maxBufferedBytesPerPartition;
    const wanted = [...this.#readers].filter(([partition]) => this.#merger.wantsMore(partition, maxBuffered, maxBytes));
    const polled = await Promise.all(
      wanted.map(async ([partition, reader]) => {
        // Room in events; a message carries up to WIRE_DEFAULTS.batchMaxEvents of them, so
        // read that many times fewer messages (reading `room` messages of 100 events each
        // once held 100,000 decoded events per partition: the 1M-row transaction's RSS).
        const room = Math.max(1, maxBuffered - this.#merger.buffered(partition));
        const messages = Math.min(1_000, Math.max(Math.min(room, 16), Math.ceil(room / WIRE_DEFAULTS.batchMaxEvents)));
        const batch = await reader.nextBatch(messages, 0, signal);
        // An ended consumer would leave its partition silent for good: rewind (reopens every reader).
        if (batch.length === 0 && reader.isClosed === true && !signal.aborted) {
          throw new CdcError(`the reader of ${stageSubject(this.#options.pipeline, 'deduped', partition)} ended`, { code: 'READER_CLOSED', retriable: true, context: { partition } });
        }
        return { partition, messages: batch };
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
    // A batch of changes wholly at or below what this partition already has is a replay:
    // skipped without parsing it (its Cdc-Last-Key is >= every key it carries, see
    // @cdc/core wire.ts). Only batches say Cdc-Count; a watermark is never skipped.
    const count = message.header(Headers.Count);
    const counters = this.counters;
    counters.messagesIn[partition] = (counters.messagesIn[partition] ?? 0) + 1;
    if (count !== undefined) counters.eventsIn[partition] = (counters.eventsIn[partition] ?? 0) + (Number(count) || 0);
    const lastKey = count === undefined ? undefined : message.header(Headers.LastKey);
    if (lastKey !== undefined && this.#merger.holdsThrough(partition, lastKey)) {
      this.#merger.push(partition, message.seq, undefined);
      this.#stats.replaysSkipped += Number(count) || 1;
      return;
    }
    const subject = stageSubject(this.#options.pipeline, 'deduped', partition);
    const items = decodeOrderedMessage(message.data);
    const bytesEach = Math.ceil(message.data.length / Math.max(1, items.length));
    let taken = false;
    for (const item of items) {
      if (item.kind === 'poison') {
        // Dead-lettered (alone: its neighbours go on) before it counts as consumed; if this
        // fails, the rewind reads it again.
        await this.#deadLetter({
          stage: this.#options.stage,
          sink: this.#options.sink,
          // The committer's letters keep one code for everything it cannot decode; the reason names the wire problem.
          reason: `undecodable message (${item.code}): ${item.reason}`,
          code: 'POISON_EVENT',
          partition,
          subject,
          payload: itemText(item.bytes),
          at: new Date(this.#clock.now()).toISOString(),
          ...poisonIdentity(item),
        });
        continue;
      }
      taken = true;
      const result = item.kind === 'change' ? this.#merger.push(partition, message.seq, item.value, bytesEach, item.key) : this.#merger.push(partition, message.seq, item.value, bytesEach);
      if (result === 'replay') this.#stats.replaysSkipped += 1;
      if (result === 'late' && item.kind === 'change') {
        this.#stats.lateEvents += 1;
        this.#options.logger.warn(
          { partition, lsn: item.value.commitLsn, event_id: item.value.eventId, trace_id: item.value.traceId },
          'event arrived after its watermark was released; applying it on its own',
        );
      }
    }
    if (!taken) this.#merger.push(partition, message.seq, undefined);
  }

  async #deadLetter(letter: DeadLetter): Promise<void> {
    await this.#options.bus.deadLetter(this.#options.pipeline, letter);
    this.#stats.deadLettered += 1;
    if (letter.partition !== undefined) this.counters.poison[letter.partition] = (this.counters.poison[letter.partition] ?? 0) + 1;
    this.#options.logger.warn(
      { code: letter.code, sink: letter.sink, partition: letter.partition, event_id: letter.eventId, table: letter.table },
      `message dead-lettered: ${letter.reason}`,
    );
  }
}
