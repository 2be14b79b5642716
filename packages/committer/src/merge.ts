/**
 * Merging P partition streams into one order for the sink (pure; no I/O, no clock).
 *
 * Each partition stream (deduped.<p>) is in order-key order, with PartitionHeartbeats
 * interleaved: a heartbeat with lamport W follows every event of that partition with
 * lamport <= W. So a partition has a *bound*: nothing at or below it can still arrive —
 * its newest watermark (every key of lamport <= W) or the last key it delivered (the
 * stream is in order), whichever is higher. An event at or below the minimum bound over
 * all partitions has every smaller event already read, in every partition: releasing
 * those, merged by `compareOrderKeys`, is the one total order.
 *
 * Batches are cut between source transactions (one source, one commitLsn, one lamport),
 * so a transaction whose rows live in several partitions is released whole — unless it
 * is larger than `streamAbove` events. Such a transaction is released in chunks as its
 * rows arrive (`endsInside` / `startsInside`), so no process holds it whole: the
 * PostgreSQL sink keeps one sink transaction open across the chunks, the Kafka sink
 * commits them as consecutive Kafka transactions. A lane's bound moves with every event
 * it delivers, so a chunk can go out long before the transaction's end is read.
 *
 * Per partition the merger tracks the checkpoint the sink stores with each batch:
 *   resumeSeq  first stream sequence not yet done (the oldest unreleased event, else the next unread)
 *   lastKey    order key of the last released event (anything at or below it on re-read is a replay)
 *   watermark  the newest heartbeat with nothing unreleased before it, and its `positions`
 *              (the per-source commit LSN complete in this partition: safe for slot feedback)
 *
 *   push(p, seq, msg) ──► lane p queue ──take(max)──► MergeBatch { events in order, checkpoints }
 */
import { IllegalStateError, compareOrderKeys, orderKeyOf, parseOrderKey, type ChangeEvent, type OrderKey, type OrderedMessage } from '@cdc/core';

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
  /** Number of source transactions that end in this batch. */
  readonly transactions: number;
  /**
   * The first transaction began in an earlier batch (a chunk of a large one). A batch
   * without events (only watermarks moved) has both flags set while the transaction
   * released last may still go on: it neither ends nor starts one.
   */
  readonly startsInside: boolean;
  /** The last transaction may go on in a later batch. */
  readonly endsInside: boolean;
}

export interface TakeOptions {
  /**
   * A transaction with more events than this is released in chunks of `maxEvents`
   * instead of whole (see the top of this file). Default: never (whole transactions only).
   */
  readonly streamAbove?: number;
}

export type PushResult = 'queued' | 'replay' | 'late' | 'skipped';

/**
 * Nothing at or below this can still arrive in a partition: `key` set → every order key
 * <= key; `key` unset → every key whose lamport is <= `lamport` (a watermark).
 */
interface Bound {
  readonly lamport: bigint;
  readonly key?: OrderKey;
}

function covers(bound: Bound, key: OrderKey): boolean {
  return bound.key === undefined ? key.lamport <= bound.lamport : compareOrderKeys(key, bound.key) <= 0;
}

/** Negative when `a` promises less than `b`; undefined (nothing known) is the lowest. */
function compareBounds(a: Bound | undefined, b: Bound | undefined): number {
  if (a === undefined || b === undefined) return a === b ? 0 : a === undefined ? -1 : 1;
  if (a.key !== undefined && b.key !== undefined) return compareOrderKeys(a.key, b.key);
  if (a.key === undefined && b.key === undefined) return a.lamport < b.lamport ? -1 : a.lamport > b.lamport ? 1 : 0;
  // A watermark W against a key k: W promises more exactly when it covers k.
  if (a.key === undefined) return covers(a, b.key as OrderKey) ? 1 : -1;
  return covers(b, a.key) ? -1 : 1;
}

/** A key above every event of `key`'s transaction and below every later one. */
function transactionEnd(key: OrderKey): OrderKey {
  return { ...key, seq: Number.POSITIVE_INFINITY };
}

