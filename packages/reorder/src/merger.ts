/**
 * LamportMerger — the pure heart of the lamport-reorderer for ONE partition. No I/O,
 * no clock: input messages go in with their input stream sequence, ordered releases
 * come out, each stamped with the checkpoint that is true once it is stored.
 *
 * Release rule (docs/design.md): every buffered event with lamport <= minW, where
 * minW = min over ALL configured sources of their watermark (the newest heartbeat);
 * a source never heard from holds everything back. After the events, ONE
 * PartitionHeartbeat {lamport: W, positions} when W advanced, positions[s] = lsn of
 * the newest heartbeat of s with lamport <= W (sources without one keep their last
 * published position, or are absent if they never had one).
 *
 * Why heartbeats make this safe: a source publishes heartbeat W only after every one of
 * its events with lamport <= W was acknowledged, so they precede the heartbeat in the
 * input stream. Having read the heartbeat, we have read all of them.
 *
 * Progress inside a large transaction (SourceProgress P = (lamport, source, commitLsn,
 * seq)): the reader promises every event of its own with order key <= P was acknowledged.
 * So each source bounds what may still come from it: its heartbeat W bounds it by
 * "lamport <= W", its progress (when ahead of W) by "key <= P". Everything at or below
 * the smallest bound over all sources is complete and is released, in order; a partial
 * bound (a progress) releases the start of a transaction without a watermark (the
 * published watermark stays below the open transaction's lamport). Waiting for our own
 * source's promise is what keeps this safe when the raw stream is out of order: a publish
 * that failed is re-sent by a restarted reader AFTER later events were stored, so an
 * event released on arrival could overtake one still missing, which would then be
 * dropped as a replay. Progress marks are not anchors: after a restart, events of an
 * open transaction simply wait for the next one (or the heartbeat).
 *
 * Bounded buffer (`maxBuffered`): when full, an event with a key above every buffered
 * key is refused ('full'); one below evicts the highest buffered event (which counts as
 * refused). Heartbeats are always taken: a heartbeat that unblocks the buffer may lie
 * behind refused events. Invariant: every buffered key < every refused key (Kr = the
 * smallest refused key). So while refusing, only events with key < Kr are released and
 * the watermark is capped below Kr's lamport — nothing is ever released past an event
 * we dropped on the floor. After a release frees room, `reopenFrom()` tells the stage
 * to re-read from the first refused sequence; `rewind()` forgets everything read from
 * there. Evicting the highest (rather than refusing the lowest) keeps the smallest keys
 * in memory, which guarantees progress: without it a buffer full of one fast source's
 * events would wait forever for a slower source's event it has no room for.
 *
 * Restart: every release carries `resumeSeq` = the smallest input sequence a restarted
 * merger must re-read to rebuild the same state: events not yet released (or released
 * after this one in the same batch), refused events, and the oldest retained heartbeat
 * of each source (so watermarks and positions come back identical).
 */
import {
  IllegalStateError,
  Lsn,
  compareOrderKeys,
  formatOrderKey,
  orderKeyOf,
  parseOrderKey,
  type EventRef,
  type OrderKey,
  type PartitionHeartbeat,
  type SourceHeartbeat,
  type SourceProgress,
} from '@cdc/core';

/**
 * What the merger needs of a change: its ref (identity, position, commit time) — a whole
 * ChangeEvent is one; the stage passes refs read from each message's index line.
 */
export type MergerEvent = EventRef & { readonly kind: 'change' };

export type MergerInput = MergerEvent | SourceHeartbeat | SourceProgress;

export interface SourceStats {
  accepted: number;
  /** A different input message carried an event already buffered or released. */
  duplicates: number;
  /** The same input read again (restart or reopen): expected, not a source problem. */
  replayed: number;
  /** Key lower than an earlier arrival of the same source (still released in order). */
  outOfOrder: number;
  /** Lamport <= an already released watermark: cannot be placed (dead-lettered). */
  late: number;
  refused: number;
  evicted: number;
  heartbeats: number;
  staleHeartbeats: number;
  /** Progress marks inside large transactions that moved the source's bound. */
  progress: number;
}

export interface MergerCounters {
  readonly sources: Record<string, SourceStats>;
  unknownSource: number;
  released: number;
  watermarks: number;
  reopens: number;
}

