/**
 * Pure builders for tests: change events, source heartbeats and partition watermarks as
 * the reader and the reorderer make them, and a seeded PRNG. No I/O.
 *
 *   changeEvent({ lamport: 7, commitLsn: '0/20', seq: 0 })            // public.items insert, key [seq]
 *   changeEvent({ source: 'pg_a', …, lsn: commitLsn, xid: 42 })       // every field can be given
 *   heartbeat('pg_a', 9n, 0x30)                                        // kind 'heartbeat', lsn 0/30
 *   watermark(9, { pg_a: '0/30' })                                     // kind 'watermark'
 */
import {
  Lsn,
  computeEventId,
  type ChangeEvent,
  type Op,
  type PartitionHeartbeat,
  type Row,
  type SourceHeartbeat,
} from '@cdc/core';

export interface EventSpec {
  readonly lamport: number | bigint | string;
  readonly commitLsn: string;
  readonly seq: number;
  readonly source?: string;
  readonly table?: string;
  readonly op?: Op;
  readonly key?: readonly (string | null)[];
  readonly keyColumns?: readonly string[];
  /** Default `{ id: key[0] }`; `null` for none. */
  readonly after?: Row | null;
  readonly before?: Row | null;
  readonly unchanged?: readonly string[];
  readonly columnTypes?: Readonly<Record<string, number>>;
  /** Default: 16 bytes below the commit LSN. */
  readonly lsn?: string;
  readonly xid?: number;
  readonly commitTs?: string;
  readonly traceId?: string;
}

export function changeEvent(spec: EventSpec): ChangeEvent {
  const source = spec.source ?? 'src';
  const table = spec.table ?? 'public.items';
  const key = spec.key ?? [String(spec.seq)];
  const lsn = spec.lsn ?? Lsn.format(Lsn.fromBigInt(Lsn.parse(spec.commitLsn) - 16n));
  return {
    kind: 'change',
    source,
    table,
    keyColumns: spec.keyColumns ?? ['id'],
    key,
    op: spec.op ?? 'insert',
    before: spec.before ?? null,
    after: spec.after === undefined ? { id: key[0] ?? null } : spec.after,
    unchanged: spec.unchanged ?? [],
    columnTypes: spec.columnTypes ?? {},
    lsn,
    commitLsn: spec.commitLsn,
    seq: spec.seq,
    xid: spec.xid ?? 1000,
    commitTs: spec.commitTs ?? new Date(0).toISOString(),
    lamport: String(spec.lamport),
    eventId: computeEventId({ source, table, key, lsn, commitLsn: spec.commitLsn, seq: spec.seq }),
    traceId: spec.traceId ?? `trace-${spec.commitLsn}-${spec.seq}`,
  };
}

/** A source heartbeat as the reader sends it; `lsn` as a number is the LSN's 64-bit value. */
export function heartbeat(source: string, lamport: number | bigint, lsn: number | string): SourceHeartbeat {
  const position = typeof lsn === 'string' ? lsn : Lsn.format(Lsn.fromBigInt(BigInt(lsn)));
  return { kind: 'heartbeat', source, lamport: String(lamport), lsn: position };
}

/** A partition watermark as the reorderer publishes it. */
export function watermark(lamport: number | bigint, positions: Record<string, string> = {}): PartitionHeartbeat {
  return { kind: 'watermark', lamport: String(lamport), positions };
}

/** Deterministic PRNG (mulberry32): floats in [0, 1), the same sequence for the same seed. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
