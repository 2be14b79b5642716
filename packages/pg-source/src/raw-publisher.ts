/**
 * The reader's side of the raw stream, for one replication session.
 *
 *  - Events go to `cdc.<pipeline>.raw.<partitionOf(table, key)>` (TRUNCATE: partition 0),
 *    many per JetStream message (@cdc/core wire.ts): each partition collects its events in
 *    a BatchCutter and a message is sent when it is full (count or bytes) and before every
 *    watermark or progress mark (`flush`) — nothing else cuts one. No latency is lost by
 *    holding a partial message until then: the reorderer releases an event only after a
 *    watermark or progress mark of its source that covers it, and a mark is published only
 *    after everything it covers was sent and acknowledged. Sending sooner moved the same
 *    events earlier into a buffer where they waited anyway, in several small messages that
 *    every hop paid for (issue 12: the latency workload, 10-row transactions at 5,000/s,
 *    cut each transaction into ~2–5-event messages; holding them for the mark cut the
 *    pipeline's CPU from ~245 to ~170 µs per change and lowered p99). Its
 *    Nats-Msg-Id derives from its first and last positions, so a replay cut the same way
 *    is absorbed by JetStream; cut differently, per-event identity downstream absorbs it.
 *  - At most `maxInFlight` messages wait for their PubAck. `publishEvent` resolves once the
 *    event is queued or SENT (not acknowledged): the caller keeps decoding, and blocks —
 *    pausing the replication socket — only when the window is full (back-pressure, not
 *    buffering). The window is ours, not AckedPublisher's, so every publish leaves in call order.
 *  - A watermark is published only after every earlier event was sent and acknowledged
 *    (flush), then to every partition (idle partitions advance too), then flushed again.
 *    So is a progress mark inside a large transaction (publishProgress).
 *  - The first failed publish fails this publisher for good and is reported once through
 *    `onFailure`: later messages may have been stored after the lost one, so the caller
 *    restarts the session from the slot and the replay (same event ids) fills the hole.
 *  - An event larger than `maxEventBytes` encoded is never sent (it could never be
 *    stored: NATS max_payload, PITFALLS 25); `publishEvent` returns an EventTooLargeError
 *    and the caller dead-letters it (`deadLetterTooLarge`) instead of failing the session.
 */
import { createHash } from 'node:crypto';
import type { AckedPublisher, Bus } from '@cdc/bus';
import {
  BatchCutter,
  Lsn,
  batchHeaders,
  batchMsgId,
  encodeChangeItem,
  partitionOf,
  stageSubject,
  type ChangeEvent,
  type DeadLetter,
  type PoisonEventError,
  type SourceHeartbeat,
  type SourceProgress,
} from '@cdc/core';
import { EventTooLargeError } from './errors.ts';

/**
 * Bytes of `max_payload` left for headers: ours (Nats-Msg-Id, the batch bounds) and those
 * the reorderer and the dedup gate add when they republish the event (Cdc-Resume-Seq,
 * Cdc-Last-Key: a few hundred bytes in all).
 */
export const HEADER_ROOM_BYTES = 4096;
/** An index line's fixed parts, a transaction's row (LSN, lamport, time, xid, trace id) and a ref, at most. */
const CONTEXT_ROOM_BYTES = 512;

export interface Watermark {
  readonly lamport: bigint;
  /** Commit end LSN of the newest transaction with this stamp. */
  readonly lsn: string;
}

export interface RawPublisherOptions {
  readonly bus: Bus;
  readonly pipeline: string;
  readonly source: string;
  readonly partitions: number;
  readonly maxInFlight: number;
  /** Largest encoded event (JSON bytes) published; larger ones are refused (EventTooLargeError). */
  readonly maxEventBytes: number;
  /** Events per message (default WIRE_DEFAULTS.batchMaxEvents). */
  readonly batchMaxEvents?: number | undefined;
  /** Encoded bytes per message (default WIRE_DEFAULTS.batchMaxBytes); a larger event travels alone. */
  readonly batchMaxBytes?: number | undefined;
  readonly onFailure: (error: Error) => void;
  /** Where acknowledged messages are counted (the reader's, kept across sessions). */
  readonly counters?: PublishCounters | undefined;
}

/** Per partition (index = partition): acknowledged raw messages and the change events in them; for /metrics. */
export interface PublishCounters {
  readonly messagesOut: number[];
  readonly eventsOut: number[];
  /** Lamport (µs, about the source commit time) of the last acknowledged event, and when its ack came (ms epoch). */
  lastLamportMicros: number | undefined;
  lastAckAt: number | undefined;
}

export class PublisherClosedError extends Error {
  constructor() {
    super('the raw publisher of an ended session was used');
    this.name = 'PublisherClosedError';
  }
}

export class RawPublisher {
  readonly #options: RawPublisherOptions;
  readonly #publisher: AckedPublisher;
  readonly #waiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  /** Per partition: the message being filled. */
  readonly #cutters = new Map<number, BatchCutter>();
  readonly #tableBytes = new WeakMap<object, number>();
  /** The transaction in hand: its stamp and commit LSN, parsed once. */
  #txn: { commitLsn: string; lamportText: string; lamport: bigint; lsn: Lsn } | undefined;
  #inFlight = 0;
  #failure: Error | undefined;
  #closed = false;

