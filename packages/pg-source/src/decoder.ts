/**
 * pgoutput messages → ChangeEvents. Pure: no I/O, the only state is the relation map,
 * the open transaction and the Lamport clock, so a replay of the same messages from the
 * same clock yields the same events, ids and stamps.
 *
 * Grammar of what the slot sends (protocol version 1, only committed transactions):
 *
 *   stream      := (Relation | Type | Origin | transaction)*
 *   transaction := Begin (Relation | Type | Insert | Update | Delete | Truncate | Message)* Commit
 *
 * Per transaction: BEGIN gives the final (commit) LSN, commit time and xid; the Lamport
 * stamp `max(commit µs, previous + 1)` is taken there and shared by every event of the
 * transaction; `seq` numbers the events in order, so (commitLsn, seq) is unique even when
 * several rows share one record LSN (PITFALLS 4).
 *
 * Mapping:
 *   Insert                  → insert(key, after)
 *   Update, same key        → update(key, before = old row if sent, after)
 *   Update, key changed     → delete(old key) then insert(new key) — or, when TOAST columns
 *                             came unchanged, insert(new key, before = old key) then
 *                             delete(old key), so the sink copies them (PITFALLS 6: the two
 *                             halves may belong to different partitions)
 *   Delete                  → delete(key, before = old row, or just the key columns)
 *   Truncate                → one `truncate` per table, key [] (partition 0)
 *   Message 'cdc-heartbeat' → no event; a transaction with no changes is heartbeat-only
 *   Message 'cdc-snapshot'  → a snapshot watermark (snapshot.ts): the reader turns a high
 *                             watermark into the chunk's `read` events (readEvent), in
 *                             this transaction, before its commit
 * Unchanged TOAST columns are listed in `unchanged` and absent from `after`, never null
 * (PITFALLS 5). A change the decoder cannot key or place is a PoisonEventError for the
 * dead-letter subject; the transaction goes on.
 */
import { hash } from 'node:crypto';
import type { LamportClock } from '@cdc/core';
import {
  Lsn,
  PoisonEventError,
  computeEventId,
  computeReadEventId,
  keyText,
  type ChangeEvent,
  type Op,
  type Row,
  type SnapshotKind,
} from '@cdc/core';
import type { Pgoutput } from 'pg-logical-replication';
import { ReplicationError } from './errors.ts';
import { HEARTBEAT_PREFIX, SNAPSHOT_PREFIX, type SourceMessage } from './pgoutput.ts';

export interface DecoderTable {
  /** `schema.table` */
  readonly table: string;
  readonly keyColumns: readonly string[];
}

export type Decoded =
  | { readonly type: 'begin'; readonly xid: number; readonly commitLsn: string; readonly lamport: bigint }
  | { readonly type: 'change'; readonly event: ChangeEvent }
  | {
      readonly type: 'commit';
      readonly xid: number;
      readonly commitLsn: string;
      /** End of the commit record: the slot position once this transaction is done. */
      readonly commitEndLsn: string;
      readonly lamport: bigint;
      readonly changes: number;
      /** True for a transaction that carried only our WAL heartbeat message. */
      readonly heartbeat: boolean;
    }
  | { readonly type: 'poison'; readonly error: PoisonEventError }
  /** A snapshot watermark message (its JSON content, parsed by snapshot.ts), at WAL position `lsn`. */
  | { readonly type: 'snapshot'; readonly content: string; readonly lsn: string };

interface KnownRelation {
  readonly table: string;
  readonly keyColumns: readonly string[] | undefined;
  readonly columns: readonly string[];
  readonly columnTypes: Readonly<Record<string, number>>;
}

interface Transaction {
  readonly xid: number;
  readonly commitLsn: string;
  readonly commitTs: string;
  readonly lamport: bigint;
  /** `lamport` as its events carry it: formatted once per transaction, not per event. */
  readonly lamportText: string;
  readonly traceId: string;
  seq: number;
  changes: number;
  heartbeat: boolean;
}

type Tuple = Readonly<Record<string, unknown>>;

export class PgoutputDecoder {
  readonly #source: string;
  /** current_database() of the source, carried in every event (Debezium's source.db). */
  readonly #database: string | undefined;
  readonly #tables: ReadonlyMap<string, DecoderTable>;
  readonly #clock: LamportClock;
  readonly #snapshotPending: ((table: string) => boolean) | undefined;
  readonly #relations = new Map<number, KnownRelation>();
  #tx: Transaction | undefined;

