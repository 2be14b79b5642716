/**
 * What the gate asks its store, per event: has another input message already claimed
 * this eventId within the window?
 *
 *   new         we claimed it now                                    → forward
 *   redelivery  it was claimed by THIS input message (same sequence): the gate died
 *               between the claim and the forward (PITFALLS 16)      → forward again
 *   duplicate   claimed by a different input message                 → drop, count
 */
export type DedupVerdict = 'new' | 'redelivery' | 'duplicate';

export interface DedupClaim {
  readonly eventId: string;
  /** Input stream sequence of the message carrying the event: the claim's value. */
  readonly inputSeq: number;
}

export interface DedupStore {
  /** One verdict per claim, in order; rejects when the store cannot answer (never guesses). */
  check(claims: readonly DedupClaim[]): Promise<DedupVerdict[]>;
}

/** In-memory store for unit tests: same semantics, no expiry. */
export class MemoryDedupStore implements DedupStore {
  readonly claims = new Map<string, number>();
  failing: Error | undefined;

  async check(claims: readonly DedupClaim[]): Promise<DedupVerdict[]> {
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
