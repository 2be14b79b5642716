/**
 * The bus wire format: one codec for every stage (reader, reorderer, gate, committer).
 *
 *   message = item *( LF item )     ; one JetStream message, one or more items, in order
 *   item    = JSON object           ; a ChangeEvent, SourceHeartbeat, SourceProgress or PartitionHeartbeat
 *
 * Many events travel in one JetStream message (issue 12: one event per message cost
 * 150–185 µs per event over three hops; 100 per message cost 29–41 µs). `JSON.stringify`
 * never writes a raw LF (control characters inside strings are escaped as `\n`), so LF
 * separates items without any escaping, and a stage forwards an item's bytes as they are
 * (`WireItem.bytes`): no re-encoding per hop, and fields a stage does not know survive.
 * A message of one item is exactly the JSON of that item.
 *
 * Identity stays per event (PITFALLS 26): a message id only names a message; the
 * reorderer's last-key filter, the gate's claims and the sink's version guard work event
 * by event, so a replay cut into different messages is still absorbed.
 *
 * Decoding returns, per item, either the value with its order key computed once, or one
 * poison shape (`WirePoison`: reason, code, the item's bytes, and whatever identity could
 * be read), so a bad item is dead-lettered alone and its neighbours go on.
 *
 * A message of change events opens with an INDEX line (not an item):
 *
 *   index   = {"kind":"index","txns":[txn, …],"tables":[table, …],"refs":[ref, …]}
 *   txn     = [source, lamport, commitLsn, commitTs, xid, traceId, database | null]
 *   table   = [table, keyColumns, columnTypes]
 *   ref     = [eventId, txn index, seq, table index]        ; one per item, in order
 *
 * What a transaction's or a table's events share is written once per message, and a
 * change ITEM then carries only its own fields (op, key, before, after, unchanged, lsn,
 * and any field a newer producer adds): about 290 bytes instead of 730 for a small row
 * (issue 12: JSON encode/parse, the bytes through nats-server, and the garbage of both
 * were most of what is left per event). An item whose fields are all there (a full
 * ChangeEvent, as `encodeItem` writes it) is valid in an indexed message too; the
 * index's values win. The middle stages (which order and dedupe, never read values)
 * route every event from the index alone (`decodeRefs`); the committer parses the items
 * and adds the shared fields (`decodeMessage`), so what reaches a sink is checked in full.
 * Without an index, or with one that does not match the items, each item must be a full
 * event (a slim one is then poison: it cannot be placed).
 *
 * Headers that describe a batch (set by whoever cuts it):
 *   Cdc-Count      number of change events in the message
 *   Cdc-First-Key  order key of its first change event
 *   Cdc-Last-Key   order key of its last change event — or, in a relay's output, the last
 *                  key the relay has decided (>= every key in the message: a reader may
 *                  skip a whole message at or below what it already has without parsing it)
 */
import type { ChangeEvent, OrderedMessage, PartitionHeartbeat, RawMessage, SourceHeartbeat, SourceProgress } from './event.ts';
import { Lsn } from './lsn.ts';
import { formatOrderKey, type OrderKey } from './order.ts';
import { Headers } from './subjects.ts';

export type WireKind = 'change' | 'heartbeat' | 'progress' | 'watermark';

/** What the raw stream carries (reader → reorderer). */
export const RAW_KINDS: readonly WireKind[] = ['change', 'heartbeat', 'progress'];
/** What the ordered and deduped streams carry (reorderer → gate → committer). */
export const ORDERED_KINDS: readonly WireKind[] = ['change', 'watermark'];

/** Batch cut defaults (issue 12 measured: ~100 events per message; 1,000 is no cheaper). */
export const WIRE_DEFAULTS = {
  /** Change events per message. */
  batchMaxEvents: 100,
  /** Encoded bytes per message (an event larger than this travels alone). */
  batchMaxBytes: 64 * 1024,
} as const;

export interface WireChange {
  readonly kind: 'change';
  readonly value: ChangeEvent;
  /** Parsed once here: every stage orders by it. */
  readonly key: OrderKey;
  /** The item's JSON bytes: a view into the message (no copy), to forward as they are. */
  readonly bytes: Uint8Array;
}

export interface WireMark<T extends SourceHeartbeat | SourceProgress | PartitionHeartbeat> {
  readonly kind: T['kind'];
  readonly value: T;
  readonly bytes: Uint8Array;
}

/** An item a stage cannot interpret: dead-lettered alone, with the reason. */
export interface WirePoison {
  readonly kind: 'poison';
  readonly reason: string;
  /** INVALID_JSON, INVALID_MESSAGE or UNKNOWN_KIND. */
  readonly code: string;
  readonly bytes: Uint8Array;
  /** Position of the item in its message (0-based). */
  readonly index: number;
  readonly eventId?: string;
  readonly table?: string;
  readonly lsn?: string;
}