  constructor(options: RawPublisherOptions) {
    this.#options = options;
    // Headroom over our own window: AckedPublisher frees its slot a few microtasks after
    // the PubAck we count on, and the watermark adds one publish per partition.
    this.#publisher = options.bus.publisher({ maxInFlight: options.maxInFlight * 2 + options.partitions + 1 });
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  partitionOf(event: Pick<ChangeEvent, 'op' | 'table' | 'key'>): number {
    return event.op === 'truncate' ? 0 : partitionOf(event.table, event.key, this.#options.partitions);
  }

  subjectOf(event: Pick<ChangeEvent, 'op' | 'table' | 'key'>): string {
    return stageSubject(this.#options.pipeline, 'raw', this.partitionOf(event));
  }

  /**
   * Resolves when the event is queued in its partition's message (sent when that is full,
   * or before a mark: `flush`), or at once with an EventTooLargeError when it cannot fit in a bus
   * message: then nothing was queued.
   */
  async publishEvent(event: ChangeEvent): Promise<EventTooLargeError | undefined> {
    // Its own fields only: what it shares with its transaction and table goes into the
    // message's index line once (@cdc/core wire.ts). Alone in a message it is item + index.
    const data = encodeChangeItem(event);
    const alone = data.length + this.#contextBytes(event);
    if (alone > this.#options.maxEventBytes) return new EventTooLargeError(event, alone, this.#options.maxEventBytes);
    if (this.#failure) throw this.#failure;
    if (this.#closed) throw new PublisherClosedError();
    const partition = this.partitionOf(event);
    let cutter = this.#cutters.get(partition);
    if (!cutter) {
      cutter = new BatchCutter({ maxEvents: this.#options.batchMaxEvents, maxBytes: this.#options.batchMaxBytes });
      this.#cutters.set(partition, cutter);
    }
    if (cutter.wouldOverflow(data.length)) await this.#send(partition, cutter);
    // The events of a transaction share their stamp and commit LSN: parse them once per transaction.
    if (this.#txn?.commitLsn !== event.commitLsn || this.#txn.lamportText !== event.lamport) {
      this.#txn = { commitLsn: event.commitLsn, lamportText: event.lamport, lamport: BigInt(event.lamport), lsn: Lsn.parse(event.commitLsn) };
    }
    const key = { lamport: this.#txn.lamport, source: event.source, commitLsn: this.#txn.lsn, seq: event.seq };
    if (cutter.add(data, key, event)) await this.#send(partition, cutter);
    return undefined;
  }

  /**
   * Bytes of the index line of a message holding this event alone, at most: its table's row
   * (measured once per table shape: the decoder's columnTypes object is per relation) and
   * room for its transaction's row and its ref.
   */
  #contextBytes(event: ChangeEvent): number {
    let bytes = this.#tableBytes.get(event.columnTypes);
    if (bytes === undefined) {
      bytes = Buffer.byteLength(JSON.stringify([event.table, event.keyColumns, event.columnTypes]), 'utf8');
      this.#tableBytes.set(event.columnTypes, bytes);
    }
    return bytes + Buffer.byteLength(event.source, 'utf8') + Buffer.byteLength(event.database ?? '', 'utf8') + CONTEXT_ROOM_BYTES;
  }

  /** Every partition's message in hand goes now (before a mark, at the end). */
  async #cutAll(): Promise<void> {
    for (const [partition, cutter] of this.#cutters) if (cutter.count > 0) await this.#send(partition, cutter);
  }

  async #send(partition: number, cutter: BatchCutter): Promise<void> {
    await this.#acquire();
    const batch = cutter.take();
    if (!batch) {
      this.#release();
      return;
    }
    const ack = this.#publisher.publish(stageSubject(this.#options.pipeline, 'raw', partition), batch.data, {
      msgId: batchMsgId(`r:${partition}`, batch),
      headers: batchHeaders(batch),
    });
    const counters = this.#options.counters;
    void ack.then(
      () => {
        this.#release();
        if (counters) {
          counters.messagesOut[partition] = (counters.messagesOut[partition] ?? 0) + 1;
          counters.eventsOut[partition] = (counters.eventsOut[partition] ?? 0) + batch.count;
          counters.lastLamportMicros = Number(batch.lastKey.lamport);
          counters.lastAckAt = Date.now();
        }
      },
      (error: unknown) => {
        this.#release();
        this.#fail(error instanceof Error ? error : new Error(String(error)));
      },
    );
  }

  /** Every event queued so far is sent and acknowledged, then the watermark is stored in every partition. */
  async publishWatermark(watermark: Watermark): Promise<void> {
    await this.flush();
    const { source } = this.#options;
    const heartbeat: SourceHeartbeat = { kind: 'heartbeat', source, lamport: watermark.lamport.toString(), lsn: watermark.lsn };
    await this.#toEveryPartition(heartbeat, (partition) => `hb:${source}:${heartbeat.lamport}:${partition}`);
  }

  /**
   * Inside a large transaction: every event sent so far (all of this transaction up to
   * `seq`, and everything before it) is acknowledged, then that promise is stored in every
   * partition, so the reorderer may release them before the commit is read.
   */
  async publishProgress(at: { readonly lamport: string; readonly commitLsn: string; readonly seq: number }): Promise<void> {
    await this.flush();
    const { source } = this.#options;
    const progress: SourceProgress = { kind: 'progress', source, lamport: at.lamport, commitLsn: at.commitLsn, seq: at.seq };
    await this.#toEveryPartition(progress, (partition) => `pg:${source}:${at.commitLsn}:${at.seq}:${partition}`);
  }

  async #toEveryPartition(message: SourceHeartbeat | SourceProgress, msgIdOf: (partition: number) => string): Promise<void> {
    const { pipeline, partitions } = this.#options;
    const acks: Promise<unknown>[] = [];
    for (let partition = 0; partition < partitions; partition++) {
      acks.push(this.#publisher.publish(stageSubject(pipeline, 'raw', partition), message, { msgId: msgIdOf(partition) }));
    }
    const results = await Promise.allSettled(acks);
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) {
      const error = failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason));
      this.#fail(error);
      throw error;
    }
  }

  /** Resolves when every event queued so far is sent and acknowledged; throws the first failure. */
  async flush(): Promise<void> {
    if (this.#failure) throw this.#failure;
    await this.#cutAll();
    await this.#publisher.flush();
    if (this.#failure) throw this.#failure;
  }

  /** Poison events keep their reason and position; replays of the same letter share one id. */
  async deadLetter(error: PoisonEventError): Promise<void> {
    const context = error.context;
    const letter: DeadLetter = {
      stage: 'reader',
      reason: error.message,
      code: error.code,
      ...(typeof context.table === 'string' ? { table: context.table } : {}),
      ...(typeof context.lsn === 'string' ? { lsn: context.lsn } : {}),
      eventId: createHash('sha256').update(`${this.#options.source}:${error.message}`).digest('hex').slice(0, 32),
      payload: JSON.stringify({ source: this.#options.source, ...context }),
      at: new Date().toISOString(),
    };
    await this.#options.bus.deadLetter(this.#options.pipeline, letter);
  }

  /**
   * An event too large for the bus: its identity, position and column sizes go to the
   * dead-letter subject instead of its values, so the letter itself fits. Its id is the
   * event's (`dlq:reader:<eventId>`): a replay of the transaction after a restart is
   * absorbed by JetStream instead of repeating the letter.
   */
  async deadLetterTooLarge(error: EventTooLargeError, event: ChangeEvent): Promise<void> {
    const sizes = (row: ChangeEvent['before']): Record<string, number | null> | null =>
      row && Object.fromEntries(Object.entries(row).map(([column, value]) => [column, value === null ? null : Buffer.byteLength(value, 'utf8')]));
    const letter: DeadLetter & { commitLsn: string; seq: number; bytes: number; limit: number; maxPayload: number } = {
      stage: 'reader',
      reason: error.message,
      code: error.code,
      table: event.table,
      lsn: event.lsn,
      eventId: event.eventId,
      commitLsn: event.commitLsn,
      seq: event.seq,
      bytes: error.bytes,
      limit: error.limit,
      maxPayload: this.#options.bus.maxPayload,
      payload: JSON.stringify({
        source: event.source,
        ...(event.database !== undefined ? { database: event.database } : {}),
        table: event.table,
        op: event.op,
        keyColumns: event.keyColumns,
        key: event.key,
        lsn: event.lsn,
        commitLsn: event.commitLsn,
        seq: event.seq,
        xid: event.xid,
        commitTs: event.commitTs,
        lamport: event.lamport,
        eventId: event.eventId,
        traceId: event.traceId,
        bytes: error.bytes,
        limit: error.limit,
        // Bytes of each column's text value (null: SQL NULL); the values themselves are what does not fit.
        columnBytes: { before: sizes(event.before), after: sizes(event.after) },
        unchanged: event.unchanged,
      }),
      at: new Date().toISOString(),
    };
    await this.#options.bus.deadLetter(this.#options.pipeline, letter);
  }

  /** The session is over: waiters fail, acknowledgements still in flight are ignored. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(new PublisherClosedError());
    this.#publisher.close();
  }

  async #acquire(): Promise<void> {
    while (this.#inFlight >= this.#options.maxInFlight) {
      if (this.#failure) throw this.#failure;
      if (this.#closed) throw new PublisherClosedError();
      await new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    }
    if (this.#failure) throw this.#failure;
    if (this.#closed) throw new PublisherClosedError();
    this.#inFlight += 1;
  }

  #release(): void {
    this.#inFlight -= 1;
    this.#waiters.shift()?.resolve();
  }

  #fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    if (!this.#closed) this.#options.onFailure(error);
  }
}
