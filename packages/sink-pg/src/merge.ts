/**
 * Merging P partition streams into one order for the sink (pure; no I/O, no clock).
 *
 * Each partition stream (deduped.<p>) is in order-key order, with PartitionHeartbeats
 * interleaved: a heartbeat with lamport W follows every event of that partition with
 * lamport <= W. So once every partition has shown a watermark, every event with
 * lamport <= minW = min over partitions of their newest watermark has been read — in
 * every partition. Releasing exactly those events, merged by `compareOrderKeys`, releases
 * a source transaction (one source, one commitLsn, one lamport) whole even when its rows
 * live in several partitions; batches are cut only between transactions, so a source
 * transaction always lands in ONE sink transaction.
 *
 * Per partition the merger tracks the checkpoint the sink stores with each batch:
 *   resumeSeq  first stream sequence not yet done (the oldest unreleased event, else the next unread)
 *   lastKey    order key of the last released event (anything at or below it on re-read is a replay)
 *   watermark  the newest heartbeat with nothing unreleased before it, and its `positions`
 *              (the per-source commit LSN complete in this partition: safe for slot feedback)
 *
 *   push(p, seq, msg) ──► lane p queue ──take(max)──► MergeBatch { events in order, checkpoints }
 */
import { compareOrderKeys, orderKeyOf, type ChangeEvent, type OrderKey, type OrderedMessage } from '@cdc/core';

export interface Watermark {
  readonly lamport: bigint;
  readonly positions: Readonly<Record<string, string>>;
}

export interface LaneStart {
  readonly partition: number;
  /** Sequence the partition's reader starts at. */
  readonly resumeSeq: number;
  readonly lastKey?: OrderKey | undefined;
  /** The last applied watermark; counts as seen, so a restart does not wait for a new heartbeat. */
  readonly watermark?: Watermark | undefined;
}

export interface MergedEvent {
  readonly partition: number;
  readonly seq: number;
  readonly key: OrderKey;
  readonly event: ChangeEvent;
}

export interface LaneCheckpoint {
  readonly partition: number;
  readonly resumeSeq: number;
  readonly lastKey: OrderKey | undefined;
  readonly watermark: Watermark | undefined;
}

export interface MergeBatch {
  /** Released events in the one total order. */
  readonly events: readonly MergedEvent[];
  /** The after-state of every partition this batch moves. */
  readonly checkpoints: readonly LaneCheckpoint[];
  /** Number of source transactions in `events`. */
  readonly transactions: number;
}

export type PushResult = 'queued' | 'replay' | 'late' | 'skipped';

type Item =
  | { readonly kind: 'event'; readonly seq: number; readonly key: OrderKey; readonly event: ChangeEvent }
  | { readonly kind: 'watermark'; readonly seq: number; readonly watermark: Watermark };

/** A FIFO with O(1) shift: the queues hold thousands of events. */
class Queue<T> {
  #items: T[] = [];
  #head = 0;

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  at(index: number): T | undefined {
    return this.#items[this.#head + index];
  }