export type WireItem =
  | WireChange
  | WireMark<SourceHeartbeat>
  | WireMark<SourceProgress>
  | WireMark<PartitionHeartbeat>
  | WirePoison;

export type RawItem = WireChange | WireMark<SourceHeartbeat> | WireMark<SourceProgress> | WirePoison;
export type OrderedItem = WireChange | WireMark<PartitionHeartbeat> | WirePoison;

/**
 * What the middle stages need of a change — identity, position, commit time — and what it
 * shares with its transaction and table (the index line's context), so a stage that cuts
 * a new message can write its index. A ChangeEvent is one.
 */
export interface EventRef {
  readonly eventId: string;
  readonly source: string;
  readonly lamport: string;
  readonly commitLsn: string;
  readonly seq: number;
  readonly commitTs: string;
  readonly traceId?: string | undefined;
  readonly xid?: number | undefined;
  readonly database?: string | undefined;
  readonly table?: string | undefined;
  readonly keyColumns?: readonly string[] | undefined;
  readonly columnTypes?: Readonly<Record<string, number>> | undefined;
}

/** An EventRef of a change on the bus (what a middle stage orders and dedupes by). */
export type ChangeRef = EventRef & { readonly kind: 'change' };

/** A change as a middle stage sees it: its ref and order key, and its bytes to forward. */
export interface WireRef {
  readonly kind: 'change';
  readonly ref: ChangeRef;
  readonly key: OrderKey;
  readonly bytes: Uint8Array;
  /** Where it came from, when its message had a matching index line (see ItemOrigin). */
  readonly origin?: ItemOrigin;
}

/**
 * An item's place in the indexed message it was read from. A BatchCutter given every item
 * of one such message, in order and nothing else, sends that message's bytes as they are
 * (index line included: it names exactly these items) instead of building them again —
 * the usual case in a relay (a gate that dropped nothing, a reorderer of one source).
 */
export interface ItemOrigin {
  readonly message: MessageOrigin;
  /** The item's position among the message's items (0-based). */
  readonly index: number;
}

/** One per indexed message, shared by its items. */
export interface MessageOrigin {
  readonly data: Uint8Array;
  readonly count: number;
}

export type RawRefItem = WireRef | WireMark<SourceHeartbeat> | WireMark<SourceProgress> | WirePoison;
export type OrderedRefItem = WireRef | WireMark<PartitionHeartbeat> | WirePoison;

const INDEX_PREFIX = new TextEncoder().encode('{"kind":"index"');

const LF = 0x0a;
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const OPS = new Set(['insert', 'update', 'delete', 'truncate', 'read']);

function text(bytes: Uint8Array, start: number, end: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString('utf8');
}

/** The items of a raw-stream message (changes, source heartbeats, progress marks). */
export function decodeRawMessage(data: Uint8Array): RawItem[] {
  return decodeMessage(data, RAW_KINDS) as RawItem[];
}

/** The items of an ordered- or deduped-stream message (changes, partition watermarks). */
export function decodeOrderedMessage(data: Uint8Array): OrderedItem[] {
  return decodeMessage(data, ORDERED_KINDS) as OrderedItem[];
}

/** Splits a message into its items and checks each against `kinds`. Never throws. */
export function decodeMessage(data: Uint8Array, kinds: readonly WireKind[]): WireItem[] {
  // One Buffer view per message (no copy); items are decoded from it by byte range.
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.length);
  // The events of one transaction share their commit LSN and stamp: parse each text once.
  const cache: ParseCache = { lsnText: undefined, lsn: 0n as Lsn, lamportText: undefined, lamport: 0n };
  const ranges = itemRanges(data);
  const indexed = kinds.includes('change') && startsWith(data, [0, data.length], INDEX_PREFIX);
  if (indexed) {
    const whole = decodeWhole(buffer, data, ranges, kinds, cache);
    if (whole) return whole;
  }
  const index = indexed ? readIndex(data, ranges.length) : undefined;
  const items: WireItem[] = [];
  for (const [i, [start, end]] of ranges.entries()) {
    items.push(decodeItem(buffer, data, start, end, i, kinds, cache, index?.[i]));
  }
  return items;
}

/**
 * An indexed message in ONE JSON.parse: its lines joined into an array (`[index,item,…]`).
 * Issue 12: a parse per item cost the committer ~4.4 µs per small event, one per message
 * ~2.9 (measured standalone, 100-event messages). LF never occurs raw inside JSON, so
 * replacing each LF by a comma only joins the lines. The result is taken only when it is
 * unambiguous — exactly one value per line, the index valid for that count, every item a
 * plain object — else undefined and the message is decoded line by line, where a bad line
 * is poison alone. (A line that is two values and another that is half of one could still
 * balance out; one corrupted line cannot do both, and a producer that can write such lines
 * on the bus can as well write well-formed wrong events: that is the bus's permissions'
 * business, not the codec's.)
 */