type Item =
  | { readonly kind: 'event'; readonly seq: number; readonly key: OrderKey; readonly event: ChangeEvent; readonly bytes: number }
  | { readonly kind: 'watermark'; readonly seq: number; readonly watermark: Watermark; readonly bytes: number };

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
  /** Encoded size of what `queue` holds, as the caller reported it at push. */
  queuedBytes = 0;
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
      this.shift();
      if (this.applied === undefined || head.watermark.lamport >= this.applied.lamport) this.applied = head.watermark;
      moved = true;
    }
    return moved;
  }

  shift(): void {
    const item = this.queue.shift();
    if (item !== undefined) this.queuedBytes -= item.bytes;
  }

  headEvent(): Extract<Item, { kind: 'event' }> | undefined {
    const head = this.queue.peek();
    return head?.kind === 'event' ? head : undefined;
  }

  bound(): Bound | undefined {
    const byKey = this.lastQueuedKey === undefined ? undefined : { lamport: this.lastQueuedKey.lamport, key: this.lastQueuedKey };
    const bySeen = this.seen === undefined ? undefined : { lamport: this.seen };
    return compareBounds(byKey, bySeen) >= 0 ? byKey : bySeen;
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

interface Pick {
  readonly lane: Lane;
  readonly item: Extract<Item, { kind: 'event' }>;
}

interface Plan {
  readonly picks: readonly Pick[];
  readonly startsInside: boolean;
  readonly endsInside: boolean;
}

export class PartitionMerger {
  readonly #lanes: Lane[];
  readonly #byPartition = new Map<number, Lane>();
  /** Highest minW released so far: an event at or below it arriving now is late. */
  #released: bigint | undefined;
  /** The newest key released (or stored before start): its transaction may still go on. */
  #lastReleased: OrderKey | undefined;

  constructor(starts: readonly LaneStart[]) {
    if (starts.length === 0) throw new RangeError('a merger needs at least one partition');
    this.#lanes = starts.map((start) => new Lane(start));
    for (const lane of this.#lanes) this.#byPartition.set(lane.partition, lane);
    for (const { lastKey } of starts) {
      if (lastKey !== undefined && (this.#lastReleased === undefined || compareOrderKeys(lastKey, this.#lastReleased) > 0)) this.#lastReleased = lastKey;
    }
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
   * `bytes` (its encoded size) counts toward the partition's byte bound (wantsMore).
   */
  push(partition: number, seq: number, message: OrderedMessage | undefined, bytes = 0, parsedKey?: OrderKey): PushResult {
    const lane = this.#lane(partition);
    if (seq >= lane.nextSeq) lane.nextSeq = seq + 1;
    if (message === undefined) return 'skipped';
    if (message.kind === 'watermark') {
      const watermark: Watermark = { lamport: BigInt(message.lamport), positions: message.positions };
      if (lane.seen === undefined || watermark.lamport > lane.seen) lane.seen = watermark.lamport;
      lane.queue.push({ kind: 'watermark', seq, watermark, bytes });
      lane.queuedBytes += bytes;
      return 'queued';
    }
    const key = parsedKey ?? orderKeyOf(message);
    if (lane.lastQueuedKey !== undefined && compareOrderKeys(key, lane.lastQueuedKey) <= 0) return 'replay';
    lane.lastQueuedKey = key;
    lane.queue.push({ kind: 'event', seq, key, event: message, bytes });
    lane.queuedBytes += bytes;
    return this.#released !== undefined && key.lamport <= this.#released ? 'late' : 'queued';
  }

  /**
   * Whether the partition already holds (queued or released) every order key up to
   * `keyText` (formatOrderKey text): a message bounded by it would be all replays. An
   * unparseable key says nothing (false: the message is read item by item).
   */
  holdsThrough(partition: number, keyText: string): boolean {
    const have = this.#lane(partition).lastQueuedKey;
    if (have === undefined) return false;
    let key: OrderKey;
    try {
      key = parseOrderKey(keyText);
    } catch {
      return false;
    }
    return compareOrderKeys(key, have) <= 0;
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

  /** The lowest partition bound: every event at or below it may be released. */
  #minBound(): Bound | undefined {
    let min: Bound | undefined;
    for (const [index, lane] of this.#lanes.entries()) {
      const bound = lane.bound();
      if (bound === undefined) return undefined;
      if (index === 0 || compareBounds(bound, min) < 0) min = bound;
    }
    return min;
  }

  /** Messages (events and watermarks) buffered in a partition, for back-pressure. */
  buffered(partition: number): number {
    return this.#lane(partition).queue.size;
  }

  /** Encoded bytes buffered in a partition, as reported to push. */
  bufferedBytes(partition: number): number {
    return this.#lane(partition).queuedBytes;
  }

  /**
   * Whether reading more of a partition is useful: below both bounds (messages and
   * bytes), or it holds back the minimum bound (stopping it could never free the others:
   * no deadlock). Memory grows past the bounds only in the partition that holds
   * everything back, and only until it has caught up with the next lowest.
   */
  wantsMore(partition: number, maxBuffered: number, maxBytes = Number.POSITIVE_INFINITY): boolean {
    const lane = this.#lane(partition);
    if (lane.queue.size < maxBuffered && lane.queuedBytes < maxBytes) return true;
    return compareBounds(lane.bound(), this.#minBound()) <= 0;
  }

  /** True when at least `count` events are at or below the minimum bound. */
  releasableAtLeast(count: number): boolean {
    const bound = this.#minBound();
    if (bound === undefined) return false;
    let found = 0;
    for (const lane of this.#lanes) {
      for (let i = 0; i < lane.queue.size; i++) {
        const item = lane.queue.at(i);
        if (item === undefined) break;
        if (item.kind !== 'event') continue;
        if (!covers(bound, item.key)) break;
        if (++found >= count) return true;
      }
    }
    return false;
  }

  /** True when `take` with the same arguments would release at least one event. */
  wouldRelease(maxEvents: number, options: TakeOptions = {}): boolean {
    const bound = this.#minBound();
    return bound !== undefined && this.#plan(bound, maxEvents, options).picks.length > 0;
  }

  /**
   * Releases up to `maxEvents` events in order-key order, and the checkpoints they move.
   * A transaction is never split unless it has more than `streamAbove` events (then it
   * goes out in chunks of `maxEvents`; the first chunk holds `streamAbove`). Undefined
   * when nothing would change.
   */
  take(maxEvents: number, options: TakeOptions = {}): MergeBatch | undefined {
    const changed = new Set<Lane>();
    for (const lane of this.#lanes) if (lane.consumeLeadingWatermarks()) changed.add(lane);
    const bound = this.#minBound();
    const plan: Plan = bound === undefined ? { picks: [], startsInside: false, endsInside: false } : this.#plan(bound, maxEvents, options);
    const events: MergedEvent[] = [];
    let transactions = 0;
    for (const { lane, item } of plan.picks) {
      // The plan walked the queues as they are: each pick is its lane's head event now.
      if (lane.headEvent() !== item) throw new IllegalStateError('partition-merger', 'planned', 'release an event that is not its partition head');
      const last = events.at(-1);
      if (last !== undefined && !sameTransaction(last.key, item.key)) transactions += 1;
      lane.shift();
      lane.lastReleasedKey = item.key;
      events.push({ partition: lane.partition, seq: item.seq, key: item.key, event: item.event });
      changed.add(lane);
      lane.consumeLeadingWatermarks();
    }
    if (events.length > 0 && !plan.endsInside) transactions += 1;
    const minW = this.minWatermark();
    if (events.length > 0 && minW !== undefined && (this.#released === undefined || minW > this.#released)) this.#released = minW;
    const last = events.at(-1);
    if (last !== undefined) this.#lastReleased = last.key;
    if (events.length === 0 && changed.size === 0) return undefined;
    if (events.length === 0) {
      // Only watermarks moved (a heartbeat inside a large transaction, say): the transaction
      // released last may still go on, and a sink must not take this batch as its end.
      const inside = this.#lastReleased !== undefined && (bound === undefined || !covers(bound, transactionEnd(this.#lastReleased)));
      return { events, transactions, startsInside: inside, endsInside: inside, checkpoints: [...changed].map((lane) => lane.checkpoint()) };
    }
    return { events, transactions, startsInside: plan.startsInside, endsInside: plan.endsInside, checkpoints: [...changed].map((lane) => lane.checkpoint()) };
  }

  /**
   * Which events to release, without releasing them: the lanes' head events in order
   * while they are at or below `bound`, stopping at `maxEvents` between transactions.
   * The last transaction, if it cannot end in this batch, is left for a later one —
   * unless it is the only one and is large (or already partly released): then it goes
   * out as a chunk.
   */
  #plan(bound: Bound, maxEvents: number, options: TakeOptions): Plan {
    const streamAbove = options.streamAbove ?? Number.POSITIVE_INFINITY;
    const cursors = new Map<Lane, number>(this.#lanes.map((lane) => [lane, 0]));
    const nextEvent = (lane: Lane): Extract<Item, { kind: 'event' }> | undefined => {
      for (let index = cursors.get(lane) ?? 0; ; index++) {
        const item = lane.queue.at(index);
        if (item === undefined) return undefined;
        if (item.kind === 'event') {
          cursors.set(lane, index);
          return item;
        }
      }
    };
    const picks: Pick[] = [];
    let tailStart = 0;
    let startsInside = false;
    let capped = false;
    for (;;) {
      let best: Pick | undefined;
      for (const lane of this.#lanes) {
        const item = nextEvent(lane);
        if (item === undefined || !covers(bound, item.key)) continue;
        if (best === undefined || compareOrderKeys(item.key, best.item.key) < 0) best = { lane, item };
      }
      if (best === undefined) break;
      const last = picks.at(-1);
      if (last === undefined) {
        const { key } = best.item;
        startsInside = this.#lanes.some((lane) => lane.lastReleasedKey !== undefined && sameTransaction(lane.lastReleasedKey, key));
      } else if (!sameTransaction(last.item.key, best.item.key)) {
        if (picks.length >= maxEvents) break;
        tailStart = picks.length;
      } else {
        const limit = tailStart > 0 || startsInside ? maxEvents : streamAbove;
        if (picks.length - tailStart >= limit) {
          capped = true;
          break;
        }
      }
      picks.push(best);
      cursors.set(best.lane, (cursors.get(best.lane) ?? 0) + 1);
    }
    const tail = picks[tailStart];
    const tailEnds = tail !== undefined && !capped && covers(bound, transactionEnd(tail.item.key));
    if (tail === undefined || tailEnds) return { picks, startsInside, endsInside: false };
    // The last transaction goes on past this batch.
    if (tailStart > 0) return { picks: picks.slice(0, tailStart), startsInside, endsInside: false };
    if (startsInside || capped) return { picks, startsInside, endsInside: true };
    return { picks: [], startsInside: false, endsInside: false };
  }

  /** Current checkpoint of every partition (what a batch taken now would start from). */
  checkpoints(): LaneCheckpoint[] {
    return this.#lanes.map((lane) => lane.checkpoint());
  }
}
