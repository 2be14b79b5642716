/**
 * ChangeEvent → the Kafka record Debezium's PostgreSQL connector would write, as JSON
 * without the schema block (`key/value.converter.schemas.enable=false`).
 *
 *   key   := null (truncate, or a table without key columns) | JSON {<key column>: value, …}
 *   value := null (tombstone) | JSON envelope:
 *     { before, after, source, op, ts_ms, ts_us, ts_ns, transaction }
 *     source := { version, connector: "postgresql", name, ts_ms, ts_us, ts_ns,
 *                 snapshot: "true"|"false", db, sequence: "[\"<last commit lsn>\",\"<lsn>\"]",
 *                 schema, table, txId, lsn, xmin: null }
 *     transaction := null | { id: "<xid>:<lsn>", total_order, data_collection_order }
 *   transaction metadata topic: key {id}, value {status, id, event_count, data_collections, ts_ms}
 *
 * Where our events and Debezium differ (reasons at each spot):
 *  - `before` of an update is null unless REPLICA IDENTITY FULL — what pgoutput, hence
 *    Debezium, provides; a delete's `before` holds at least the key columns.
 *  - `sequence[0]` is this transaction's commit LSN, not the previous transaction's.
 *  - `transaction.id` uses the commit LSN, the same on BEGIN, every event and END.
 *  - Integers that may exceed 2^53 (int8, LSNs, ts_ns) are written exactly.
 */
import { IllegalStateError, Lsn, PoisonEventError } from '@cdc/core';
import type { ChangeEvent, EventId, Row } from '@cdc/core';
import {
  InvalidColumnValueError,
  convertValue,
  parseTimestampMicros,
  unavailableValue,
  type DebeziumValue,
  type ValueOptions,
} from './values.ts';

/**
 * `source.version`. Debezium puts its release here; we are not Debezium, so we name
 * ourselves — consumers tell formats apart by `source.connector`, not by this string.
 */
export const SOURCE_VERSION = 'cdc-sink-kafka-0.1.0';

export interface EnvelopeOptions extends ValueOptions {
  /** Debezium's `topic.prefix` (logical server name): `source.name`. */
  readonly topicPrefix: string;
  /** `source.version`; default SOURCE_VERSION. */
  readonly version?: string;
  /** `source.db` for events from readers that did not record their database. */
  readonly database?: string;
  /** Events come from a snapshot: inserts become reads ('r'), `source.snapshot` is "true". */
  readonly snapshot?: boolean;
  /** Debezium's `provide.transaction.metadata`: fill `transaction` (needs a TransactionOrder). */
  readonly transactionMetadata?: boolean;
  /** Debezium's `tombstones.on.delete` (default true), used by toDebeziumRecords. */
  readonly tombstonesOnDelete?: boolean;
  /** Epoch milliseconds for the envelope's ts_ms/ts_us/ts_ns (when we produced it); default Date.now. */
  readonly now?: () => number;
}

/** A Kafka record: key and value are JSON text; value null is a tombstone. */
export interface DebeziumRecord {
  readonly key: string | null;
  readonly value: string | null;
}

/** Where an event stands in its transaction, both 1-based (Debezium's `transaction` block). */
export interface TransactionOrder {
  readonly totalOrder: number;
  readonly dataCollectionOrder: number;
}

/** What identifies a transaction on the metadata topic; any of its ChangeEvents has it. */
export interface TransactionRef {
  readonly xid: number;
  readonly commitLsn: string;
  readonly commitTs: string;
}

/** What stringifyJson writes: JSON values, with bigint for integers that must stay exact. */
export type JsonValue = null | boolean | number | bigint | string | RawJson | readonly JsonValue[] | { readonly [field: string]: JsonValue };

/** JSON text written as it is (a part built once and reused). */
export class RawJson {
  constructor(readonly json: string) {}
}
type JsonObject = { readonly [field: string]: JsonValue };

const OP_CODES = { insert: 'c', update: 'u', delete: 'd', truncate: 't', read: 'r' } as const;

/**
 * The one change record for an event. Key changes need nothing special: the reader
 * already splits them into a delete of the old key and an insert of the new one, which is
 * what Debezium emits too.
 */