function decodeWhole(buffer: Buffer, data: Uint8Array, ranges: readonly [number, number][], kinds: readonly WireKind[], cache: ParseCache): WireItem[] | undefined {
  let values: unknown;
  try {
    values = JSON.parse(`[${buffer.toString('utf8').replaceAll('\n', ',')}]`);
  } catch {
    return undefined;
  }
  if (!Array.isArray(values) || values.length !== ranges.length + 1) return undefined;
  const index = indexContext(values[0], ranges.length);
  if (!index) return undefined;
  const items: WireItem[] = [];
  for (let i = 0; i < ranges.length; i++) {
    const record: unknown = values[i + 1];
    if (typeof record !== 'object' || record === null || Array.isArray(record)) return undefined;
    const [start, end] = ranges[i] as [number, number];
    items.push(decodeRecord(record as Record<string, unknown>, data.subarray(start, end), i, kinds, cache, index, i));
  }
  return items;
}

/** Byte ranges of a message's items, its index line left out. */
function itemRanges(data: Uint8Array): [number, number][] {
  const ranges: [number, number][] = [];
  let start = 0;
  while (start <= data.length) {
    let end = data.indexOf(LF, start);
    if (end < 0) end = data.length;
    // Empty lines (a trailing LF) carry nothing; an empty message is one (poison) item.
    if (end > start || (ranges.length === 0 && start === 0 && end === data.length)) ranges.push([start, end]);
    start = end + 1;
  }
  if (ranges.length > 1 && startsWith(data, ranges[0] as [number, number], INDEX_PREFIX)) ranges.shift();
  return ranges;
}

function startsWith(data: Uint8Array, [start, end]: [number, number], prefix: Uint8Array): boolean {
  if (end - start < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (data[start + i] !== prefix[i]) return false;
  return true;
}

/** The raw stream's items as refs (see decodeRefs). */
export function decodeRawRefs(data: Uint8Array): RawRefItem[] {
  return decodeRefs(data, RAW_KINDS) as RawRefItem[];
}

/** The ordered stream's items as refs (see decodeRefs). */
export function decodeOrderedRefs(data: Uint8Array): OrderedRefItem[] {
  return decodeRefs(data, ORDERED_KINDS) as OrderedRefItem[];
}

/**
 * A message's items for a middle stage: changes as refs read from the index line, without
 * parsing them; a message without a (matching) index is parsed item by item instead.
 * Never throws.
 */
export function decodeRefs(data: Uint8Array, kinds: readonly WireKind[]): (WireRef | WireMark<SourceHeartbeat> | WireMark<SourceProgress> | WireMark<PartitionHeartbeat> | WirePoison)[] {
  const fromIndex = kinds.includes('change') ? refsFromIndex(data) : undefined;
  if (fromIndex) return fromIndex;
  return decodeMessage(data, kinds).map((item) => (item.kind === 'change' ? { kind: 'change', ref: item.value, key: item.key, bytes: item.bytes } : item));
}

/**
 * The index line's refs, one per item, with their shared context resolved (the strings
 * and objects of one transaction or table are shared by its refs); undefined when there
 * is no index line, or one that is malformed or does not match the `count` items.
 */
function readIndex(data: Uint8Array, count: number): ChangeRef[] | undefined {
  if (!startsWith(data, [0, data.length], INDEX_PREFIX)) return undefined;
  const first = data.indexOf(LF);
  if (first < 0) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(data.buffer, data.byteOffset, first).toString('utf8'));
  } catch {
    return undefined;
  }
  const index = indexContext(value, count);
  if (!index) return undefined;
  const out: ChangeRef[] = [];
  for (let i = 0; i < count; i++) {
    const txn = index.txns[index.txnOf[i] as number] as TxnContext;
    const table = index.tables[index.tableOf[i] as number] as TableContext;
    out.push({
      // The kind too: a relay hands the ref on as the change it stands for (no copy per event).
      kind: 'change',
      eventId: index.eventIds[i] as string,
      source: txn.source,
      lamport: txn.lamport,
      commitLsn: txn.commitLsn,
      seq: index.seqs[i] as number,
      commitTs: txn.commitTs,
      traceId: txn.traceId,
      xid: txn.xid,
      database: txn.database,
      table: table.table,
      keyColumns: table.keyColumns,
      columnTypes: table.columnTypes,
    });
  }
  return out;
}

/** A parsed index line, checked: per item its event id, seq, and transaction and table rows. */
interface IndexContext {
  readonly txns: readonly TxnContext[];
  readonly tables: readonly TableContext[];
  readonly eventIds: readonly string[];
  readonly seqs: readonly number[];
  readonly txnOf: readonly number[];
  readonly tableOf: readonly number[];
}

