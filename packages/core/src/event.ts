/**
 * The domain words, one per concept:
 *  - Source: one PostgreSQL database read by one reader (a `sourceId`).
 *  - ChangeEvent: one row change decoded from pgoutput.
 *  - Partition: hash(table, key) mod P; per-key order holds within a partition.
 *  - Lamport: the per-source logical clock stamped on every event of a transaction
 *    (max(commit timestamp in µs, previous + 1)); equal for all events of one transaction.
 *  - Watermark: a promise from a source that every event with lamport <= W was published.
 *  - Checkpoint: what a stage has durably done, per partition.
 *
 * Wire format: JSON, many events per JetStream message (wire.ts). bigint fields travel as
 * decimal strings, LSNs as PostgreSQL text ('X/Y').
 */
import { hash } from 'node:crypto';

/**
 * `read`: a row of a snapshot chunk (snapshot.ts in @cdc/pg-source), not a WAL change: the
 * row as it was at its chunk's high watermark, placed in the stream at that watermark's
 * transaction, so it is ordered, deduplicated and version-guarded like any change.
 */
export type Op = 'insert' | 'update' | 'delete' | 'truncate' | 'read';

/** What started the snapshot a `read` belongs to: the pipeline's first start, or a backfill asked for later. */
export type SnapshotKind = 'initial' | 'incremental';

/** Column values in PostgreSQL text form; null is SQL NULL. */
export type Row = Readonly<Record<string, string | null>>;

declare const partitionBrand: unique symbol;
export type Partition = number & { readonly [partitionBrand]: true };

declare const eventIdBrand: unique symbol;
export type EventId = string & { readonly [eventIdBrand]: true };

export interface ChangeEvent {
  readonly kind: 'change';
  readonly source: string;
  /** Name of the source database (current_database()); absent in events from older readers. */
  readonly database?: string;
  /** `schema.table` */
  readonly table: string;
  /** Primary-key (or replica-identity) column names, in key order. */
  readonly keyColumns: readonly string[];
  /** Key values in text form, in `keyColumns` order. */
  readonly key: readonly (string | null)[];
  readonly op: Op;
  readonly before: Row | null;
  readonly after: Row | null;
  /** Columns pgoutput sent as "unchanged TOAST" ('u'): the sink must keep its value. */
  readonly unchanged: readonly string[];
  /** Column name → PostgreSQL type OID, for the sink to check what it can take. */
  readonly columnTypes: Readonly<Record<string, number>>;
  /** LSN of this change's WAL record. Several changes may share it (multi-insert). */
  readonly lsn: string;
  /** Final LSN of the transaction (its commit record); all changes of a transaction share it. */
  readonly commitLsn: string;
  /** Index of this change within its transaction (0-based); with commitLsn, a unique position. */
  readonly seq: number;
  readonly xid: number;
  /** ISO-8601 commit time. */
  readonly commitTs: string;
  /** Decimal string of the source's Lamport clock for this transaction. */
  readonly lamport: string;
  readonly eventId: EventId;
  readonly traceId: string;
  /** op `read` only: which snapshot the row comes from. */
  readonly snapshot?: SnapshotKind;
  /**
   * A streamed change of a table whose snapshot has not finished: when it needs a row the
   * sink does not have yet (an update that left TOAST columns unchanged), that row arrives
   * whole, with this change in it, from a later snapshot chunk — the sink may skip it
   * instead of refusing it. Absent on every other change.
   */
  readonly snapshotPending?: true;
}

/**
 * A source's watermark, published to every partition after every event with
 * `lamport <= watermark` of that source was acknowledged by JetStream.
 * `lsn` is the end LSN of the commit of that transaction: the slot may be confirmed to it
 * once every partition has committed through this heartbeat.
 */
export interface SourceHeartbeat {
  readonly kind: 'heartbeat';
  readonly source: string;
  readonly lamport: string;
  readonly lsn: string;
}

/**
 * Progress inside one large source transaction, published to every partition after every
 * event of `source` with order key <= (lamport, source, commitLsn, seq) was acknowledged
 * by JetStream. It lets the reorderer release the start of a transaction before its
 * commit is read, so no stage has to hold a large transaction until its heartbeat.
 * It carries no slot position: a point inside a transaction is not a commit end LSN.
 */
export interface SourceProgress {
  readonly kind: 'progress';
  readonly source: string;
  readonly lamport: string;
  readonly commitLsn: string;
  readonly seq: number;
}

/**
 * A partition watermark after merging sources: every event with lamport <= `lamport`
 * was released before this message. `positions` is, per source, the commit end LSN
 * that is complete in this partition once everything before this message is applied.
 */
export interface PartitionHeartbeat {
  readonly kind: 'watermark';
  readonly lamport: string;
  readonly positions: Readonly<Record<string, string>>;
}