export function toDebeziumRecord(event: ChangeEvent, options: EnvelopeOptions, order?: TransactionOrder): DebeziumRecord {
  if (options.transactionMetadata && order === undefined) {
    throw new IllegalStateError('debezium-envelope', 'transactionMetadata on', 'encode an event without its TransactionOrder');
  }
  // Whole milliseconds: a clock with a fraction (performance.now based) would break BigInt.
  const nowMs = Math.floor((options.now ?? Date.now)());
  const isRead = event.op === 'read' || (options.snapshot === true && event.op === 'insert');
  const envelope: JsonObject = {
    before: beforeOf(event, options),
    after: event.op === 'insert' || event.op === 'update' || event.op === 'read' ? rowValue(event, event.after, event.unchanged, options) : null,
    source: sourceOf(event, options),
    op: isRead ? 'r' : OP_CODES[event.op],
    ts_ms: nowMs,
    ts_us: nowMs * 1000,
    ts_ns: BigInt(nowMs) * 1_000_000n,
    transaction:
      options.transactionMetadata && order
        ? { id: transactionId(event), total_order: order.totalOrder, data_collection_order: order.dataCollectionOrder }
        : null,
  };
  return { key: keyOf(event, options), value: stringifyJson(envelope) };
}

/**
 * The records Debezium writes for an event: the change, and after a delete a tombstone
 * (same key, null value) so that log compaction can drop the key entirely.
 */
export function toDebeziumRecords(event: ChangeEvent, options: EnvelopeOptions, order?: TransactionOrder): DebeziumRecord[] {
  const record = toDebeziumRecord(event, options, order);
  if (event.op !== 'delete' || options.tombstonesOnDelete === false) return [record];
  const tombstone = tombstoneFor(record);
  return tombstone ? [record, tombstone] : [record];
}

/**
 * The tombstone following a delete. None for a record without a key: there is nothing to
 * compact, and a compacted topic refuses null keys anyway.
 */
export function tombstoneFor(record: DebeziumRecord): DebeziumRecord | null {
  return record.key === null ? null : { key: record.key, value: null };
}

/**
 * Debezium's transaction id for PostgreSQL is `<xid>:<lsn>`, its lsn being the position of
 * whichever record it is writing — so BEGIN, the events and END of one transaction carry
 * different ids (its documentation's example shows it). We use the commit LSN, equal for
 * all of them, so consumers can join a transaction's records by id; the format is the same.
 */
export function transactionId(tx: TransactionRef): string {
  return `${tx.xid}:${decimalLsn(tx.commitLsn)}`;
}

let lastLsn: { readonly text: string; readonly decimal: string } | undefined;

/** The commit LSN as decimal digits; every event of a transaction asks for the same one. */
function decimalLsn(text: string): string {
  if (lastLsn?.text !== text) lastLsn = { text, decimal: Lsn.parse(text).toString() };
  return lastLsn.decimal;
}

/** The BEGIN record of the transaction metadata topic. */
export function transactionBegin(tx: TransactionRef): DebeziumRecord {
  const id = transactionId(tx);
  return {
    key: stringifyJson({ id }),
    value: stringifyJson({ status: 'BEGIN', id, event_count: null, data_collections: null, ts_ms: commitMillis(tx) }),
  };
}

/**
 * The END record. `counts` is the number of events per `schema.table` that the
 * transaction emitted, in the order the tables should be listed (countByTable gives it).
 */
export function transactionEnd(tx: TransactionRef, counts: ReadonlyMap<string, number>): DebeziumRecord {
  const id = transactionId(tx);
  const dataCollections = [...counts].map(([table, count]) => ({ data_collection: table, event_count: count }));
  const total = dataCollections.reduce((sum, entry) => sum + entry.event_count, 0);
  return {
    key: stringifyJson({ id }),
    value: stringifyJson({ status: 'END', id, event_count: total, data_collections: dataCollections, ts_ms: commitMillis(tx) }),
  };
}

/** Events per table, tables in the order their first event appears in the transaction. */
export function countByTable(events: readonly ChangeEvent[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const event of bySeq(events)) counts.set(event.table, (counts.get(event.table) ?? 0) + 1);
  return counts;
}

/** What has been numbered of one transaction so far (mutable: nextOrder moves it on). */
export interface TransactionCounts {
  seen: number;
  readonly seenByTable: Map<string, number>;
}

/** The next event's total_order and data_collection_order (both 1-based), counting it in `counts`. */
export function nextOrder(counts: TransactionCounts, table: string): TransactionOrder {
  counts.seen += 1;
  const dataCollectionOrder = (counts.seenByTable.get(table) ?? 0) + 1;
  counts.seenByTable.set(table, dataCollectionOrder);
  return { totalOrder: counts.seen, dataCollectionOrder };
}

/**
 * total_order and data_collection_order of each event, from all the events of one
 * transaction (pass every one: a partition's share alone would number them wrongly).
 */
export function transactionOrders(events: readonly ChangeEvent[]): Map<EventId, TransactionOrder> {
  const orders = new Map<EventId, TransactionOrder>();
  const counts: TransactionCounts = { seen: 0, seenByTable: new Map() };
  for (const event of bySeq(events)) orders.set(event.eventId, nextOrder(counts, event.table));
  return orders;
}