/** The parsed index line `value` checked for `count` items; undefined when it is not one. */
function indexContext(value: unknown, count: number): IndexContext | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { kind, txns, tables, refs } = value as { kind?: unknown; txns?: unknown; tables?: unknown; refs?: unknown };
  if (kind !== 'index' || !Array.isArray(txns) || !Array.isArray(tables) || !Array.isArray(refs) || refs.length !== count) return undefined;
  const txnRows: TxnContext[] = [];
  for (const row of txns as unknown[]) {
    if (!Array.isArray(row) || row.length !== 7) return undefined;
    const [source, lamport, commitLsn, commitTs, xid, traceId, database] = row as unknown[];
    if (!nonEmpty(source) || typeof lamport !== 'string' || typeof commitLsn !== 'string' || typeof commitTs !== 'string') return undefined;
    txnRows.push({
      source: source as string,
      lamport,
      commitLsn,
      commitTs,
      xid: typeof xid === 'number' ? xid : undefined,
      traceId: typeof traceId === 'string' ? traceId : undefined,
      database: typeof database === 'string' ? database : undefined,
    });
  }
  const tableRows: TableContext[] = [];
  for (const row of tables as unknown[]) {
    if (!Array.isArray(row) || row.length !== 3) return undefined;
    const [table, keyColumns, columnTypes] = row as unknown[];
    tableRows.push({
      table: typeof table === 'string' ? table : undefined,
      keyColumns: Array.isArray(keyColumns) ? (keyColumns as string[]) : undefined,
      columnTypes: typeof columnTypes === 'object' && columnTypes !== null && !Array.isArray(columnTypes) ? (columnTypes as Record<string, number>) : undefined,
    });
  }
  const eventIds: string[] = [];
  const seqs: number[] = [];
  const txnOf: number[] = [];
  const tableOf: number[] = [];
  for (const row of refs as unknown[]) {
    if (!Array.isArray(row) || row.length !== 4) return undefined;
    const [eventId, txnIndex, seq, tableIndex] = row as unknown[];
    if (!nonEmpty(eventId) || typeof txnIndex !== 'number' || !txnRows[txnIndex] || typeof tableIndex !== 'number' || !tableRows[tableIndex]) return undefined;
    if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 0) return undefined;
    eventIds.push(eventId as string);
    seqs.push(seq);
    txnOf.push(txnIndex);
    tableOf.push(tableIndex);
  }
  return { txns: txnRows, tables: tableRows, eventIds, seqs, txnOf, tableOf };
}

interface TxnContext {
  readonly source: string;
  readonly lamport: string;
  readonly commitLsn: string;
  readonly commitTs: string;
  readonly xid: number | undefined;
  readonly traceId: string | undefined;
  readonly database: string | undefined;
}

interface TableContext {
  readonly table: string | undefined;
  readonly keyColumns: readonly string[] | undefined;
  readonly columnTypes: Readonly<Record<string, number>> | undefined;
}

function refsFromIndex(data: Uint8Array): WireRef[] | undefined {
  const ranges = itemRanges(data);
  const refs = readIndex(data, ranges.length);
  if (!refs) return undefined;
  const cache: ParseCache = { lsnText: undefined, lsn: 0n as Lsn, lamportText: undefined, lamport: 0n };
  const items: WireRef[] = [];
  const message: MessageOrigin = { data, count: refs.length };
  for (const [i, ref] of refs.entries()) {
    const key = keyOf(ref.lamport, ref.source, ref.commitLsn, ref.seq, cache);
    if (!key) return undefined;
    const [start, end] = ranges[i] as [number, number];
    items.push({ kind: 'change', ref, key, bytes: data.subarray(start, end), origin: { message, index: i } });
  }
  return items;
}

/** An order key from its texts (cached across a transaction's events); undefined when they are not one. */
function keyOf(lamportText: string, source: string, lsnText: string, seq: number, cache: ParseCache): OrderKey | undefined {
  let commitLsn: Lsn;
  if (lsnText === cache.lsnText) commitLsn = cache.lsn;
  else {
    try {
      commitLsn = Lsn.parse(lsnText);
    } catch {
      return undefined;
    }
    cache.lsnText = lsnText;
    cache.lsn = commitLsn;
  }
  let lamport: bigint;
  if (lamportText === cache.lamportText) lamport = cache.lamport;
  else {
    if (!DECIMAL.test(lamportText)) return undefined;
    lamport = BigInt(lamportText);
    cache.lamportText = lamportText;
    cache.lamport = lamport;
  }
  return { lamport, source, commitLsn, seq };
}

interface ParseCache {
  lsnText: string | undefined;
  lsn: Lsn;
  lamportText: string | undefined;
  lamport: bigint;
}

