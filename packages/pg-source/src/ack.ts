/**
 * Which LSN the reader may confirm to PostgreSQL (PITFALLS 2, 3).
 *
 * The committer publishes, per partition, the commit end LSN of this source through which
 * the sink has committed (`positions[source]`). Only the minimum over ALL partitions is
 * committed everywhere; a partition without a position holds everything back.
 * The reader confirms the newest commit end LSN it has itself decoded that is <= that
 * minimum — always a transaction boundary, never a point inside a transaction, and never
 * one whose Lamport stamp it does not know (the stamp goes into the ack ring first).
 *
 * Bounded: at most `capacity` commit ends are remembered; when full, every other one is
 * dropped (evenly, see #pinned), so the reader can still confirm — a little less precisely —
 * while the committer lags by more transactions than that.
 */
import { Lsn } from '@cdc/core';

export interface Position {
  readonly lsn: Lsn;
  readonly lamport: bigint;
}

export interface CheckpointPositions {
  readonly positions: Readonly<Record<string, string>>;
}

/**
 * min over partitions 0..P-1 of positions[source], or undefined while any partition has
 * none (or an unreadable one). Compared as LSNs, never as strings.
 */
export function committedEverywhere(
  checkpoints: ReadonlyMap<number, CheckpointPositions>,
  source: string,
  partitions: number,
): Lsn | undefined {
  let min: Lsn | undefined;
  for (let partition = 0; partition < partitions; partition++) {
    const text = checkpoints.get(partition)?.positions[source];
    if (text === undefined) return undefined;
    let lsn: Lsn;
    try {
      lsn = Lsn.parse(text);
    } catch {
      return undefined;
    }
    min = min === undefined ? lsn : Lsn.min(min, lsn);
  }
  return min;
}

/**
 * With several sinks (a PostgreSQL and a Kafka committer beside each other), only what
 * every one of them committed is committed: the minimum over sinks, undefined while any
 * sink has not committed this source in every partition.
 */
export function committedByEverySink(
  sinks: readonly ReadonlyMap<number, CheckpointPositions>[],
  source: string,
  partitions: number,
): Lsn | undefined {
  let min: Lsn | undefined;
  for (const checkpoints of sinks) {
    const lsn = committedEverywhere(checkpoints, source, partitions);
    if (lsn === undefined) return undefined;
    min = min === undefined ? lsn : Lsn.min(min, lsn);
  }
  return min;
}

interface Known extends Position {
  /** Commit counter when remembered; thinning keeps multiples of the stride. */
  readonly n: number;
}

export class AckTracker {
  readonly #capacity: number;
  /** Commit end LSN → Lamport stamp of that transaction, ascending by LSN. */
  #known: Known[] = [];
  #confirmed: Position;
  #commits = 0;
  #stride = 1;

  constructor(confirmed: Position, capacity = 4096) {
    this.#confirmed = confirmed;
    this.#capacity = Math.max(4, capacity);
    this.#known.push({ ...confirmed, n: 0 });
  }

  get confirmed(): Position {
    return this.#confirmed;
  }

  get size(): number {
    return this.#known.length;
  }

  /** Every position known, for the Lamport restore of a new session. */
  known(): readonly Position[] {
    return this.#known;
  }

  /** A transaction ending at `commitEndLsn` was decoded with stamp `lamport`. */
  committed(commitEndLsn: Lsn, lamport: bigint): void {
    const last = this.#known.at(-1);
    // A replay after a reconnect: the position is already known (with the same stamp).
    if (last && commitEndLsn <= last.lsn) return;
    const n = ++this.#commits;
    // The newest position is always kept; it stays only if it is on the stride.
    if (last && last.lsn !== this.#confirmed.lsn && last.n % this.#stride !== 0) this.#known.pop();
    this.#known.push({ lsn: commitEndLsn, lamport, n });
    if (this.#known.length > this.#capacity) {
      this.#stride *= 2;
      this.#known = this.#known.filter((known, index) => this.#pinned(known, index));
    }
  }

  lamportAt(lsn: Lsn): bigint | undefined {
    return this.#known.find((position) => position.lsn === lsn)?.lamport;
  }

  /** The position to confirm next for a committed-everywhere LSN, or undefined if nothing new. */
  confirmable(committed: Lsn): Position | undefined {
    let best: Position | undefined;
    for (const position of this.#known) {
      if (position.lsn > committed) break;
      best = position;
    }
    if (!best || best.lsn <= this.#confirmed.lsn) return undefined;
    return { lsn: best.lsn, lamport: best.lamport };
  }

  /** PostgreSQL was told `position`; positions below it are no longer needed. */
  confirm(position: Position): void {
    this.#confirmed = { lsn: position.lsn, lamport: position.lamport };
    this.#known = this.#known.filter((known) => known.lsn >= position.lsn);
    // Caught up again: remember positions more densely.
    while (this.#stride > 1 && this.#known.length < this.#capacity / 4) this.#stride /= 2;
  }

  /**
   * The slot's real position at a (re)start; may be below what we believed confirmed when
   * the last acknowledgement did not reach the server. Keeps every known position.
   */
  resetConfirmed(position: Position): void {
    this.#confirmed = { lsn: position.lsn, lamport: position.lamport };
    if (!this.#known.some((known) => known.lsn === position.lsn)) {
      this.#known.push({ ...this.#confirmed, n: 0 });
      this.#known.sort((a, b) => Lsn.compare(a.lsn, b.lsn));
    }
  }

  /**
   * Bounded memory: when full, only commits whose counter is a multiple of a doubled
   * stride stay, so the kept positions span confirmed..newest evenly (the confirmed and
   * the newest position always stay).
   */
  #pinned(known: Known, index: number): boolean {
    return known.lsn === this.#confirmed.lsn || index === this.#known.length - 1 || known.n % this.#stride === 0;
  }
}