export type RawMessage = ChangeEvent | SourceHeartbeat | SourceProgress;
export type OrderedMessage = ChangeEvent | PartitionHeartbeat;

/** Stable text for a key: JSON of its values. */
export function keyText(key: readonly (string | null)[]): string {
  return JSON.stringify(key);
}

/**
 * Deterministic id: the same change replayed after a crash gets the same id, so
 * JetStream (Nats-Msg-Id), the dedup gate and the sink can recognise it. The position
 * (commit LSN, index in transaction) is included because several changes can share one
 * record LSN (multi-row insert, COPY).
 */
export function computeEventId(parts: {
  source: string;
  table: string;
  key: readonly (string | null)[];
  lsn: string;
  commitLsn: string;
  seq: number;
}): EventId {
  const text = `${parts.source}:${parts.table}:${keyText(parts.key)}:${parts.lsn}:${parts.commitLsn}/${parts.seq}`;
  // crypto.hash: the one-shot form of createHash (same digest), ~1 µs less per event than a Hash object.
  return hash('sha256', text, 'hex').slice(0, 32) as EventId;
}

/**
 * The id of a snapshot read (op `read`): one per key per high-watermark transaction,
 * whatever its place in the chunk — a chunk read again after a restart may number its rows
 * differently, and its rows must still be recognised by the gate.
 */
export function computeReadEventId(parts: { source: string; table: string; key: readonly (string | null)[]; commitLsn: string }): EventId {
  return hash('sha256', `${parts.source}:${parts.table}:${keyText(parts.key)}:read@${parts.commitLsn}`, 'hex').slice(0, 32) as EventId;
}

/** FNV-1a 32-bit: fast, stable across processes and versions (unlike any runtime hash). */
const FNV_OFFSET = 0x811c9dc5;

/** FNV-1a of `text`'s characters, continued from `hash` (int32): its UTF-8 bytes when `text` is ASCII. */
function fnvChars(hash: number, text: string): number {
  for (let i = 0; i < text.length; i++) {
    // Math.imul on int32 is the same product mod 2^32 as on its unsigned form.
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  }
  return hash;
}

function fnv1a32Utf8(text: string): number {
  let hash = FNV_OFFSET;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** The hash state after `<table>\u0000` of the tables seen (a reader has few; bounded); null: not ASCII. */
const tablePrefixes = new Map<string, number | null>();
const MAX_TABLE_PREFIXES = 4_096;

function tablePrefix(table: string): number | null {
  let prefix = tablePrefixes.get(table);
  if (prefix === undefined) {
    prefix = /^[\x00-\x7f]*$/.test(table) ? fnvChars(fnvChars(FNV_OFFSET, table), '\u0000') : null;
    if (tablePrefixes.size >= MAX_TABLE_PREFIXES) tablePrefixes.clear();
    tablePrefixes.set(table, prefix);
  }
  return prefix;
}

/** A key value JSON.stringify writes as its own characters between quotes: printable ASCII without `"` or `\`. */
function plainAscii(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code >= 0x7f || code === 0x22 || code === 0x5c) return false;
  }
  return true;
}

/**
 * The partition of a key: FNV-1a of the UTF-8 of `<table>\u0000<keyText(key)>`, modulo
 * `partitions`. Hashed piece by piece, without building that text (issue 12: the text and
 * its JSON were ~7 % of the reader's profile); a key with a value JSON would escape, or a
 * table or value beyond ASCII, takes the text path — the same bytes, so the same partition.
 */
export function partitionOf(table: string, key: readonly (string | null)[], partitions: number): Partition {
  const prefix = tablePrefix(table);
  let plain = prefix !== null;
  for (let i = 0; plain && i < key.length; i++) {
    const value = key[i];
    if (typeof value === 'string' && !plainAscii(value)) plain = false;
  }
  let hash: number;
  if (plain) {
    hash = Math.imul((prefix as number) ^ 0x5b, 0x01000193); // [
    for (let i = 0; i < key.length; i++) {
      if (i > 0) hash = Math.imul(hash ^ 0x2c, 0x01000193); // ,
      const value = key[i];
      // JSON.stringify writes null (and undefined in an array) as null.
      if (typeof value !== 'string') hash = fnvChars(hash, 'null');
      else hash = Math.imul(fnvChars(Math.imul(hash ^ 0x22, 0x01000193), value) ^ 0x22, 0x01000193); // "value"
    }
    hash = Math.imul(hash ^ 0x5d, 0x01000193); // ]
  } else {
    hash = fnv1a32Utf8(`${table}\u0000${keyText(key)}`);
  }
  return ((hash >>> 0) % partitions) as Partition;
}

export function asPartition(value: number, partitions: number): Partition {
  if (!Number.isInteger(value) || value < 0 || value >= partitions) {
    throw new RangeError(`partition ${value} is outside 0..${partitions - 1}`);
  }
  return value as Partition;
}
