/**
 * The total order every stage agrees on: (lamport, source, commitLsn, seq).
 * For one source it is the commit order (lamport grows strictly per transaction,
 * then the position inside the transaction); across sources ties break by source id,
 * so the order is deterministic.
 */
import type { ChangeEvent } from './event.ts';
import { Lsn } from './lsn.ts';

export interface OrderKey {
  readonly lamport: bigint;
  readonly source: string;
  readonly commitLsn: Lsn;
  readonly seq: number;
}

export function orderKeyOf(event: Pick<ChangeEvent, 'lamport' | 'source' | 'commitLsn' | 'seq'>): OrderKey {
  return {
    lamport: BigInt(event.lamport),
    source: event.source,
    commitLsn: Lsn.parse(event.commitLsn),
    seq: event.seq,
  };
}

export function compareOrderKeys(a: OrderKey, b: OrderKey): number {
  if (a.lamport !== b.lamport) return a.lamport < b.lamport ? -1 : 1;
  if (a.source !== b.source) return a.source < b.source ? -1 : 1;
  if (a.commitLsn !== b.commitLsn) return a.commitLsn < b.commitLsn ? -1 : 1;
  return a.seq - b.seq;
}

/** Text form for headers and checkpoints: `lamport:source:commitLsn:seq`. */
export function formatOrderKey(key: OrderKey): string {
  return `${key.lamport}:${key.source}:${Lsn.format(key.commitLsn)}:${key.seq}`;
}

export function parseOrderKey(text: string): OrderKey {
  const parts = text.split(':');
  if (parts.length < 4) throw new RangeError(`not an order key: ${text}`);
  const seq = Number(parts.pop());
  const commitLsn = Lsn.parse(parts.pop() ?? '');
  const lamport = BigInt(parts.shift() ?? '');
  return { lamport, source: parts.join(':'), commitLsn, seq };
}

/** The Lamport clock of one source: strictly increasing, fed by commit timestamps. */
export class LamportClock {
  #last: bigint;

  constructor(last: bigint = 0n) {
    this.#last = last;
  }

  get last(): bigint {
    return this.#last;
  }

  /** Stamps a transaction committed at `commitTimeMicros`. */
  tick(commitTimeMicros: bigint): bigint {
    const next = commitTimeMicros > this.#last ? commitTimeMicros : this.#last + 1n;
    this.#last = next;
    return next;
  }

  /** Lamport's receive rule: never fall behind a clock we have observed. */
  observe(remote: bigint): void {
    if (remote > this.#last) this.#last = remote;
  }
}