export function createCounters(sources: readonly string[]): MergerCounters {
  const stats: Record<string, SourceStats> = {};
  for (const source of sources) {
    stats[source] = { accepted: 0, duplicates: 0, replayed: 0, outOfOrder: 0, late: 0, refused: 0, evicted: 0, heartbeats: 0, staleHeartbeats: 0, progress: 0 };
  }
  return { sources: stats, unknownSource: 0, released: 0, watermarks: 0, reopens: 0 };
}

export interface MergerOptions {
  readonly sources: readonly string[];
  readonly maxBuffered: number;
  /** Heartbeats kept per source while the watermark waits on others (default 1024; thinning is conservative). */
  readonly maxHeartbeats?: number;
  /** Shared counters, so they survive a rebuild of the merger after a restart. */
  readonly counters?: MergerCounters;
}

export interface MergerRestore {
  /** The input sequence the stage re-reads from (the output's Cdc-Resume-Seq). */
  readonly resumeSeq: number;
  /** The output's Cdc-Last-Key: anything at or below is a replay. */
  readonly lastKey?: string | undefined;
  /** The last output message, when it is a watermark: the released watermark and positions. */
  readonly lastWatermark?: PartitionHeartbeat | undefined;
}

export type AcceptResult = 'accepted' | 'duplicate' | 'late' | 'full' | 'unknown-source' | 'heartbeat' | 'stale-heartbeat';

export interface ReleasedEvent<P> {
  readonly kind: 'change';
  readonly event: MergerEvent;
  readonly key: OrderKey;
  readonly payload: P;
  readonly inputSeq: number;
  readonly resumeSeq: number;
  readonly lastKey: string;
}

/**
 * A released event; its `lastKey` text is made when asked for (issue 12: formatting every
 * released key cost the reorderer ~3 % of its profile, and only a message's last is read).
 */
class ReleasedChange<P> implements ReleasedEvent<P> {
  readonly kind = 'change' as const;
  readonly event: MergerEvent;
  readonly key: OrderKey;
  readonly payload: P;
  readonly inputSeq: number;
  readonly resumeSeq: number;

  constructor(event: MergerEvent, key: OrderKey, payload: P, inputSeq: number, resumeSeq: number) {
    this.event = event;
    this.key = key;
    this.payload = payload;
    this.inputSeq = inputSeq;
    this.resumeSeq = resumeSeq;
  }

  get lastKey(): string {
    return formatOrderKey(this.key);
  }
}

export interface ReleasedWatermark {
  readonly kind: 'watermark';
  readonly watermark: PartitionHeartbeat;
  readonly resumeSeq: number;
  readonly lastKey: string | undefined;
}

export type Released<P> = ReleasedEvent<P> | ReleasedWatermark;

export interface MergerHealth {
  /** 'waiting': events are buffered but some source's watermark holds them back. */
  readonly status: 'idle' | 'waiting' | 'full';
  readonly buffered: number;
  readonly maxBuffered: number;
  /** Sources holding the release back: never heard from, or at the minimum watermark. */
  readonly waitingFor: readonly string[];
  readonly releasedWatermark: string | undefined;
  readonly lastReleasedKey: string | undefined;
}

interface Entry<P> {
  readonly event: MergerEvent;
  readonly key: OrderKey;
  readonly seq: number;
  readonly payload: P;
}

interface Mark {
  readonly lamport: bigint;
  readonly lsn: string;
  readonly seq: number;
}

interface Progress {
  readonly key: OrderKey;
  readonly seq: number;
}

/** What may still arrive from a source: only keys above this bound. `key` undefined: above lamport. */
interface Bound {
  readonly lamport: bigint;
  readonly key: OrderKey | undefined;
}

function compareBounds(a: Bound, b: Bound): number {
  if (a.lamport !== b.lamport) return a.lamport < b.lamport ? -1 : 1;
  if (a.key === undefined) return b.key === undefined ? 0 : 1;
  if (b.key === undefined) return -1;
  return compareOrderKeys(a.key, b.key);
}

