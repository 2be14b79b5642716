/**
 * Where the Lamport clock resumes when streaming (re)starts at the slot's
 * confirmed_flush_lsn F. Before the reader confirms an LSN to PostgreSQL it stores
 * `{lsn, lamport}` in the ack ring (etcd), so F is normally in the ring and the replay
 * gets exactly the stamps it got the first time:
 *   1. an entry with lsn == F            → exact;
 *   2. else the newest entry with lsn < F → approximate (the ring lost F: the slot was
 *      confirmed further than the ring remembers, e.g. a ring shorter than the PostgreSQL
 *      crash window). Stamps are max(commit µs, previous + 1), so they still agree unless
 *      commit timestamps collide or go backwards;
 *   3. else 0                            → a new slot: nothing was ever published.
 */
import { Lsn } from '@cdc/core';

export interface AckEntry {
  readonly lsn: string;
  readonly lamport: string;
}

export type LamportRestore =
  | { readonly how: 'exact'; readonly lamport: bigint; readonly lsn: string }
  | { readonly how: 'nearest-below'; readonly lamport: bigint; readonly lsn: string }
  | { readonly how: 'none'; readonly lamport: 0n };

export function restoreLamport(confirmed: Lsn, entries: readonly AckEntry[]): LamportRestore {
  let best: { lsn: Lsn; lamport: bigint; text: string } | undefined;
  for (const entry of entries) {
    let lsn: Lsn;
    let lamport: bigint;
    try {
      lsn = Lsn.parse(entry.lsn);
      lamport = BigInt(entry.lamport);
    } catch {
      continue; // a damaged entry is no evidence
    }
    if (lsn === confirmed) return { how: 'exact', lamport, lsn: Lsn.format(lsn) };
    if (lsn < confirmed && (!best || lsn > best.lsn || (lsn === best.lsn && lamport > best.lamport))) {
      best = { lsn, lamport, text: Lsn.format(lsn) };
    }
  }
  if (best) return { how: 'nearest-below', lamport: best.lamport, lsn: best.text };
  return { how: 'none', lamport: 0n };
}

/** True when the slot was confirmed past everything the ring recorded: someone else moved or recreated it. */
export function slotAheadOfRing(confirmed: Lsn, entries: readonly AckEntry[]): boolean {
  if (entries.length === 0) return false;
  let newest: Lsn | undefined;
  for (const entry of entries) {
    try {
      const lsn = Lsn.parse(entry.lsn);
      if (newest === undefined || lsn > newest) newest = lsn;
    } catch {
      // ignore damaged entries
    }
  }
  return newest !== undefined && confirmed > newest;
}