function decodeItem(buffer: Buffer, data: Uint8Array, start: number, end: number, index: number, kinds: readonly WireKind[], cache: ParseCache, ref?: EventRef): WireItem {
  const bytes = data.subarray(start, end);
  let value: unknown;
  try {
    value = JSON.parse(buffer.toString('utf8', start, end));
  } catch {
    return { kind: 'poison', reason: 'not valid JSON', code: 'INVALID_JSON', bytes, index };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { kind: 'poison', reason: 'not a JSON object', code: 'INVALID_MESSAGE', bytes, index };
  }
  return decodeRecord(value as Record<string, unknown>, bytes, index, kinds, cache, ref);
}

/**
 * One parsed item checked against `kinds`; a change gets the fields it shares with its
 * transaction and table from its index entry: `ref`, or row `at` of a parsed index.
 */
function decodeRecord(record: Record<string, unknown>, bytes: Uint8Array, index: number, kinds: readonly WireKind[], cache: ParseCache, ref?: EventRef | IndexContext, at = 0): WireItem {
  const kind = record.kind;
  if (typeof kind !== 'string' || !(kinds as readonly string[]).includes(kind)) {
    return { kind: 'poison', reason: `unknown or unexpected kind ${JSON.stringify(kind)} (expected ${kinds.join(' or ')})`, code: 'UNKNOWN_KIND', bytes, index, ...identityOf(record) };
  }
  switch (kind) {
    case 'change': {
      // The fields it shares with its transaction and table come from the index.
      if (ref !== undefined) {
        if ('txnOf' in ref) withIndexRow(record, ref, at);
        else withContext(record, ref);
      }
      const problem = changeProblem(record);
      if (problem !== undefined) return malformed(kind, problem, record, bytes, index);
      // Optional fields of older or slimmer producers get their neutral value.
      if (record.unchanged === undefined) record.unchanged = [];
      if (record.before === undefined) record.before = null;
      if (record.after === undefined) record.after = null;
      const event = record as unknown as ChangeEvent;
      // keyOf checks lamport and commitLsn once per transaction (cached), not per event.
      const key = keyOf(event.lamport, event.source, event.commitLsn, event.seq, cache);
      if (!key) return malformed(kind, DECIMAL.test(event.lamport) ? 'commitLsn must be an LSN (X/Y)' : 'lamport must be a decimal string', record, bytes, index);
      return { kind: 'change', value: event, key, bytes };
    }
    case 'heartbeat': {
      const problem = lamportProblem(record) ?? lsnProblem(record, 'lsn') ?? sourceProblem(record);
      return problem === undefined ? { kind, value: record as unknown as SourceHeartbeat, bytes } : malformed(kind, problem, record, bytes, index);
    }
    case 'progress': {
      const problem = sourceProblem(record) ?? lamportProblem(record) ?? lsnProblem(record, 'commitLsn') ?? seqProblem(record);
      return problem === undefined ? { kind, value: record as unknown as SourceProgress, bytes } : malformed(kind, problem, record, bytes, index);
    }
    default: {
      const problem = lamportProblem(record) ?? positionsProblem(record);
      return problem === undefined ? { kind: 'watermark', value: record as unknown as PartitionHeartbeat, bytes } : malformed(kind, problem, record, bytes, index);
    }
  }
}

function malformed(kind: string, problem: string, record: Record<string, unknown>, bytes: Uint8Array, index: number): WirePoison {
  return { kind: 'poison', reason: `malformed ${kind}: ${problem}`, code: 'INVALID_MESSAGE', bytes, index, ...identityOf(record) };
}

/** What a poison item says of itself, for its dead letter. */
export function poisonIdentity(item: WirePoison): { eventId?: string; table?: string; lsn?: string } {
  return {
    ...(item.eventId !== undefined ? { eventId: item.eventId } : {}),
    ...(item.table !== undefined ? { table: item.table } : {}),
    ...(item.lsn !== undefined ? { lsn: item.lsn } : {}),
  };
}

function identityOf(r: Record<string, unknown>): { eventId?: string; table?: string; lsn?: string } {
  return {
    ...(typeof r.eventId === 'string' ? { eventId: r.eventId } : {}),
    ...(typeof r.table === 'string' ? { table: r.table } : {}),
    ...(typeof r.lsn === 'string' ? { lsn: r.lsn } : {}),
  };
}

function isLsn(value: unknown): boolean {
  if (typeof value !== 'string') return false;
  try {
    Lsn.parse(value);
    return true;
  } catch {
    return false;
  }
}

const nonEmpty = (value: unknown): boolean => typeof value === 'string' && value.length > 0;

function sourceProblem(r: Record<string, unknown>): string | undefined {
  return nonEmpty(r.source) ? undefined : 'source must be a non-empty string';
}