export class LamportMerger<P = undefined> {
  readonly #sources: readonly string[];
  readonly #maxBuffered: number;
  readonly #maxHeartbeats: number;
  readonly #counters: MergerCounters;
  /**
   * One queue per source, each sorted by order key. A source's events arrive in its commit
   * order, so an insert is almost always an append; a release merges the queue heads.
   * (One global sorted array would pay a mid-array insert for every interleaved arrival.)
   */
  readonly #queues = new Map<string, Entry<P>[]>();
  #count = 0;
  readonly #ids = new Map<string, Entry<P>>();
  /** Per source, ascending; [0] is the newest heartbeat <= released watermark when there is one. */
  readonly #marks = new Map<string, Mark[]>();
  /** Per source, the newest progress inside a transaction above its heartbeat. */
  readonly #progress = new Map<string, Progress>();
  readonly #lastArrival = new Map<string, OrderKey>();
  #lastReleasedKey: OrderKey | undefined;
  #restoredKey: OrderKey | undefined;
  #releasedWm: bigint | undefined;
  #positions: Record<string, string> = {};
  #refused: { fromSeq: number; minKey: OrderKey } | undefined;
  #releasedWhileRefusing = false;
  #nextSeq = 1;
  #maxSeqSeen = 0;
  /** Whether the input message at `#currentSeq` was read before: one message carries many events. */
  #currentSeq = 0;
  #currentReplay = false;
  #started = false;

  constructor(options: MergerOptions) {
    if (options.sources.length === 0) throw new RangeError('LamportMerger needs at least one source');
    if (!Number.isInteger(options.maxBuffered) || options.maxBuffered < 1) throw new RangeError('maxBuffered must be an integer >= 1');
    this.#sources = [...new Set(options.sources)];
    this.#maxBuffered = options.maxBuffered;
    this.#maxHeartbeats = Math.max(2, options.maxHeartbeats ?? 1024);
    this.#counters = options.counters ?? createCounters(this.#sources);
    for (const source of this.#sources) {
      this.#marks.set(source, []);
      this.#queues.set(source, []);
      this.#counters.sources[source] ??= createCounters([source]).sources[source] as SourceStats;
    }
  }