/**
 * JSON text in which a bigint is written as its exact digits (JSON.stringify refuses
 * bigints, and a number would round them). Object keys keep their insertion order.
 */
export function stringifyJson(value: JsonValue): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'bigint':
      return value.toString();
    case 'number':
      // JSON has no NaN/Infinity; converters turn those into strings before we get here.
      if (!Number.isFinite(value)) throw new RangeError(`non-finite number ${value} cannot be written as JSON`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    default:
      break;
  }
  if (value instanceof RawJson) return value.json;
  if (Array.isArray(value)) {
    const items = value as readonly JsonValue[];
    let out = '[';
    for (let i = 0; i < items.length; i++) {
      if (i > 0) out += ',';
      out += stringifyJson(items[i] ?? null);
    }
    return `${out}]`;
  }
  // Concatenation and quoted field names from a cache: the same few dozen names (envelope,
  // source block, a table's columns) come back in every record of a batch.
  const object = value as JsonObject;
  let out = '{';
  let first = true;
  for (const field of Object.keys(object)) {
    const inner = object[field];
    if (inner === undefined) continue;
    out += first ? quotedField(field) : `,${quotedField(field)}`;
    out += stringifyJson(inner);
    first = false;
  }
  return `${out}}`;
}

const quotedFields = new Map<string, string>();
const MAX_QUOTED_FIELDS = 10_000;

/** `"field":` */
function quotedField(field: string): string {
  let quoted = quotedFields.get(field);
  if (quoted === undefined) {
    quoted = `${JSON.stringify(field)}:`;
    if (quotedFields.size >= MAX_QUOTED_FIELDS) quotedFields.clear();
    quotedFields.set(field, quoted);
  }
  return quoted;
}

// ---------------------------------------------------------------------------------------

function bySeq(events: readonly ChangeEvent[]): ChangeEvent[] {
  return [...events].sort((a, b) => a.seq - b.seq);
}

/**
 * What every event of one source transaction shares: its commit time and commit LSN,
 * parsed once. The events of a batch come transaction by transaction, so a one-entry
 * memo (keyed by the commit LSN and time text) parses each transaction once.
 */
interface CommitFacts {
  readonly commitLsn: string;
  readonly commitTs: string;
  readonly micros: bigint;
  readonly millis: number;
  readonly commitLsnDecimal: string;
}

let lastCommit: CommitFacts | undefined;

function commitFacts(tx: { commitLsn: string; commitTs: string }): CommitFacts {
  const memo = lastCommit;
  if (memo !== undefined && memo.commitLsn === tx.commitLsn && memo.commitTs === tx.commitTs) return memo;
  const micros = parseTimestampMicros(tx.commitTs);
  // Floor, as java.time's toEpochMilli does, also before 1970.
  const millis = Number(micros >= 0n ? micros / 1000n : (micros - 999n) / 1000n);
  const facts = { commitLsn: tx.commitLsn, commitTs: tx.commitTs, micros, millis, commitLsnDecimal: Lsn.parse(tx.commitLsn).toString() };
  lastCommit = facts;
  return facts;
}

function commitMillis(tx: { commitTs: string }): number {
  const micros = parseTimestampMicros(tx.commitTs);
  // Floor, as java.time's toEpochMilli does, also before 1970.
  return Number(micros >= 0n ? micros / 1000n : (micros - 999n) / 1000n);
}

const splitTables = new Map<string, { readonly schema: string; readonly table: string }>();

function splitTable(table: string): { readonly schema: string; readonly table: string } {
  let split = splitTables.get(table);
  if (split === undefined) {
    const dot = table.indexOf('.');
    split = dot < 0 ? { schema: '', table } : { schema: table.slice(0, dot), table: table.slice(dot + 1) };
    if (splitTables.size >= 10_000) splitTables.clear();
    splitTables.set(table, split);
  }
  return split;
}

/** The source block's text around the event's own LSN, shared by a transaction's events of one table. */
interface SourceTemplate {
  readonly options: EnvelopeOptions;
  readonly commitLsn: string;
  readonly commitTs: string;
  readonly table: string;
  readonly xid: number;
  readonly db: string;
  readonly snapshot: string;
  /** `{"version":…,"db":…,"sequence":` */
  readonly head: string;
  readonly commitLsnDecimal: string;
  /** `,"schema":…,"txId":…,"lsn":` */
  readonly middle: string;
}

let lastSource: SourceTemplate | undefined;