function lamportProblem(r: Record<string, unknown>): string | undefined {
  return typeof r.lamport === 'string' && DECIMAL.test(r.lamport) ? undefined : 'lamport must be a decimal string';
}

function lsnProblem(r: Record<string, unknown>, field: 'lsn' | 'commitLsn'): string | undefined {
  return isLsn(r[field]) ? undefined : `${field} must be an LSN (X/Y)`;
}

function seqProblem(r: Record<string, unknown>): string | undefined {
  return typeof r.seq === 'number' && Number.isInteger(r.seq) && r.seq >= 0 ? undefined : 'seq must be an integer >= 0';
}

function changeProblem(r: Record<string, unknown>): string | undefined {
  if (!nonEmpty(r.source)) return 'source must be a non-empty string';
  if (!nonEmpty(r.table)) return 'table must be a non-empty string';
  if (!nonEmpty(r.eventId)) return 'eventId must be a non-empty string';
  if (!OPS.has(r.op as string)) return "op must be 'insert', 'update', 'delete', 'truncate' or 'read'";
  if (!Array.isArray(r.key)) return 'key must be an array';
  if (!Array.isArray(r.keyColumns)) return 'keyColumns must be an array';
  if (typeof r.commitLsn !== 'string') return 'commitLsn must be an LSN (X/Y)';
  // lamport and commitLsn are checked where the order key is built (once per transaction).
  if (typeof r.lamport !== 'string') return 'lamport must be a decimal string';
  return seqProblem(r);
}

function positionsProblem(r: Record<string, unknown>): string | undefined {
  const positions = r.positions;
  if (typeof positions !== 'object' || positions === null || Array.isArray(positions)) return 'positions must be an object';
  for (const [source, lsn] of Object.entries(positions)) {
    if (!isLsn(lsn)) return `positions.${source} must be an LSN (X/Y)`;
  }
  return undefined;
}

/** One item's bytes: the whole value (a mark, or a change that may travel without an index). */
export function encodeItem(value: RawMessage | OrderedMessage): Uint8Array {
  return utf8(value);
}

/**
 * A change item for an indexed message (BatchCutter with its ref): only the event's own
 * fields; what it shares with its transaction and table goes into the index line once.
 */
export function encodeChangeItem(event: ChangeEvent): Uint8Array {
  // The usual event, no field beyond ChangeEvent's: its own fields named (cheaper than
  // taking the context fields out).
  if (onlyKnownFields(event)) {
    const item = { kind: event.kind, op: event.op, key: event.key, before: event.before, after: event.after, unchanged: event.unchanged, lsn: event.lsn };
    if (event.snapshot !== undefined) return utf8({ ...item, snapshot: event.snapshot });
    if (event.snapshotPending !== undefined) return utf8({ ...item, snapshotPending: event.snapshotPending });
    return utf8(item);
  }
  // A field a newer producer adds travels too: everything but the context fields.
  const { source: _source, database: _database, table: _table, keyColumns: _keyColumns, columnTypes: _columnTypes, commitLsn: _commitLsn, seq: _seq, xid: _xid, commitTs: _commitTs, lamport: _lamport, eventId: _eventId, traceId: _traceId, ...own } = event;
  return utf8(own);
}

/** ChangeEvent's fields: the slim item names its own ones, the index carries the rest. */
const CHANGE_FIELDS: ReadonlySet<string> = new Set([
  'kind', 'source', 'database', 'table', 'keyColumns', 'key', 'op', 'before', 'after', 'unchanged', 'columnTypes',
  'lsn', 'commitLsn', 'seq', 'xid', 'commitTs', 'lamport', 'eventId', 'traceId', 'snapshot', 'snapshotPending',
]);

function onlyKnownFields(event: object): boolean {
  for (const field of Object.keys(event)) if (!CHANGE_FIELDS.has(field)) return false;
  return true;
}

/**
 * JSON as UTF-8. Buffer.from, not TextEncoder: issue 12 measured TextEncoder.encode at
 * ~2.4 µs more per small event (a Buffer is a Uint8Array; small ones share a pooled slab).
 */
function utf8(value: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** The index's context on a parsed item (its values win over the item's own). */
function withContext(record: Record<string, unknown>, ref: EventRef): void {
  putContext(record, ref, ref, ref.seq, ref.eventId);
}

/** Row `at` of a parsed index on its parsed item, as withContext does with a ref (no ref built). */
function withIndexRow(record: Record<string, unknown>, index: IndexContext, at: number): void {
  putContext(record, index.txns[index.txnOf[at] as number] as TxnContext, index.tables[index.tableOf[at] as number] as TableContext, index.seqs[at] as number, index.eventIds[at] as string);
}

