/**
 * What the gate asks its store, per event: has another input message already claimed
 * this eventId within the window?
 *
 *   new         we claimed it now                                    → forward
 *   redelivery  it was claimed by THIS input message (same sequence): the gate died
 *               between the claim and the forward (PITFALLS 16)      → forward again
 *   duplicate   claimed by a different input message                 → drop, count
 *
 * Many events may share one input sequence (a message carrying a batch of events):
 * that is fine, the claim is still per event — a second copy of an event in a LATER
 * message has another sequence, and a repeat inside one message is below the running
 * last key, so the gate drops it before asking.
 */
export type DedupVerdict = 'new' | 'redelivery' | 'duplicate';

export interface DedupClaim {
  readonly eventId: string;
  /** Input stream sequence of the message carrying the event: the claim's value. */
  readonly inputSeq: number;
  /**
   * The event's commit time (ISO-8601, as the reader decoded it from the WAL commit record)
   * and its index in its transaction: a store may bucket claims by them — both come from
   * the WAL, so they are the same on every replay of the event. (Not the Lamport stamp: a
   * reader that restored its clock approximately re-stamps a replay differently.)
   */
  readonly commitTs: string;
  readonly seq: number;
}

export interface DedupStore {
  /** One verdict per claim, in order, in one round trip; rejects when the store cannot answer (never guesses). */
  check(claims: readonly DedupClaim[]): Promise<DedupVerdict[]>;
}

/** In-memory store for unit tests: same semantics, no expiry. */
export class MemoryDedupStore implements DedupStore {
  readonly claims = new Map<string, number>();
  failing: Error | undefined;
  /** How many times check() was called (one per batch). */
  calls = 0;

  async check(claims: readonly DedupClaim[]): Promise<DedupVerdict[]> {
    this.calls += 1;
    if (this.failing) throw this.failing;
    return claims.map(({ eventId, inputSeq }) => {
      const owner = this.claims.get(eventId);
      if (owner === undefined) {
        this.claims.set(eventId, inputSeq);
        return 'new';
      }
      return owner === inputSeq ? 'redelivery' : 'duplicate';
    });
  }
}
