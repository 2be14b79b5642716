import { Lsn, computeEventId, type ChangeEvent, type Op, type PartitionHeartbeat, type Row } from '@cdc/core';

export interface EventSpec {
  readonly lamport: number | bigint;
  readonly commitLsn: string;
  readonly seq: number;
  readonly source?: string;
  readonly table?: string;
  readonly op?: Op;
  readonly key?: readonly (string | null)[];
  readonly keyColumns?: readonly string[];
  readonly after?: Row | null;
  readonly before?: Row | null;
  readonly unchanged?: readonly string[];
}

export function changeEvent(spec: EventSpec): ChangeEvent {
  const source = spec.source ?? 'src';
  const table = spec.table ?? 'public.items';
  const key = spec.key ?? [String(spec.seq)];
  const lsn = Lsn.format(Lsn.fromBigInt(Lsn.parse(spec.commitLsn) - 16n));
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
    columnTypes: {},
    lsn,
    commitLsn: spec.commitLsn,
    seq: spec.seq,
    xid: 1000,
    commitTs: new Date(0).toISOString(),
    lamport: String(spec.lamport),
    eventId: computeEventId({ source, table, key, lsn, commitLsn: spec.commitLsn, seq: spec.seq }),
    traceId: `trace-${spec.commitLsn}-${spec.seq}`,
  };
}

export function heartbeat(lamport: number | bigint, positions: Record<string, string> = {}): PartitionHeartbeat {
  return { kind: 'watermark', lamport: String(lamport), positions };
}

/** Deterministic PRNG (mulberry32) for simulations driven by a fast-check seed. */
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