/** A transaction's and a table's context (a ref is both) and the item's own seq and id, on its parsed item. */
function putContext(
  record: Record<string, unknown>,
  txn: Pick<EventRef, 'source' | 'lamport' | 'commitLsn' | 'commitTs' | 'xid' | 'traceId' | 'database'>,
  table: Pick<EventRef, 'table' | 'keyColumns' | 'columnTypes'>,
  seq: number,
  eventId: string,
): void {
  record.source = txn.source;
  record.lamport = txn.lamport;
  record.commitLsn = txn.commitLsn;
  record.commitTs = txn.commitTs;
  record.seq = seq;
  record.eventId = eventId;
  if (txn.xid !== undefined) record.xid = txn.xid;
  if (txn.traceId !== undefined) record.traceId = txn.traceId;
  if (txn.database !== undefined) record.database = txn.database;
  if (table.table !== undefined) record.table = table.table;
  if (table.keyColumns !== undefined) record.keyColumns = table.keyColumns;
  if (table.columnTypes !== undefined) record.columnTypes = table.columnTypes;
}

/**
 * An item as a whole event, for a dead letter (which must be replayable on its own): the
 * item's fields with its ref's context. The item's bytes as they are when they do not parse.
 */
export function standaloneItem(bytes: Uint8Array, ref: EventRef): Uint8Array {
  let record: unknown;
  try {
    record = JSON.parse(itemText(bytes));
  } catch {
    return bytes;
  }
  if (typeof record !== 'object' || record === null || Array.isArray(record)) return bytes;
  withContext(record as Record<string, unknown>, ref);
  return utf8(record);
}

/** Items joined into one message (LF between them); one item is returned as it is. */
export function joinItems(items: readonly Uint8Array[]): Uint8Array {
  if (items.length === 1) return items[0] as Uint8Array;
  let length = items.length - 1;
  for (const item of items) length += item.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const [i, item] of items.entries()) {
    if (i > 0) out[at++] = LF;
    out.set(item, at);
    at += item.length;
  }
  return out;
}

/** Bytes `joinItems` adds for `count` items of `bytes` in all. */
export function joinedLength(count: number, bytes: number): number {
  return count === 0 ? 0 : bytes + count - 1;
}

/** An item's text, for a dead letter's payload. */
export function itemText(bytes: Uint8Array): string {
  return text(bytes, 0, bytes.length);
}

/**
 * Collects change events into messages: `add` says when the message in hand is full (by
 * count or bytes); `take` hands it over with its bounds. An item larger than `maxBytes`
 * travels alone. Used by the reader (one per partition) and the reorderer.
 */
export class BatchCutter {
  readonly #maxEvents: number;
  readonly #maxBytes: number;
  #items: Uint8Array[] = [];
  #bytes = 0;
  #first: OrderKey | undefined;
  #last: OrderKey | undefined;
  #firstEvent: SoleEvent | undefined;
  /** One ref per item while every item came with one (then the message gets an index line). */
  #refs: EventRef[] | undefined = [];
  /** The indexed message every item so far came from, in order from its first item; else undefined. */
  #origin: MessageOrigin | undefined;

  constructor(limits: { maxEvents?: number | undefined; maxBytes?: number | undefined } = {}) {
    this.#maxEvents = Math.max(1, limits.maxEvents ?? WIRE_DEFAULTS.batchMaxEvents);
    this.#maxBytes = Math.max(1, limits.maxBytes ?? WIRE_DEFAULTS.batchMaxBytes);
  }

  get count(): number {
    return this.#items.length;
  }