  /** `snapshotPending(table)`: the table's snapshot has not finished (its changes get `snapshotPending`). */
  constructor(options: {
    source: string;
    database?: string;
    tables: Iterable<DecoderTable>;
    clock: LamportClock;
    snapshotPending?: (table: string) => boolean;
  }) {
    this.#source = options.source;
    this.#database = options.database;
    this.#tables = new Map([...options.tables].map((t) => [t.table, t]));
    this.#clock = options.clock;
    this.#snapshotPending = options.snapshotPending;
  }

  get clock(): LamportClock {
    return this.#clock;
  }

  get inTransaction(): boolean {
    return this.#tx !== undefined;
  }

  /** `lsn` is the WAL position of the message (XLogData start) as the library reports it. */
  decode(message: SourceMessage, lsn: string): Decoded[] {
    const at = canonical(lsn);
    switch (message.tag) {
      case 'relation':
        this.#relation(message);
        return [];
      case 'begin':
        return [this.#begin(message)];
      case 'commit':
        return [this.#commit(message, at)];
      case 'insert':
      case 'update':
      case 'delete':
        return this.#change(message, at);
      case 'truncate':
        return this.#truncate(message, at);
      case 'message':
        if (message.transactional && message.prefix === HEARTBEAT_PREFIX && this.#tx) this.#tx.heartbeat = true;
        if (message.transactional && message.prefix === SNAPSHOT_PREFIX && this.#tx) {
          return [{ type: 'snapshot', content: Buffer.from(message.content).toString('utf8'), lsn: at }];
        }
        return [];
      case 'invalid':
        return [
          {
            type: 'poison',
            error: new PoisonEventError(
              `pgoutput message at ${at} could not be decoded: ${message.error instanceof Error ? message.error.message : String(message.error)}`,
              { lsn: at, ...(message.relationOid === undefined ? {} : { relationOid: message.relationOid }), ...(this.#tx ? { commitLsn: this.#tx.commitLsn } : {}) },
              message.error,
            ),
          },
        ];
      default:
        // type, origin: nothing to publish.
        return [];
    }
  }

  #relation(message: Pgoutput.MessageRelation): void {
    const table = `${message.schema}.${message.name}`;
    const columnTypes: Record<string, number> = {};
    for (const column of message.columns) columnTypes[column.name] = column.typeOid;
    this.#relations.set(message.relationOid, {
      table,
      keyColumns: this.#tables.get(table)?.keyColumns,
      columns: message.columns.map((c) => c.name),
      columnTypes,
    });
  }

  #begin(message: Pgoutput.MessageBegin): Decoded {
    if (this.#tx) throw protocolError(`BEGIN of xid ${message.xid} inside transaction ${this.#tx.xid}`, this.#tx.commitLsn);
    if (message.commitLsn === null) throw protocolError(`BEGIN of xid ${message.xid} without a final LSN`);
    const commitLsn = canonical(message.commitLsn);
    const commitMicros = message.commitTime as unknown as bigint;
    const lamport = this.#clock.tick(commitMicros);
    const xid = message.xid >>> 0;
    this.#tx = {
      xid,
      commitLsn,
      commitTs: isoMicros(commitMicros),
      lamport,
      lamportText: lamport.toString(),
      // One-shot crypto.hash: the same digest as a Hash object, without building one per transaction.
      traceId: hash('sha256', `${this.#source}:${commitLsn}`, 'hex').slice(0, 32),
      seq: 0,
      changes: 0,
      heartbeat: false,
    };
    return { type: 'begin', xid, commitLsn, lamport };
  }

  #commit(message: Pgoutput.MessageCommit, at: string): Decoded {
    const tx = this.#tx;
    if (!tx) throw protocolError('COMMIT outside a transaction', at);
    if (message.commitEndLsn === null) throw protocolError(`COMMIT of xid ${tx.xid} without an end LSN`, tx.commitLsn);
    this.#tx = undefined;
    return {
      type: 'commit',
      xid: tx.xid,
      commitLsn: tx.commitLsn,
      commitEndLsn: canonical(message.commitEndLsn),
      lamport: tx.lamport,
      changes: tx.changes,
      heartbeat: tx.heartbeat && tx.changes === 0,
    };
  }