function sourceTemplate(event: ChangeEvent, options: EnvelopeOptions): SourceTemplate {
  const db = event.database ?? options.database ?? '';
  const memo = lastSource;
  if (
    memo !== undefined &&
    memo.options === options &&
    memo.commitLsn === event.commitLsn &&
    memo.commitTs === event.commitTs &&
    memo.table === event.table &&
    memo.xid === event.xid &&
    memo.db === db &&
    memo.snapshot === snapshotOf(event, options)
  ) {
    return memo;
  }
  const commit = commitFacts(event);
  const micros = commit.micros;
  const { schema, table } = splitTable(event.table);
  const head = stringifyJson({
    version: options.version ?? SOURCE_VERSION,
    connector: 'postgresql',
    name: options.topicPrefix,
    ts_ms: commit.millis,
    ts_us: Number(micros),
    ts_ns: micros * 1000n,
    // A string since Debezium 1.x ("true", "last", "false", …), though older docs show a boolean.
    snapshot: snapshotOf(event, options),
    // Debezium's db is a required string; "" is what it writes where a name does not apply.
    db,
  });
  const middle = stringifyJson({ schema, table, txId: event.xid });
  const template: SourceTemplate = {
    options,
    commitLsn: event.commitLsn,
    commitTs: event.commitTs,
    table: event.table,
    xid: event.xid,
    db,
    snapshot: snapshotOf(event, options),
    head: `${head.slice(0, -1)},"sequence":`,
    commitLsnDecimal: commit.commitLsnDecimal,
    middle: `,${middle.slice(1, -1)},"lsn":`,
  };
  lastSource = template;
  return template;
}

/**
 * Debezium's `source.snapshot`: "true" for a row of the initial snapshot, "incremental"
 * for one of a backfill asked for later, "false" for a streamed change.
 */
function snapshotOf(event: ChangeEvent, options: EnvelopeOptions): string {
  if (event.op === 'read') return event.snapshot === 'incremental' ? 'incremental' : 'true';
  return options.snapshot ? 'true' : 'false';
}

/**
 * The source block as JSON text: what changes per event (its LSN) put into a template
 * built once per transaction and table, instead of an object of 14 fields per event.
 */
function sourceOf(event: ChangeEvent, options: EnvelopeOptions): RawJson {
  const template = sourceTemplate(event, options);
  const lsn = Lsn.parse(event.lsn).toString();
  // Debezium writes [last committed LSN, this LSN], the first being the commit of the
  // transaction before this one. A partition's committer cannot know that transaction
  // (it may have gone to another partition), so we write this transaction's commit LSN:
  // it orders events the same way (it grows with commit order) and is stable on replay.
  const sequence = JSON.stringify(`["${template.commitLsnDecimal}","${lsn}"]`);
  return new RawJson(`${template.head}${sequence}${template.middle}${lsn},"xmin":null}`);
}

function beforeOf(event: ChangeEvent, options: EnvelopeOptions): JsonObject | null {
  // An insert's `before` may carry the old key of a key change for the sink's sake;
  // Debezium's create event never has a before.
  if (event.op === 'insert' || event.op === 'read' || event.op === 'truncate' || event.before === null) return null;
  return rowValue(event, event.before, [], options);
}

/** A row as Debezium's struct: columns in table order, unchanged TOAST as the placeholder. */
function rowValue(event: ChangeEvent, row: Row | null, unchanged: readonly string[], options: EnvelopeOptions): JsonObject | null {
  if (row === null) return null;
  const result: Record<string, DebeziumValue> = {};
  const unknownValue = unchanged.length === 0 ? undefined : new Set(unchanged);
  // columnTypes is filled in the relation's column order, which Debezium's struct follows.
  for (const column of Object.keys(event.columnTypes)) {
    const typeOid = event.columnTypes[column] ?? 0;
    if (unknownValue?.has(column)) result[column] = unavailableValue(typeOid, options);
    else if (column in row) result[column] = convertColumn(event, column, row[column] ?? null, options);
  }
  for (const column of Object.keys(row)) {
    if (!(column in result)) result[column] = convertColumn(event, column, row[column] ?? null, options);
  }
  return result;
}

function keyOf(event: ChangeEvent, options: EnvelopeOptions): string | null {
  // Debezium: a truncate has no key, nor does a change of a table without a key.
  if (event.op === 'truncate' || event.keyColumns.length === 0) return null;
  const key: Record<string, DebeziumValue> = {};
  event.keyColumns.forEach((column, index) => {
    key[column] = convertColumn(event, column, event.key[index] ?? null, options);
  });
  return stringifyJson(key);
}

function convertColumn(event: ChangeEvent, column: string, text: string | null, options: ValueOptions): DebeziumValue {
  try {
    return convertValue(text, event.columnTypes[column] ?? 0, options);
  } catch (error) {
    if (!(error instanceof InvalidColumnValueError)) throw error;
    throw new PoisonEventError(
      `${event.table}.${column}: ${error.message}`,
      { table: event.table, column, eventId: event.eventId, lsn: event.lsn },
      error,
    );
  }
}