  get bytes(): number {
    return joinedLength(this.#items.length, this.#bytes);
  }

  /**
   * True when the message in hand is at least half full (count or bytes): a relay joining
   * small input messages into larger ones sends it at an input message's end instead, so a
   * large input message still goes out whole (ItemOrigin) and small ones are joined.
   */
  get halfFull(): boolean {
    return this.#items.length * 2 >= this.#maxEvents || this.bytes * 2 >= this.#maxBytes;
  }

  /** True when `bytes` more would not fit in the message in hand (take it first). */
  wouldOverflow(bytes: number): boolean {
    return this.#items.length > 0 && this.bytes + 1 + bytes > this.#maxBytes;
  }

  /**
   * Adds one event; true when the message is now full. `event` (its ref: a ChangeEvent is
   * one) names it when it travels alone and goes into the message's index line.
   */
  add(item: Uint8Array, key: OrderKey, event?: EventRef, origin?: ItemOrigin): boolean {
    if (this.#items.length === 0) {
      this.#firstEvent = event;
      this.#origin = origin?.index === 0 ? origin.message : undefined;
    } else if (this.#origin !== undefined && (origin?.message !== this.#origin || origin.index !== this.#items.length)) {
      this.#origin = undefined;
    }
    if (event && this.#refs) this.#refs.push(event);
    else this.#refs = undefined;
    this.#items.push(item);
    this.#bytes += item.length;
    this.#first ??= key;
    this.#last = key;
    return this.#items.length >= this.#maxEvents || this.bytes >= this.#maxBytes;
  }

  /** The message in hand, or undefined when empty; the cutter is empty afterwards. */
  take(): CutBatch | undefined {
    if (this.#items.length === 0) return undefined;
    const refs = this.#refs;
    const origin = this.#origin;
    // Every item of one indexed message, in order: that message is this one, byte for byte.
    const whole = origin !== undefined && origin.count === this.#items.length;
    // With a ref for every item the message gets its index (its items may be slim); else each item is whole.
    const items = whole ? [] : refs ? [indexLine(refs), ...this.#items] : this.#items;
    const batch: CutBatch = {
      data: whole ? origin.data : joinItems(items),
      count: this.#items.length,
      firstKey: this.#first as OrderKey,
      lastKey: this.#last as OrderKey,
      ...(this.#items.length === 1 && this.#firstEvent ? { sole: this.#firstEvent } : {}),
    };
    this.#items = [];
    this.#refs = [];
    this.#origin = undefined;
    this.#firstEvent = undefined;
    this.#bytes = 0;
    this.#first = undefined;
    this.#last = undefined;
    return batch;
  }
}

/** The index line of `refs`: each transaction and table once (consecutive refs mostly share both). */
function indexLine(refs: readonly EventRef[]): Uint8Array {
  const txns: unknown[][] = [];
  const tables: unknown[][] = [];
  const rows: unknown[][] = [];
  let lastTxn: EventRef | undefined;
  let lastTable: EventRef | undefined;
  let txnIndex = -1;
  let tableIndex = -1;
  /** The first ref of each table row written. */
  const tableRefs: EventRef[] = [];
  const sameTxn = (a: EventRef, b: EventRef): boolean =>
    a.commitLsn === b.commitLsn && a.lamport === b.lamport && a.source === b.source && a.commitTs === b.commitTs && a.xid === b.xid && a.traceId === b.traceId && a.database === b.database;
  const sameTable = (a: EventRef, b: EventRef): boolean => a.table === b.table && a.keyColumns === b.keyColumns && a.columnTypes === b.columnTypes;
  for (const ref of refs) {
    if (!lastTxn || !sameTxn(lastTxn, ref)) {
      txnIndex = txns.push([ref.source, ref.lamport, ref.commitLsn, ref.commitTs ?? '', ref.xid ?? null, ref.traceId ?? null, ref.database ?? null]) - 1;
      lastTxn = ref;
    }
    if (!lastTable || !sameTable(lastTable, ref)) {
      tableIndex = tables.findIndex((_, i) => sameTable(tableRefs[i] as EventRef, ref));
      if (tableIndex < 0) {
        tableIndex = tables.push([ref.table ?? null, ref.keyColumns ?? null, ref.columnTypes ?? null]) - 1;
        tableRefs.push(ref);
      }
      lastTable = ref;
    }
    rows.push([ref.eventId, txnIndex, ref.seq, tableIndex]);
  }
  return utf8({ kind: 'index', txns, tables, refs: rows });
}

export interface CutBatch {
  readonly data: Uint8Array;
  readonly count: number;
  readonly firstKey: OrderKey;
  readonly lastKey: OrderKey;
  /** The event, when it travels alone (and its ids were given). */
  readonly sole?: SoleEvent;
}

export interface SoleEvent {
  readonly eventId: string;
  readonly traceId?: string | undefined;
}

/** The batch headers (`Cdc-Count`, `Cdc-First-Key`, `Cdc-Last-Key`; `Cdc-Trace-Id` of an event alone) of a cut batch. */
export function batchHeaders(batch: Pick<CutBatch, 'count' | 'firstKey' | 'lastKey' | 'sole'>): Record<string, string> {
  const headers: Record<string, string> = {
    [Headers.Count]: String(batch.count),
    [Headers.FirstKey]: formatOrderKey(batch.firstKey),
    [Headers.LastKey]: formatOrderKey(batch.lastKey),
  };
  if (batch.sole?.traceId) headers[Headers.TraceId] = batch.sole.traceId;
  return headers;
}

/**
 * A message id from a batch's first and last positions (`<scope>:<first>..<last>`); an
 * event travelling alone keeps its event id. The same events cut the same way get the
 * same id (JetStream absorbs the repeat); cut differently they do not, and per-event
 * identity downstream absorbs them instead.
 */
export function batchMsgId(scope: string, batch: Pick<CutBatch, 'count' | 'firstKey' | 'lastKey' | 'sole'>): string {
  if (batch.sole) return batch.sole.eventId;
  const position = (key: OrderKey): string => `${key.source}@${Lsn.format(key.commitLsn)}/${key.seq}`;
  return batch.count === 1 ? `${scope}:${position(batch.firstKey)}` : `${scope}:${position(batch.firstKey)}..${position(batch.lastKey)}`;
}
