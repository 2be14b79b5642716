/**
 * A small model of N sources for the merger's tests: each source commits transactions
 * with strictly increasing Lamport stamps and sends heartbeats the way the reader does
 * (after every event at or below the heartbeat), then a final heartbeat far ahead.
 * Duplicates are injected the way a restarted reader makes them: a stretch of the
 * source's stream is sent again.
 */
import { Lsn, type ChangeEvent, type RawMessage } from '@cdc/core';
import { changeEvent, heartbeat } from '@cdc/testkit';
import fc from 'fast-check';

export interface SourcePlan {
  /**
   * Per transaction: lamport gap from the previous one (>= 1), events in it, heartbeat slack
   * or none, and optionally a progress mark after event `progress mod events` (as the reader
   * sends inside a large transaction, after every event up to it was acknowledged).
   */
  readonly transactions: readonly { gap: number; events: number; heartbeat: number | null; progress?: number | null }[];
  /** Replays: after message `at`, send again the `length` messages before it. */
  readonly replays: readonly { at: number; length: number }[];
}

export const FINAL_LAMPORT = 1_000_000n;

export function event(source: string, lamport: bigint, commit: number, seq: number): ChangeEvent {
  const commitLsn = Lsn.format(Lsn.fromBigInt(BigInt(commit)));
  const key = [`${source}-${commit}-${seq}`];
  return changeEvent({
    source, table: 'public.t', key, columnTypes: { id: 25 }, lsn: commitLsn, commitLsn, seq, xid: commit, lamport,
    traceId: `${source}:${commit}:${seq}`,
  });
}

export { heartbeat };

export interface SourceStream {
  readonly source: string;
  /** The stream as the source sends it (with replays). */
  readonly messages: readonly RawMessage[];
  /** Every distinct event, in commit order. */
  readonly events: readonly ChangeEvent[];
  readonly injectedDuplicates: number;
}

export function buildSource(source: string, plan: SourcePlan): SourceStream {
  const base: RawMessage[] = [];
  const events: ChangeEvent[] = [];
  let lamport = 0n;
  let commit = 0;
  plan.transactions.forEach((tx, index) => {
    lamport += BigInt(tx.gap);
    commit += 16;
    for (let seq = 0; seq < tx.events; seq++) {
      const e = event(source, lamport, commit, seq);
      base.push(e);
      events.push(e);
      if (tx.progress !== undefined && tx.progress !== null && tx.progress % tx.events === seq) {
        base.push({ kind: 'progress', source, lamport: lamport.toString(), commitLsn: e.commitLsn, seq });
      }
    }
    const next = plan.transactions[index + 1];
    // A heartbeat promises every event <= its lamport came before it: it must stay below the next transaction.
    if (tx.heartbeat !== null && (!next || tx.heartbeat < next.gap)) base.push(heartbeat(source, lamport + BigInt(tx.heartbeat), commit + 1));
  });
  base.push(heartbeat(source, FINAL_LAMPORT, commit + 2));

  const messages: RawMessage[] = [];
  let injectedDuplicates = 0;
  const replays = [...plan.replays].sort((a, b) => a.at - b.at);
  let r = 0;
  base.forEach((message, index) => {
    messages.push(message);
    while (r < replays.length && (replays[r]?.at ?? Infinity) % base.length === index) {
      const length = Math.min(replays[r]?.length ?? 0, index + 1);
      const again = base.slice(index + 1 - length, index + 1);
      messages.push(...again);
      injectedDuplicates += again.filter((m) => m.kind === 'change').length;
      r += 1;
    }
  });
  return { source, messages, events, injectedDuplicates };
}

export const sourcePlan = (maxTx = 12): fc.Arbitrary<SourcePlan> =>
  fc.record({
    transactions: fc.array(
      fc.record({
        gap: fc.integer({ min: 1, max: 4 }),
        events: fc.integer({ min: 1, max: 3 }),
        heartbeat: fc.option(fc.integer({ min: 0, max: 3 }), { freq: 2 }),
        progress: fc.option(fc.nat(5), { freq: 2 }),
      }),
      { minLength: 0, maxLength: maxTx },
    ),
    replays: fc.array(fc.record({ at: fc.nat(200), length: fc.integer({ min: 1, max: 6 }) }), { maxLength: 2 }),
  });

/** Interleaves the streams keeping each one's order; `picks` chooses which source goes next. */
export function interleave(streams: readonly SourceStream[], picks: readonly number[]): RawMessage[] {
  const cursors = streams.map(() => 0);
  const out: RawMessage[] = [];
  let p = 0;
  for (;;) {
    const open = streams.map((s, i) => i).filter((i) => (cursors[i] as number) < (streams[i] as SourceStream).messages.length);
    if (open.length === 0) return out;
    const pick = open[(picks[p % Math.max(1, picks.length)] ?? 0) % open.length] as number;
    p += 1;
    out.push((streams[pick] as SourceStream).messages[cursors[pick] as number] as RawMessage);
    cursors[pick] = (cursors[pick] as number) + 1;
  }
}