  #change(message: Pgoutput.MessageInsert | Pgoutput.MessageUpdate | Pgoutput.MessageDelete, at: string): Decoded[] {
    const tx = this.#requireTx(message.tag, at);
    const relation = this.#relations.get(message.relation.relationOid);
    const problem = this.#unusable(relation, message.relation, at);
    if (problem || !relation?.keyColumns) return [problem ?? this.#poison('no key', message.relation, at)];
    const keyColumns = relation.keyColumns;

    if (message.tag === 'insert') {
      const key = keyOf(message.new, keyColumns);
      if (!key) return [this.#poison('a key column is missing from the new row', message.relation, at)];
      const { row, unchanged } = readRow(message.new, relation);
      return [this.#event(tx, relation, 'insert', key, null, row, unchanged, at)];
    }

    if (message.tag === 'delete') {
      const old = message.old ?? message.key;
      const key = old ? keyOf(old, keyColumns) : undefined;
      if (!key) return [this.#poison('the old key of a delete is missing (replica identity?)', message.relation, at)];
      const before = message.old ? readRow(message.old, relation).row : keyRow(keyColumns, key);
      return [this.#event(tx, relation, 'delete', key, before, null, [], at)];
    }

    // update
    const oldTuple = message.old ?? message.key;
    const oldKey = oldTuple ? keyOf(oldTuple, keyColumns) : undefined;
    // A key column the new tuple did not send (unchanged TOAST) keeps its old value.
    const newKey = keyOf(message.new, keyColumns, oldTuple ?? undefined);
    if (!newKey) return [this.#poison('a key column is missing from the new row', message.relation, at)];
    const { row: after, unchanged } = readRow(message.new, relation);
    const before = message.old ? readRow(message.old, relation).row : null;
    if (oldKey && keyText(oldKey) !== keyText(newKey)) {
      if (unchanged.length > 0) {
        // The new row lacks its unchanged TOAST values and the old tuple carries only the
        // key: the sink must copy them from the row at the old key. So the insert comes
        // first and names the old key in `before`; the delete of the old key follows.
        const moved = this.#event(tx, relation, 'insert', newKey, keyRow(keyColumns, oldKey), after, unchanged, at);
        const removed = this.#event(tx, relation, 'delete', oldKey, before ?? keyRow(keyColumns, oldKey), null, [], at);
        return [moved, removed];
      }
      const removed = this.#event(tx, relation, 'delete', oldKey, before ?? keyRow(keyColumns, oldKey), null, [], at);
      const added = this.#event(tx, relation, 'insert', newKey, null, after, unchanged, at);
      return [removed, added];
    }
    return [this.#event(tx, relation, 'update', newKey, before, after, unchanged, at)];
  }

  #truncate(message: Pgoutput.MessageTruncate, at: string): Decoded[] {
    const tx = this.#requireTx('truncate', at);
    const out: Decoded[] = [];
    for (const ref of message.relations as (Pgoutput.MessageRelation | undefined)[]) {
      const relation = ref ? this.#relations.get(ref.relationOid) : undefined;
      if (!ref || !relation) {
        out.push({ type: 'poison', error: new PoisonEventError(`TRUNCATE at ${at} names a relation never described`, { lsn: at, commitLsn: tx.commitLsn }) });
        continue;
      }
      if (!relation.keyColumns) {
        out.push(this.#poison('table is not configured', ref, at));
        continue;
      }
      out.push(this.#event(tx, relation, 'truncate', [], null, null, [], at));
    }
    return out;
  }

  #event(
    tx: Transaction,
    relation: KnownRelation,
    op: Op,
    key: readonly (string | null)[],
    before: Row | null,
    after: Row | null,
    unchanged: readonly string[],
    lsn: string,
  ): Decoded {
    const seq = tx.seq++;
    tx.changes += 1;
    const eventId = computeEventId({ source: this.#source, table: relation.table, key, lsn, commitLsn: tx.commitLsn, seq });
    const event: ChangeEvent = {
      kind: 'change',
      source: this.#source,
      ...(this.#database === undefined ? {} : { database: this.#database }),
      table: relation.table,
      keyColumns: relation.keyColumns ?? [],
      key,
      op,
      before,
      after,
      unchanged,
      columnTypes: relation.columnTypes,
      lsn,
      commitLsn: tx.commitLsn,
      seq,
      xid: tx.xid,
      commitTs: tx.commitTs,
      lamport: tx.lamportText,
      eventId,
      traceId: tx.traceId,
      ...(this.#snapshotPending?.(relation.table) ? { snapshotPending: true as const } : {}),
    };
    return { type: 'change', event };
  }

  /**
   * Reserves `count` places (seqs) in the open transaction for a snapshot chunk; returns
   * the first. A row's seq is this plus its place in the chunk, also when some rows are
   * left out, so a chunk read again numbers its rows the same way.
   */
  reserveSeqs(count: number, at: string): number {
    const tx = this.#requireTx('snapshot read', at);
    const first = tx.seq;
    tx.seq += count;
    return first;
  }

  /**
   * A snapshot row as a `read` event of the open transaction (a high watermark's) at `seq`
   * (from reserveSeqs): the transaction's stamp and commit LSN, an id per key (computeReadEventId).
   */
  readEvent(read: {
    table: DecoderTable;
    key: readonly (string | null)[];
    row: Row;
    columnTypes: Readonly<Record<string, number>>;
    lsn: string;
    seq: number;
    snapshot: SnapshotKind;
  }): ChangeEvent {
    const tx = this.#requireTx('snapshot read', read.lsn);
    const seq = read.seq;
    tx.changes += 1;
    return {
      kind: 'change',
      source: this.#source,
      ...(this.#database === undefined ? {} : { database: this.#database }),
      table: read.table.table,
      keyColumns: read.table.keyColumns,
      key: read.key,
      op: 'read',
      before: null,
      after: read.row,
      unchanged: [],
      columnTypes: read.columnTypes,
      lsn: read.lsn,
      commitLsn: tx.commitLsn,
      seq,
      xid: tx.xid,
      commitTs: tx.commitTs,
      lamport: tx.lamportText,
      eventId: computeReadEventId({ source: this.#source, table: read.table.table, key: read.key, commitLsn: tx.commitLsn }),
      traceId: tx.traceId,
      snapshot: read.snapshot,
    };
  }

  #requireTx(what: string, at: string): Transaction {
    if (!this.#tx) throw protocolError(`${what.toUpperCase()} outside a transaction`, at);
    return this.#tx;
  }

  #unusable(relation: KnownRelation | undefined, ref: Pgoutput.MessageRelation, at: string): Decoded | undefined {
    if (!relation) return this.#poison('relation was never described by a Relation message', ref, at);
    if (!relation.keyColumns) return this.#poison('table is not configured for this reader', ref, at, relation.table);
    const missing = relation.keyColumns.filter((column) => !relation.columns.includes(column));
    if (missing.length > 0) return this.#poison(`key columns ${missing.join(', ')} are no longer in the table`, ref, at, relation.table);
    return undefined;
  }

  #poison(reason: string, ref: Pgoutput.MessageRelation, at: string, table = `${ref.schema}.${ref.name}`): Decoded {
    return {
      type: 'poison',
      error: new PoisonEventError(`change to ${table} at ${at}: ${reason}`, {
        table,
        lsn: at,
        relationOid: ref.relationOid,
        ...(this.#tx ? { commitLsn: this.#tx.commitLsn } : {}),
      }),
    };
  }
}

/** PostgreSQL's own text form ('0/16B3748'): what every LSN in an event looks like. */
function canonical(lsn: string): string {
  return Lsn.format(Lsn.parse(lsn));
}

function protocolError(message: string, lsn?: string): ReplicationError {
  return new ReplicationError(`pgoutput protocol: ${message}`, { retriable: false, ...(lsn ? { lsn } : {}) });
}

function toText(value: unknown): string | null {
  if (value === null) return null;
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return `\\x${Buffer.from(value).toString('hex')}`;
  return String(value);
}

function readRow(tuple: Tuple, relation: KnownRelation): { row: Row; unchanged: string[] } {
  const row: Record<string, string | null> = {};
  const unchanged: string[] = [];
  for (const column of relation.columns) {
    const value = tuple[column];
    if (value === undefined) unchanged.push(column);
    else row[column] = toText(value);
  }
  return { row, unchanged };
}

function keyOf(tuple: Tuple, keyColumns: readonly string[], fallback?: Tuple): (string | null)[] | undefined {
  const key: (string | null)[] = [];
  for (const column of keyColumns) {
    const value = tuple[column] === undefined ? fallback?.[column] : tuple[column];
    if (value === undefined) return undefined;
    key.push(toText(value));
  }
  return key;
}

function keyRow(keyColumns: readonly string[], key: readonly (string | null)[]): Row {
  const row: Record<string, string | null> = {};
  keyColumns.forEach((column, index) => {
    row[column] = key[index] ?? null;
  });
  return row;
}

/** ISO-8601 with the microseconds PostgreSQL keeps (Date alone stops at milliseconds). */
export function isoMicros(micros: bigint): string {
  const millis = micros / 1000n;
  const rest = ((micros % 1000n) + 1000n) % 1000n;
  return new Date(Number(millis)).toISOString().replace('Z', `${rest.toString().padStart(3, '0')}Z`);
}