  shift(): T | undefined {
    const item = this.#items[this.#head];
    if (item === undefined) return undefined;
    this.#head += 1;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

class Lane {
  readonly partition: number;
  readonly queue = new Queue<Item>();
  /** Next sequence to read (= last pushed + 1). */
  nextSeq: number;
  /** Order key of the last event accepted into the queue (or released before start). */
  lastQueuedKey: OrderKey | undefined;
  lastReleasedKey: OrderKey | undefined;
  /** Newest watermark read, whether or not events before it are released: bounds what may be released. */
  seen: bigint | undefined;
  applied: Watermark | undefined;

  constructor(start: LaneStart) {
    this.partition = start.partition;
    this.nextSeq = start.resumeSeq;
    this.lastQueuedKey = start.lastKey;
    this.lastReleasedKey = start.lastKey;
    this.applied = start.watermark;
    this.seen = start.watermark?.lamport;
  }

  /** Heartbeats with nothing unreleased before them are done: their positions are now true in the sink. */
  consumeLeadingWatermarks(): boolean {
    let moved = false;
    for (let head = this.queue.peek(); head?.kind === 'watermark'; head = this.queue.peek()) {
      this.queue.shift();
      if (this.applied === undefined || head.watermark.lamport >= this.applied.lamport) this.applied = head.watermark;
      moved = true;
    }
    return moved;
  }

  headEvent(): Extract<Item, { kind: 'event' }> | undefined {
    const head = this.queue.peek();
    return head?.kind === 'event' ? head : undefined;
  }

  checkpoint(): LaneCheckpoint {
    return {
      partition: this.partition,
      resumeSeq: this.queue.peek()?.seq ?? this.nextSeq,
      lastKey: this.lastReleasedKey,
      watermark: this.applied,
    };
  }
}

export function sameTransaction(a: OrderKey, b: OrderKey): boolean {
  return a.lamport === b.lamport && a.source === b.source && a.commitLsn === b.commitLsn;
}

export class PartitionMerger {
  readonly #lanes: Lane[];
  readonly #byPartition = new Map<number, Lane>();
  /** Highest minW released so far: an event at or below it arriving now is late. */
  #released: bigint | undefined;

  constructor(starts: readonly LaneStart[]) {
    if (starts.length === 0) throw new RangeError('a merger needs at least one partition');
    this.#lanes = starts.map((start) => new Lane(start));
    for (const lane of this.#lanes) this.#byPartition.set(lane.partition, lane);
  }

  #lane(partition: number): Lane {
    const lane = this.#byPartition.get(partition);
    if (!lane) throw new RangeError(`partition ${partition} is not merged here`);
    return lane;
  }

  /**
   * Adds one message read at `seq` from a partition. `undefined` marks a message that
   * was consumed without content (undecodable, dead-lettered by the caller).
   * Events at or below the last key of their partition are replays and are dropped.
   */
  push(partition: number, seq: number, message: OrderedMessage | undefined): PushResult {
    const lane = this.#lane(partition);
    if (seq >= lane.nextSeq) lane.nextSeq = seq + 1;
    if (message === undefined) return 'skipped';
    if (message.kind === 'watermark') {
      const watermark: Watermark = { lamport: BigInt(message.lamport), positions: message.positions };
      if (lane.seen === undefined || watermark.lamport > lane.seen) lane.seen = watermark.lamport;
      lane.queue.push({ kind: 'watermark', seq, watermark });
      return 'queued';
    }
    const key = orderKeyOf(message);
    if (lane.lastQueuedKey !== undefined && compareOrderKeys(key, lane.lastQueuedKey) <= 0) return 'replay';
    lane.lastQueuedKey = key;
    lane.queue.push({ kind: 'event', seq, key, event: message });
    return this.#released !== undefined && key.lamport <= this.#released ? 'late' : 'queued';
  }

  /** min over partitions of the newest watermark seen; undefined until every partition showed one. */
  minWatermark(): bigint | undefined {
    let min: bigint | undefined;
    for (const lane of this.#lanes) {
      if (lane.seen === undefined) return undefined;
      if (min === undefined || lane.seen < min) min = lane.seen;
    }
    return min;
  }

  /** Messages (events and watermarks) buffered in a partition, for back-pressure. */
  buffered(partition: number): number {
    return this.#lane(partition).queue.size;
  }

  /**
   * Whether reading more of a partition is useful: below the bound, or it holds back
   * the minimum watermark (stopping it could never free the others: no deadlock). A
   * partition that holds the minimum is read beyond the bound only until its next
   * watermark: memory grows past the bound only for one source transaction larger than it.
   */
  wantsMore(partition: number, maxBuffered: number): boolean {
    const lane = this.#lane(partition);
    if (lane.queue.size < maxBuffered) return true;
    const min = this.minWatermark();
    return lane.seen === undefined || min === undefined || lane.seen <= min;
  }

  /** True when at least `count` events could be released now. */
  releasableAtLeast(count: number): boolean {
    const min = this.minWatermark();
    if (min === undefined) return false;
    let found = 0;
    for (const lane of this.#lanes) {
      for (let i = 0; i < lane.queue.size; i++) {
        const item = lane.queue.at(i);
        if (item === undefined) break;
        if (item.kind !== 'event') continue;
        if (item.key.lamport > min) break;
        if (++found >= count) return true;
      }
    }
    return false;
  }

  /**
   * Releases up to `maxEvents` events (more if one source transaction is larger: it is
   * never split) in order-key order, and the checkpoints they move. Undefined when
   * nothing would change.
   */
  take(maxEvents: number): MergeBatch | undefined {
    const changed = new Set<Lane>();
    for (const lane of this.#lanes) if (lane.consumeLeadingWatermarks()) changed.add(lane);
    const min = this.minWatermark();
    const events: MergedEvent[] = [];
    let transactions = 0;
    if (min !== undefined) {
      for (;;) {
        let best: Lane | undefined;
        let bestItem: Extract<Item, { kind: 'event' }> | undefined;
        for (const lane of this.#lanes) {
          const head = lane.headEvent();
          if (head === undefined || head.key.lamport > min) continue;
          if (bestItem === undefined || compareOrderKeys(head.key, bestItem.key) < 0) {
            best = lane;
            bestItem = head;
          }
        }
        if (best === undefined || bestItem === undefined) break;
        const last = events.at(-1);
        const opensTransaction = last === undefined || !sameTransaction(last.key, bestItem.key);
        if (opensTransaction && events.length >= maxEvents) break;
        if (opensTransaction) transactions += 1;
        best.queue.shift();
        best.lastReleasedKey = bestItem.key;
        events.push({ partition: best.partition, seq: bestItem.seq, key: bestItem.key, event: bestItem.event });
        changed.add(best);
        best.consumeLeadingWatermarks();
      }
      if (events.length > 0 && (this.#released === undefined || min > this.#released)) this.#released = min;
    }
    if (events.length === 0 && changed.size === 0) return undefined;
    return { events, transactions, checkpoints: [...changed].map((lane) => lane.checkpoint()) };
  }

  /** Current checkpoint of every partition (what a batch taken now would start from). */
  checkpoints(): LaneCheckpoint[] {
    return this.#lanes.map((lane) => lane.checkpoint());
  }
}