  /** Rebuilds from the checkpoint stored in the output; only before the first accept. */
  restore(checkpoint: MergerRestore): void {
    if (this.#started) throw new IllegalStateError('LamportMerger', 'started', 'restore');
    this.#nextSeq = checkpoint.resumeSeq;
    if (checkpoint.lastKey !== undefined) {
      this.#lastReleasedKey = parseOrderKey(checkpoint.lastKey);
      this.#restoredKey = this.#lastReleasedKey;
    }
    if (checkpoint.lastWatermark) {
      this.#releasedWm = BigInt(checkpoint.lastWatermark.lamport);
      this.#positions = { ...checkpoint.lastWatermark.positions };
    } else if (this.#lastReleasedKey) {
      // The last output is an event E: every watermark published before it is < lamport(E)
      // (an event at or below a published watermark is late, never released), so this floor
      // keeps published watermarks increasing without ever claiming more than is true.
      this.#releasedWm = this.#lastReleasedKey.lamport - 1n;
    }
  }

  /**
   * Takes one item of the input message at `inputSeq` (a message may carry many; `key`,
   * when the caller parsed it already, saves parsing it again). Heartbeats are always
   * taken; events may be refused when full.
   */
  accept(message: MergerInput, inputSeq: number, payload: P, parsedKey?: OrderKey): AcceptResult {
    this.#started = true;
    const replay = this.#isReplay(inputSeq);
    this.#see(inputSeq);
    const stats = this.#counters.sources[message.source];
    if (!stats || !this.#marks.has(message.source)) {
      this.#counters.unknownSource += 1;
      return 'unknown-source';
    }
    if (message.kind === 'heartbeat') {
      const marks = this.#marks.get(message.source) as Mark[];
      const lamport = BigInt(message.lamport);
      const newest = marks.at(-1);
      if (newest && lamport <= newest.lamport) {
        if (!replay) stats.staleHeartbeats += 1;
        return 'stale-heartbeat';
      }
      marks.push({ lamport, lsn: message.lsn, seq: inputSeq });
      // Thinning drops the second oldest: [0] anchors resume and positions, the newest is
      // the watermark; a missing middle one only makes a later position more conservative.
      if (marks.length > this.#maxHeartbeats) marks.splice(1, 1);
      if (!replay) stats.heartbeats += 1;
      return 'heartbeat';
    }
    if (message.kind === 'progress') {
      const key: OrderKey = { lamport: BigInt(message.lamport), source: message.source, commitLsn: Lsn.parse(message.commitLsn), seq: message.seq };
      const heartbeat = this.#marks.get(message.source)?.at(-1)?.lamport;
      const current = this.#progress.get(message.source);
      if ((heartbeat !== undefined && key.lamport <= heartbeat) || (current && compareOrderKeys(key, current.key) <= 0)) {
        if (!replay) stats.staleHeartbeats += 1;
        return 'stale-heartbeat';
      }
      this.#progress.set(message.source, { key, seq: inputSeq });
      if (!replay) stats.progress += 1;
      return 'heartbeat';
    }

    const event = message;
    const key = parsedKey ?? orderKeyOf(event);
    if (this.#ids.has(event.eventId)) {
      if (replay) stats.replayed += 1;
      else stats.duplicates += 1;
      return 'duplicate';
    }
    if (this.#lastReleasedKey && compareOrderKeys(key, this.#lastReleasedKey) <= 0) {
      const restartReplay = this.#restoredKey !== undefined && compareOrderKeys(key, this.#restoredKey) <= 0;
      if (replay || restartReplay) stats.replayed += 1;
      else stats.duplicates += 1;
      return 'duplicate';
    }
    if (this.#releasedWm !== undefined && key.lamport <= this.#releasedWm) {
      stats.late += 1;
      return 'late';
    }
    if (!replay) {
      const previous = this.#lastArrival.get(event.source);
      if (previous && compareOrderKeys(key, previous) < 0) stats.outOfOrder += 1;
      else this.#lastArrival.set(event.source, key);
    }
    if (this.#count >= this.#maxBuffered) {
      const highestQueue = this.#highestQueue() as Entry<P>[];
      const highest = highestQueue.at(-1) as Entry<P>;
      if (compareOrderKeys(key, highest.key) > 0) {
        this.#refuse(inputSeq, key);
        stats.refused += 1;
        return 'full';
      }
      highestQueue.pop();
      this.#count -= 1;
      this.#ids.delete(highest.event.eventId);
      this.#refuse(highest.seq, highest.key);
      const evicted = this.#counters.sources[highest.event.source];
      if (evicted) evicted.evicted += 1;
    }
    this.#insert({ event, key, seq: inputSeq, payload });
    stats.accepted += 1;
    return 'accepted';
  }

  /** Notes an input sequence consumed without content (dead-lettered), so resume passes it. */
  skip(inputSeq: number): void {
    this.#started = true;
    this.#isReplay(inputSeq);
    this.#see(inputSeq);
  }

  /** The first item of a message decides whether the message is read again; its other items follow it. */
  #isReplay(inputSeq: number): boolean {
    if (inputSeq !== this.#currentSeq) {
      this.#currentSeq = inputSeq;
      this.#currentReplay = inputSeq <= this.#maxSeqSeen;
    }
    return this.#currentReplay;
  }

  /** Everything releasable now, in order-key order, then at most one watermark. */
  release(): Released<P>[] {
    // The smallest bound over all sources; a source never heard from holds everything back.
    let bound: Bound | undefined;
    for (const source of this.#sources) {
      const w = this.#marks.get(source)?.at(-1)?.lamport;
      const progress = this.#progress.get(source)?.key;
      let own: Bound;
      if (progress && (w === undefined || progress.lamport > w)) own = { lamport: progress.lamport, key: progress };
      else if (w !== undefined) own = { lamport: w, key: undefined };
      else return [];
      if (bound === undefined || compareBounds(own, bound) < 0) bound = own;
    }
    if (bound === undefined) return [];
    const upTo = bound;
    // Complete lamports: all of them below an open transaction, or up to the heartbeat.
    const minW = upTo.key ? upTo.lamport - 1n : upTo.lamport;
    const limit = this.#refused?.minKey;
    let wm = minW;
    if (limit && limit.lamport <= wm) wm = limit.lamport - 1n;

    const releasable = (entry: Entry<P>): boolean =>
      (upTo.key ? compareOrderKeys(entry.key, upTo.key) <= 0 : entry.key.lamport <= upTo.lamport) &&
      (!limit || compareOrderKeys(entry.key, limit) < 0);
    const prefixes: Entry<P>[][] = [];
    for (const queue of this.#queues.values()) {
      let n = 0;
      while (n < queue.length && releasable(queue[n] as Entry<P>)) n += 1;
      if (n > 0) prefixes.push(queue.splice(0, n));
    }
    const released = mergeSorted(prefixes);
    const count = released.length;
    const advance = wm >= 0n && (this.#releasedWm === undefined || wm > this.#releasedWm);
    if (count === 0 && !advance) return [];
    this.#count -= count;
    for (const entry of released) this.#ids.delete(entry.event.eventId);
    const rest = Math.min(this.#minBufferedSeq(), this.#refused?.fromSeq ?? Infinity, this.#nextSeq);
    const anchorsBefore = this.#minAnchorSeq();
    // A restart after output i must re-read the events released after it in this batch.
    const suffixMin = new Array<number>(count).fill(Infinity);
    for (let i = count - 2; i >= 0; i--) suffixMin[i] = Math.min(suffixMin[i + 1] as number, (released[i + 1] as Entry<P>).seq);

    const items: Released<P>[] = released.map((entry, i) => new ReleasedChange(entry.event, entry.key, entry.payload, entry.seq, Math.min(suffixMin[i] as number, rest, anchorsBefore)));
    const last = released.at(-1);
    if (last) this.#lastReleasedKey = last.key;
    this.#counters.released += count;
    if (this.#refused && count > 0) this.#releasedWhileRefusing = true;

    if (advance) {
      this.#releasedWm = wm;
      for (const [source, marks] of this.#marks) {
        let newest = -1;
        for (let i = 0; i < marks.length && (marks[i] as Mark).lamport <= wm; i++) newest = i;
        if (newest >= 0) {
          this.#positions[source] = (marks[newest] as Mark).lsn;
          marks.splice(0, newest);
        }
      }
      this.#counters.watermarks += 1;
      items.push({
        kind: 'watermark',
        watermark: { kind: 'watermark', lamport: wm.toString(), positions: { ...this.#positions } },
        resumeSeq: Math.min(rest, this.#minAnchorSeq()),
        lastKey: this.#lastReleasedKey ? formatOrderKey(this.#lastReleasedKey) : undefined,
      });
    }
    return items;
  }

  /** Where to re-read from once a release made room after refusals; undefined otherwise. */
  reopenFrom(): number | undefined {
    return this.#refused && this.#releasedWhileRefusing ? this.#refused.fromSeq : undefined;
  }

  /** Forgets everything read at or after `inputSeq`: the stage re-reads it from there. */
  rewind(inputSeq: number): void {
    this.#ids.clear();
    this.#count = 0;
    for (const [source, queue] of this.#queues) {
      const kept = queue.filter((entry) => entry.seq < inputSeq);
      this.#queues.set(source, kept);
      this.#count += kept.length;
      for (const entry of kept) this.#ids.set(entry.event.eventId, entry);
    }
    for (const [source, marks] of this.#marks) this.#marks.set(source, marks.filter((mark) => mark.seq < inputSeq));
    for (const [source, progress] of this.#progress) if (progress.seq >= inputSeq) this.#progress.delete(source);
    this.#refused = undefined;
    this.#releasedWhileRefusing = false;
    this.#nextSeq = inputSeq;
    this.#currentSeq = 0;
    this.#counters.reopens += 1;
  }

  /** The input sequence a restarted merger must read from to rebuild this state. */
  resumeSeq(): number {
    return Math.min(this.#minBufferedSeq(), this.#refused?.fromSeq ?? Infinity, this.#minAnchorSeq(), this.#nextSeq);
  }

  get lastReleasedKey(): string | undefined {
    return this.#lastReleasedKey ? formatOrderKey(this.#lastReleasedKey) : undefined;
  }

  get releasedWatermark(): string | undefined {
    return this.#releasedWm?.toString();
  }

  get buffered(): number {
    return this.#count;
  }

  /** The newest heartbeat lamport of each source (undefined: never heard from). */
  watermarks(): Record<string, string | undefined> {
    const result: Record<string, string | undefined> = {};
    for (const source of this.#sources) result[source] = this.#marks.get(source)?.at(-1)?.lamport.toString();
    return result;
  }

  stats(): MergerCounters {
    return this.#counters;
  }

  health(): MergerHealth {
    const watermarks = this.#sources.map((source) => ({ source, w: this.#marks.get(source)?.at(-1)?.lamport }));
    const unknown = watermarks.filter((entry) => entry.w === undefined).map((entry) => entry.source);
    let waitingFor = unknown;
    if (unknown.length === 0) {
      const min = watermarks.reduce((a, b) => ((b.w as bigint) < a ? (b.w as bigint) : a), watermarks[0]?.w as bigint);
      waitingFor = watermarks.filter((entry) => entry.w === min).map((entry) => entry.source);
    }
    const status = this.#refused ? 'full' : this.#count > 0 ? 'waiting' : 'idle';
    return {
      status,
      buffered: this.#count,
      maxBuffered: this.#maxBuffered,
      waitingFor,
      releasedWatermark: this.releasedWatermark,
      lastReleasedKey: this.lastReleasedKey,
    };
  }

  #see(inputSeq: number): void {
    if (inputSeq > this.#maxSeqSeen) this.#maxSeqSeen = inputSeq;
    if (inputSeq >= this.#nextSeq) this.#nextSeq = inputSeq + 1;
  }

  #refuse(inputSeq: number, key: OrderKey): void {
    if (!this.#refused) {
      this.#refused = { fromSeq: inputSeq, minKey: key };
      this.#releasedWhileRefusing = false;
      return;
    }
    if (inputSeq < this.#refused.fromSeq) this.#refused.fromSeq = inputSeq;
    if (compareOrderKeys(key, this.#refused.minKey) < 0) this.#refused.minKey = key;
  }

  #insert(entry: Entry<P>): void {
    const queue = this.#queues.get(entry.event.source) as Entry<P>[];
    const tail = queue.at(-1);
    if (!tail || compareOrderKeys(tail.key, entry.key) <= 0) {
      queue.push(entry);
    } else {
      // An out-of-order arrival: binary search its place.
      let lo = 0;
      let hi = queue.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareOrderKeys((queue[mid] as Entry<P>).key, entry.key) <= 0) lo = mid + 1;
        else hi = mid;
      }
      queue.splice(lo, 0, entry);
    }
    this.#count += 1;
    this.#ids.set(entry.event.eventId, entry);
  }

  /** The queue whose last entry is the highest buffered key. */
  #highestQueue(): Entry<P>[] | undefined {
    let best: Entry<P>[] | undefined;
    for (const queue of this.#queues.values()) {
      const tail = queue.at(-1);
      if (tail && (!best || compareOrderKeys(tail.key, (best.at(-1) as Entry<P>).key) > 0)) best = queue;
    }
    return best;
  }

  #minBufferedSeq(): number {
    let min = Infinity;
    for (const queue of this.#queues.values()) for (const entry of queue) if (entry.seq < min) min = entry.seq;
    return min;
  }

  #minAnchorSeq(): number {
    let min = Infinity;
    for (const marks of this.#marks.values()) {
      const first = marks[0];
      if (first && first.seq < min) min = first.seq;
    }
    return min;
  }
}

/** k-way merge of sorted runs (k = number of sources: small, so a linear pick per step). */
function mergeSorted<P>(runs: readonly Entry<P>[][]): Entry<P>[] {
  if (runs.length === 0) return [];
  if (runs.length === 1) return runs[0] as Entry<P>[];
  const heads = runs.map(() => 0);
  const total = runs.reduce((n, run) => n + run.length, 0);
  const out: Entry<P>[] = [];
  while (out.length < total) {
    let pick = -1;
    for (let r = 0; r < runs.length; r++) {
      const candidate = (runs[r] as Entry<P>[])[heads[r] as number];
      if (!candidate) continue;
      if (pick < 0 || compareOrderKeys(candidate.key, ((runs[pick] as Entry<P>[])[heads[pick] as number] as Entry<P>).key) < 0) pick = r;
    }
    out.push((runs[pick] as Entry<P>[])[heads[pick] as number] as Entry<P>);
    heads[pick] = (heads[pick] as number) + 1;
  }
  return out;
}
