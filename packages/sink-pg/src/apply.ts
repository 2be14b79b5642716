/**
 * Turning change events into guarded SQL (pure: no connection here).
 *
 * Set-based: one statement per group of rows, its values one array parameter per column
 * (a binary text[], each value cast to the column's type), so the text depends only on the
 * shape — table, op kind, column set, column types — and runs as a NAMED prepared
 * statement: PostgreSQL parses and plans it once per connection, not per batch (a
 * multi-row VALUES with thousands of parameters cost it 15–22 µs per row to parse and
 * plan; bench/sink-apply.ts).
 *
 *   insert/update → INSERT INTO t AS t (cols…, _cdc_lsn, _cdc_seq)
 *                   SELECT v.c0::type0, … FROM unnest($1::text[], …, $n::pg_lsn[], $n+1::integer[]) AS v(c0, …, _cdc_lsn, _cdc_seq)
 *                   ON CONFLICT (pk) DO UPDATE SET col = EXCLUDED.col, …
 *                   WHERE (t._cdc_lsn IS NULL OR (t._cdc_lsn, t._cdc_seq) < (EXCLUDED._cdc_lsn, EXCLUDED._cdc_seq))
 *   delete        → DELETE FROM t AS t USING unnest($1::text[], …) AS v(c0…, _cdc_lsn, _cdc_seq)
 *                   WHERE t.pk = v.c0::k0type … AND t.pk0 = ANY(…) AND (t._cdc_lsn IS NULL OR (t._cdc_lsn, t._cdc_seq) < (v._cdc_lsn, v._cdc_seq))
 *   truncate      → TRUNCATE t
 *
 *   update with unchanged TOAST columns (pgoutput 'u', PITFALLS 5, 29) → never an insert:
 *                   WITH v AS (SELECT * FROM unnest(…, items)), u AS (UPDATE t … FROM v WHERE pk AND guard RETURNING 1)
 *                   SELECT count(u), [items of v whose key has no sink row at all]
 *                   The sink keeps its values of the unchanged columns. A row the sink does
 *                   not have is NOT inserted (the upsert would store NULL where the source
 *                   has a value): the statement reports it, and the event is refused
 *                   (SINK_ROW_ABSENT, dead-lettered with the reason) — never a partial row.
 *                   A key change with unchanged columns copies them from the old row
 *                   (INSERT … SELECT, one row, scalar parameters); when that writes nothing
 *                   and the old row is not in the sink (and it is no replay), the event is
 *                   refused the same way.
 *
 * `_cdc_lsn IS NULL` lets the first change win over a row that was in the sink before
 * the pipeline (no version yet). Values travel
 * as text cast to the column's type without modifier: an explicit cast to
 * varchar(3) would truncate silently, while the assignment to the column refuses.
 *
 * Consecutive changes of the same table and shape share one statement. Order is kept: a
 * group never holds the same key twice (ON CONFLICT cannot touch one row twice in a
 * statement, and the second change must see the first), so insert → update → delete of
 * one key in a batch are three statements, applied in that order.
 */
import { createHash } from 'node:crypto';
import { keyText, type ChangeEvent } from '@cdc/core';
import { SinkRefusedError } from './errors.ts';
import { GUARD_LSN, GUARD_SEQ, quoteIdent, type SinkColumn, type SinkTable } from './schema.ts';

export type RowOp = UpsertOp | DeleteOp | TruncateOp;

interface OpBase {
  readonly table: SinkTable;
  /** Index of the event in the batch, so a refused statement can be traced to events. */
  readonly item: number;
}

export interface UpsertOp extends OpBase {
  readonly kind: 'upsert';
  /** Sink column names in table order. */
  readonly columns: readonly string[];
  readonly values: readonly (string | null)[];
  readonly keyText: string;
  readonly lsn: string;
  readonly seq: number;
  /**
   * A key change whose new row came with unchanged TOAST columns: their values are
   * copied from the sink row at the old key (which the following delete removes).
   */
  readonly copyFrom?: { readonly keyValues: readonly (string | null)[]; readonly columns: readonly string[] };
  /**
   * Sink columns the event left out as unchanged TOAST: the op may only update an existing
   * row (an insert would write NULL in them). Empty when the event carries the whole row.
   */
  readonly unchanged: readonly string[];
  /**
   * A snapshot read: it writes nothing over a row that already holds exactly its values (a
   * row streamed before its chunk was read), so the sink's triggers see one write per change.
   */
  readonly read?: true;
}

export interface DeleteOp extends OpBase {
  readonly kind: 'delete';
  /** Values of the sink's primary key, in key order. */
  readonly keyValues: readonly (string | null)[];
  readonly keyText: string;
  readonly lsn: string;
  readonly seq: number;
}

export interface TruncateOp extends OpBase {
  readonly kind: 'truncate';
}

export interface Statement {
  readonly text: string;
  /** Prepared-statement name (a digest of the text): parsed and planned once per connection. */
  readonly name?: string;
  /** Text, numbers, and Buffers: binary text[] arrays (see textArray). */
  readonly values: (string | number | null | Buffer)[];
  /**
   * The statement answers one row `(written int, absent int[])`: how many rows it wrote and
   * the batch items it could not apply because the sink has no row to update. Each of those
   * is refused with `absentRefusal(item)`.
   */
  readonly absentRefusal?: (item: number) => SinkRefusedError;
  /**
   * A statement of one item that may legitimately write nothing (a replay) or fail to
   * apply (a row the sink lacks): when it writes no row, `check` answers `ok`; not ok →
   * the item is refused with `refusal()`.
   */
  readonly ifNoRows?: {
    readonly check: { readonly text: string; readonly name?: string; readonly values: (string | number | null)[] };
    readonly refusal: () => SinkRefusedError;
  };
  /** Batch indexes of the events this statement applies. */
  readonly items: readonly number[];
  readonly table: string;
}

/**
 * The row operations of one event against its sink table, or why the sink cannot take it.
 * A primary-key change arriving as one update (old key in `before`) becomes a delete of
 * the old key and an upsert of the new one (PITFALLS 6).
 */
export function planEvent(event: ChangeEvent, table: SinkTable, item: number): RowOp[] | SinkRefusedError {
  if (event.op === 'truncate') return [{ kind: 'truncate', table, item }];
  if (event.op !== 'delete' && event.after !== null && event.unchanged.length === 0) {
    const layout = layouts.get(table);
    if (layout !== undefined) {
      const ops = planWithLayout(event, event.after, table, item, layout);
      if (ops !== undefined) return ops;
    }
  }
  return planSlow(event, table, item);
}

/**
 * How the rows of one table were last laid out (hand-written cache: most events of a table
 * carry the same columns in the same order): the event's column names in their order, and
 * the sink columns they write in table order (generated ones dropped). A row whose names
 * are exactly these is planned without sorting or a per-column object (planWithLayout);
 * any other row takes planSlow, which also renews the layout.
 */
interface RowLayout {
  readonly names: readonly string[];
  readonly columns: readonly string[];
  /** Where each primary-key column is in `columns`. */
  readonly keyAt: readonly number[];
}

const layouts = new WeakMap<SinkTable, RowLayout>();

function planWithLayout(
  event: ChangeEvent,
  row: Readonly<Record<string, string | null>>,
  table: SinkTable,
  item: number,
  layout: RowLayout,
): RowOp[] | undefined {
  const { names, columns, keyAt } = layout;
  let i = 0;
  for (const name in row) {
    if (names[i] !== name) return undefined;
    i++;
  }
  if (i !== names.length) return undefined;
  const values = new Array<string | null>(columns.length);
  for (let c = 0; c < columns.length; c++) values[c] = row[columns[c] as string] ?? null;
  const newKey = new Array<string | null>(keyAt.length);
  for (let k = 0; k < keyAt.length; k++) newKey[k] = values[keyAt[k] as number] ?? null;
  const newKeyText = keyText(newKey);
  const ops: RowOp[] = [];
  if (event.op === 'update' && event.before !== null) {
    const oldKey = keyFrom(event, table, event.before);
    if (typeof oldKey !== 'string') {
      const oldKeyText = keyText(oldKey);
      if (oldKeyText !== newKeyText) ops.push({ kind: 'delete', table, item, keyValues: oldKey, keyText: oldKeyText, lsn: event.commitLsn, seq: event.seq });
    }
  }
  const upsert: UpsertOp =
    event.op === 'read'
      ? { kind: 'upsert', table, item, columns, values, keyText: newKeyText, lsn: event.commitLsn, seq: event.seq, unchanged: NONE, read: true }
      : { kind: 'upsert', table, item, columns, values, keyText: newKeyText, lsn: event.commitLsn, seq: event.seq, unchanged: NONE };
  ops.push(upsert);
  return ops;
}

const NONE: readonly string[] = Object.freeze([]);

/** The values of the sink's primary key in `row`, else in the event's key; or the first key column found in neither. */
function keyFrom(event: ChangeEvent, table: SinkTable, row: Readonly<Record<string, string | null>> | null): (string | null)[] | string {
  const values: (string | null)[] = [];
  for (const column of table.primaryKey) {
    const index = event.keyColumns.indexOf(column);
    const value = row && column in row ? row[column] : index >= 0 ? event.key[index] : undefined;
    if (value === undefined) return column;
    values.push(value);
  }
  return values;
}

function planSlow(event: ChangeEvent, table: SinkTable, item: number): RowOp[] | SinkRefusedError {
  const context = { table: table.display, lsn: event.commitLsn, eventId: event.eventId };
  if (event.op === 'delete') {
    const key = keyFrom(event, table, event.before);
    if (typeof key === 'string') {
      return new SinkRefusedError('key_missing', `delete on ${table.display} lacks the value of key column ${key}`, { ...context, column: key });
    }
    return [{ kind: 'delete', table, item, keyValues: key, keyText: keyText(key), lsn: event.commitLsn, seq: event.seq }];
  }

  const row = event.after;
  if (row === null) {
    return new SinkRefusedError('row_missing', `${event.op} on ${table.display} carries no new row`, context);
  }
  const unchanged = new Set(event.unchanged);
  const written: { column: string; position: number; value: string | null }[] = [];
  for (const [column, value] of Object.entries(row)) {
    if (unchanged.has(column) || column === GUARD_LSN || column === GUARD_SEQ) continue;
    const sinkColumn = table.columns.get(column);
    if (sinkColumn === undefined) {
      return new SinkRefusedError('column_missing', `sink table ${table.display} has no column ${column}`, { ...context, column });
    }
    // The sink computes generated columns itself; writing them is an error.
    if (sinkColumn.generated) continue;
    written.push({ column, position: sinkColumn.position, value });
  }
  // The key must be written: take it from the event's key if the row lacks it.
  const newKey = keyFrom(event, table, row);
  if (typeof newKey === 'string') {
    return new SinkRefusedError('key_missing', `${event.op} on ${table.display} lacks the value of key column ${newKey}`, { ...context, column: newKey });
  }
  let keyInRow = true;
  table.primaryKey.forEach((column, index) => {
    if (!written.some((entry) => entry.column === column)) {
      keyInRow = false;
      written.push({ column, position: table.columns.get(column)?.position ?? 0, value: newKey[index] ?? null });
    }
  });
  written.sort((a, b) => a.position - b.position);
  const columns = written.map((entry) => entry.column);
  // A whole row with its key and no guard column in it: later rows named the same way take planWithLayout.
  if (unchanged.size === 0 && keyInRow && !(GUARD_LSN in row) && !(GUARD_SEQ in row)) {
    layouts.set(table, { names: Object.keys(row), columns, keyAt: table.primaryKey.map((column) => columns.indexOf(column)) });
  }

  let copyFrom: UpsertOp['copyFrom'];
  if (event.op === 'insert' && event.before !== null && unchanged.size > 0) {
    const oldKey = keyFrom(event, table, event.before);
    if (typeof oldKey === 'string') {
      return new SinkRefusedError('key_missing', `moved row on ${table.display} lacks the old value of key column ${oldKey}`, { ...context, column: oldKey });
    }
    const copied = [...unchanged].filter((column) => table.columns.has(column) && !table.columns.get(column)?.generated);
    copyFrom = { keyValues: oldKey, columns: copied.sort((a, b) => (table.columns.get(a)?.position ?? 0) - (table.columns.get(b)?.position ?? 0)) };
  }

  const unchangedInSink =
    copyFrom === undefined ? [...unchanged].filter((column) => table.columns.has(column) && !table.columns.get(column)?.generated) : [];

  const ops: RowOp[] = [];
  if (event.op === 'update' && event.before !== null) {
    const oldKey = keyFrom(event, table, event.before);
    if (typeof oldKey !== 'string' && keyText(oldKey) !== keyText(newKey)) {
      ops.push({ kind: 'delete', table, item, keyValues: oldKey, keyText: keyText(oldKey), lsn: event.commitLsn, seq: event.seq });
    }
  }
  ops.push({
    kind: 'upsert',
    table,
    item,
    columns,
    values: written.map((entry) => entry.value),
    keyText: keyText(newKey),
    lsn: event.commitLsn,
    seq: event.seq,
    unchanged: unchangedInSink,
    ...(copyFrom ? { copyFrom } : {}),
    ...(event.op === 'read' ? { read: true as const } : {}),
  });
  return ops;
}

export interface GroupLimits {
  /** Values (rows × columns) per statement: bounds one statement's size. */
  readonly maxParams: number;
  readonly maxRows: number;
}

export const DEFAULT_GROUP_LIMITS: GroupLimits = { maxParams: 60_000, maxRows: 1_000 };

/** Consecutive ops of one table and shape, without a repeated key, as few statements as possible. */
export function buildStatements(ops: readonly RowOp[], limits: GroupLimits = DEFAULT_GROUP_LIMITS): Statement[] {
  const statements: Statement[] = [];
  let group: RowOp[] = [];
  let keys = new Set<string>();
  let params = 0;
  const flush = (): void => {
    if (group.length > 0) statements.push(statementFor(group));
    group = [];
    keys = new Set();
    params = 0;
  };
  for (const op of ops) {
    const head = group[0];
    const cost = paramsOf(op);
    const fits =
      head !== undefined &&
      op.kind !== 'truncate' &&
      head.kind === op.kind &&
      head.table === op.table &&
      (op.kind !== 'upsert' || (head.kind === 'upsert' && sameShape(head, op))) &&
      !(op.kind === 'upsert' && op.copyFrom) &&
      !(head.kind === 'upsert' && head.copyFrom) &&
      !keys.has(op.keyText) &&
      group.length < limits.maxRows &&
      params + cost <= limits.maxParams;
    if (!fits) flush();
    group.push(op);
    if (op.kind !== 'truncate') keys.add(op.keyText);
    params += cost;
  }
  flush();
  return statements;
}

/**
 * Whether two upserts can share one statement: the same columns (usually the same array,
 * from one RowLayout) and the same variant. An update-only op (unchanged columns left out)
 * never shares a statement with a full upsert, nor a read with a change.
 */
function sameShape(a: UpsertOp, b: UpsertOp): boolean {
  if (a.unchanged.length > 0 !== b.unchanged.length > 0 || (a.read === true) !== (b.read === true)) return false;
  if (a.columns === b.columns) return true;
  if (a.columns.length !== b.columns.length) return false;
  for (let i = 0; i < a.columns.length; i++) if (a.columns[i] !== b.columns[i]) return false;
  return true;
}

/** Why an event with unchanged columns cannot be applied to a row the sink does not have. */
function absentRowRefusal(op: UpsertOp, moved: boolean): SinkRefusedError {
  const left = moved ? (op.copyFrom?.columns ?? []) : op.unchanged;
  const where = moved ? `its old key (the row moved to key (${op.keyText}))` : `key (${op.keyText})`;
  return new SinkRefusedError(
    'row_absent',
    `${op.table.display} has no row at ${where} for a change that left ${left.join(', ')} out as unchanged (TOAST): ` +
      `writing it would store NULL where the source has a value; snapshot the table (or set REPLICA IDENTITY FULL on the source) and replay this letter`,
    { table: op.table.display },
  );
}

function paramsOf(op: RowOp): number {
  if (op.kind === 'upsert') return op.columns.length + 2;
  if (op.kind === 'delete') return op.keyValues.length + 2;
  return 0;
}

function statementFor(group: readonly RowOp[]): Statement {
  const head = group[0];
  if (head === undefined) throw new RangeError('empty statement group');
  const items = [...new Set(group.map((op) => op.item))];
  const table = head.table;
  if (head.kind === 'truncate') return { text: `TRUNCATE ${table.qualified}`, values: [], items, table: table.display };
  const castOf = (column: string): string => table.columns.get(column)?.castType ?? 'text';
  const guardNewer = (row: string): string =>
    `(t.${GUARD_LSN} IS NULL OR (t.${GUARD_LSN}, t.${GUARD_SEQ}) < (${row}.${GUARD_LSN}, ${row}.${GUARD_SEQ}))`;

  if (head.kind === 'upsert' && head.copyFrom) {
    // INSERT … SELECT from the old row: new values as parameters, unchanged ones copied.
    const values: (string | number | null)[] = [];
    const param = (value: string | number | null, type: string): string => {
      values.push(value);
      return `$${values.length}::${type}`;
    };
    const { copyFrom } = head;
    const selected = [
      ...head.columns.map((column, i) => param(head.values[i] ?? null, castOf(column))),
      ...copyFrom.columns.map((column) => `old.${quoteIdent(column)}`),
      param(head.lsn, 'pg_lsn'),
      param(head.seq, 'integer'),
    ];
    const matches = table.primaryKey.map((column, i) => `old.${quoteIdent(column)} = ${param(copyFrom.keyValues[i] ?? null, castOf(column))}`);
    const pk = new Set(table.primaryKey);
    const sets = [...head.columns, ...copyFrom.columns]
      .filter((column) => !pk.has(column))
      .concat([GUARD_LSN, GUARD_SEQ])
      .map((column) => `${quoteIdent(column)} = EXCLUDED.${quoteIdent(column)}`);
    const text =
      `INSERT INTO ${table.qualified} AS t (${[...head.columns, ...copyFrom.columns, GUARD_LSN, GUARD_SEQ].map(quoteIdent).join(', ')}) ` +
      `SELECT ${selected.join(', ')} FROM ${table.qualified} AS old WHERE ${matches.join(' AND ')} ` +
      `ON CONFLICT (${table.primaryKey.map(quoteIdent).join(', ')}) DO UPDATE SET ${sets.join(', ')} ` +
      `WHERE ${guardNewer('EXCLUDED')}`;
    // No row written: either a replay (the new key holds this version or a newer one) or
    // the old row is not in the sink, so the unchanged values are nowhere: refused, never
    // inserted as NULL.
    const checkValues: (string | number | null)[] = [];
    const checkParam = (value: string | number | null, type: string): string => {
      checkValues.push(value);
      return `$${checkValues.length}::${type}`;
    };
    const oldMatch = table.primaryKey.map((column, i) => `old.${quoteIdent(column)} = ${checkParam(copyFrom.keyValues[i] ?? null, castOf(column))}`);
    const newMatch = table.primaryKey.map((column) => {
      const index = head.columns.indexOf(column);
      return `n.${quoteIdent(column)} = ${checkParam(index >= 0 ? (head.values[index] ?? null) : null, castOf(column))}`;
    });
    const check =
      `SELECT EXISTS (SELECT 1 FROM ${table.qualified} AS old WHERE ${oldMatch.join(' AND ')}) ` +
      `OR EXISTS (SELECT 1 FROM ${table.qualified} AS n WHERE ${newMatch.join(' AND ')} ` +
      `AND (n.${GUARD_LSN}, n.${GUARD_SEQ}) >= (${checkParam(head.lsn, 'pg_lsn')}, ${checkParam(head.seq, 'integer')})) AS ok`;
    return {
      text,
      name: statementName(text),
      values,
      items,
      table: table.display,
      ifNoRows: { check: { text: check, name: statementName(check), values: checkValues }, refusal: () => absentRowRefusal(head, true) },
    };
  }

  if (head.kind === 'upsert' && head.unchanged.length > 0) {
    // Update-only: the rows must exist (see the top of this file).
    const ops = group as UpsertOp[];
    const columns = head.columns;
    const values = [...versionedArrays(ops, columns), numberArrayLiteral(ops.map((op) => op.item))];
    const { text, name } = shaped(table, 'update-only', columns, () => {
      const arrays = unnestOf(table, columns, ['integer']);
      const pk = new Set(table.primaryKey);
      const sets = columns
        .filter((column) => !pk.has(column))
        .map((column) => `${quoteIdent(column)} = ${arrays.select[columns.indexOf(column)] ?? ''}`)
        .concat([GUARD_LSN, GUARD_SEQ].map((column) => `${column} = v.${column}`));
      const matches = table.primaryKey.map((column) => `t.${quoteIdent(column)} = ${arrays.select[columns.indexOf(column)] ?? 'NULL'}`);
      matches.push(...keyProbe(table, columns));
      return (
        `WITH v AS (SELECT * FROM ${arrays.from}), ` +
        `u AS (UPDATE ${table.qualified} AS t SET ${sets.join(', ')} FROM v WHERE ${matches.join(' AND ')} AND ${guardNewer('v')} RETURNING 1) ` +
        `SELECT (SELECT count(*) FROM u)::int AS written, ` +
        `ARRAY(SELECT v.x0 FROM v WHERE NOT EXISTS (SELECT 1 FROM ${table.qualified} AS t WHERE ${matches.join(' AND ')}) ORDER BY 1) AS absent`
      );
    });
    const byItem = new Map(ops.map((op) => [op.item, op]));
    return {
      text,
      name,
      values,
      items,
      table: table.display,
      absentRefusal: (item) => {
        const op = byItem.get(item);
        if (op === undefined) throw new RangeError(`item ${item} is not in this statement`);
        return absentRowRefusal(op, false);
      },
    };
  }

  if (head.kind === 'upsert') {
    const ops = group as UpsertOp[];
    const columns = head.columns;
    const values = versionedArrays(ops, columns);
    const { text, name } = shaped(table, head.read ? 'upsert-read' : 'upsert', columns, () => {
      const arrays = unnestOf(table, columns, []);
      const pk = new Set(table.primaryKey);
      const valueColumns = columns.filter((column) => !pk.has(column));
      const sets = valueColumns.concat([GUARD_LSN, GUARD_SEQ]).map((column) => `${quoteIdent(column)} = EXCLUDED.${quoteIdent(column)}`);
      // A read over a row that holds its values already (streamed before the chunk) writes
      // nothing. Compared as text: every type has a text form, not every type an equality (json).
      const differs =
        head.read && valueColumns.length > 0
          ? ` AND (${valueColumns.map((column) => `t.${quoteIdent(column)}::text`).join(', ')}) IS DISTINCT FROM (${valueColumns.map((column) => `EXCLUDED.${quoteIdent(column)}::text`).join(', ')})`
          : '';
      return (
        `INSERT INTO ${table.qualified} AS t (${[...columns, GUARD_LSN, GUARD_SEQ].map(quoteIdent).join(', ')}) ` +
        `SELECT ${[...arrays.select, `v.${GUARD_LSN}`, `v.${GUARD_SEQ}`].join(', ')} FROM ${arrays.from} ` +
        `ON CONFLICT (${table.primaryKey.map(quoteIdent).join(', ')}) DO UPDATE SET ${sets.join(', ')} ` +
        `WHERE ${guardNewer('EXCLUDED')}${differs}`
      );
    });
    return { text, name, values, items, table: table.display };
  }

  const ops = group as DeleteOp[];
  const values = [
    ...table.primaryKey.map((_, k) => textArray(ops.map((op) => op.keyValues[k] ?? null))),
    arrayLiteral(ops.map((op) => op.lsn)),
    numberArrayLiteral(ops.map((op) => op.seq)),
  ];
  const { text, name } = shaped(table, 'delete', table.primaryKey, () => {
    const arrays = unnestOf(table, table.primaryKey, []);
    const matches = table.primaryKey.map((column, i) => `t.${quoteIdent(column)} = ${arrays.select[i] ?? 'NULL'}`);
    matches.push(...keyProbe(table, table.primaryKey));
    return `DELETE FROM ${table.qualified} AS t USING ${arrays.from} WHERE ${matches.join(' AND ')} AND ${guardNewer('v')}`;
  });
  return { text, name, values, items, table: table.display };
}

/**
 * Statement texts and their prepared-statement names by shape (table, op kind, column
 * set and the columns' types). The name is a digest of the text, so one name never means
 * two texts (pg refuses that on a connection) and a shape whose text changes (a column's
 * type changed, the table was looked up again) gets a new statement instead of a plan that
 * no longer fits. Bounded: cleared when full (the names stay valid, being digests).
 */
const shapes = new Map<string, { readonly text: string; readonly name: string }>();
const MAX_SHAPES = 1_024;

function shaped(table: SinkTable, kind: string, columns: readonly string[], build: () => string): { readonly text: string; readonly name: string } {
  let key = `${kind}\u0001${table.qualified}\u0001${table.primaryKey.join('\u0000')}`;
  for (const column of columns) {
    const sink = table.columns.get(column);
    key += `\u0001${column}\u0000${sink?.castType ?? 'text'}\u0000${isArrayColumn(sink) ? 'a' : ''}`;
  }
  let entry = shapes.get(key);
  if (entry === undefined) {
    const text = build();
    entry = { text, name: statementName(text) };
    if (shapes.size >= MAX_SHAPES) shapes.clear();
    shapes.set(key, entry);
  }
  return entry;
}

export function statementName(text: string): string {
  return `cdc_${createHash('sha256').update(text).digest('hex').slice(0, 40)}`;
}

function isArrayColumn(column: SinkColumn | undefined): boolean {
  return column !== undefined && (column.array ?? column.castType.endsWith('[]'));
}

/**
 * `unnest($1::text[], …, $n::pg_lsn[], $n+1::integer[], extra…) AS v(c0, …, _cdc_lsn, _cdc_seq, x0…)`
 * and the select expression of each column, `v.cI::<column type>`. One array parameter
 * per column, whatever the number of rows. The column arrays travel as BINARY text[]
 * (textArray): PostgreSQL's array_in parses a text literal character by character, ~9 µs
 * per 2 KB value, array_recv copies (~1.7 µs); each value is then cast on its own, which
 * is also what lets a column whose type is itself an array take its `{…}` text (an array
 * of arrays would be one 2-D array, and unnest would flatten it).
 */
function unnestOf(table: SinkTable, columns: readonly string[], extra: readonly string[]): { from: string; select: string[] } {
  const params: string[] = [];
  const select: string[] = [];
  columns.forEach((column, i) => {
    const type = table.columns.get(column)?.castType ?? 'text';
    params.push(`$${i + 1}::text[]`);
    select.push(type === 'text' ? `v.c${i}` : `v.c${i}::${type}`);
  });
  const n = columns.length;
  params.push(`$${n + 1}::pg_lsn[]`, `$${n + 2}::integer[]`);
  extra.forEach((type, i) => params.push(`$${n + 3 + i}::${type}[]`));
  const names = [...columns.map((_, i) => `c${i}`), GUARD_LSN, GUARD_SEQ, ...extra.map((_, i) => `x${i}`)];
  return { from: `unnest(${params.join(', ')}) AS v(${names.join(', ')})`, select };
}

const TEXT_OID = 25;

/**
 * A one-dimensional text[] in PostgreSQL's binary array format (array_send/array_recv):
 * int32 ndim = 1, int32 has-nulls, int32 element type oid, int32 length, int32 lower
 * bound = 1, then per element int32 byte length (-1 = NULL) and the UTF-8 bytes. pg sends
 * a Buffer parameter in binary format.
 */
export function textArray(values: readonly (string | null)[]): Buffer {
  let size = 20;
  let nulls = 0;
  // Per value its byte length, negated when it is short ASCII (written byte by byte below:
  // a Buffer#write call per value costs ~150 ns, more than the copy of a short value).
  const lengths = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (value === null || value === undefined) {
      lengths[i] = NULL_LENGTH;
      nulls = 1;
      size += 4;
      continue;
    }
    let length = -1;
    if (value.length <= SHORT_VALUE) {
      length = value.length;
      for (let c = 0; c < value.length; c++) {
        if (value.charCodeAt(c) > 0x7f) {
          length = -1;
          break;
        }
      }
    }
    if (length >= 0) {
      lengths[i] = -length - 2;
    } else {
      length = Buffer.byteLength(value);
      lengths[i] = length;
    }
    size += 4 + length;
  }
  const buffer = Buffer.allocUnsafe(size);
  buffer.writeInt32BE(1, 0);
  buffer.writeInt32BE(nulls, 4);
  buffer.writeInt32BE(TEXT_OID, 8);
  buffer.writeInt32BE(values.length, 12);
  buffer.writeInt32BE(1, 16);
  let offset = 20;
  for (let i = 0; i < values.length; i++) {
    const coded = lengths[i] ?? NULL_LENGTH;
    if (coded === NULL_LENGTH) {
      buffer.writeInt32BE(-1, offset);
      offset += 4;
    } else if (coded < 0) {
      const value = values[i] ?? '';
      const length = -coded - 2;
      buffer.writeInt32BE(length, offset);
      offset += 4;
      for (let c = 0; c < length; c++) buffer[offset + c] = value.charCodeAt(c);
      offset += length;
    } else {
      buffer.writeInt32BE(coded, offset);
      offset += 4;
      if (coded > 0) offset += buffer.write(values[i] ?? '', offset, coded, 'utf8');
    }
  }
  return buffer;
}

/** textArray's marks: a NULL; a short ASCII value of length n is -n - 2. */
const NULL_LENGTH = -1;
const SHORT_VALUE = 64;

/**
 * `t.pk0 = ANY($i)` beside the join on the key: a prepared statement's generic plan may
 * have been made while the table was small (a hash join over a sequential scan) and is
 * kept until the table's statistics change; with the array as an index condition on the
 * table itself, its plan reads the key index whatever the table's size was then.
 */
function keyProbe(table: SinkTable, columns: readonly string[]): string[] {
  const key = table.primaryKey[0];
  const index = key === undefined ? -1 : columns.indexOf(key);
  const sink = key === undefined ? undefined : table.columns.get(key);
  if (key === undefined || index < 0 || isArrayColumn(sink)) return [];
  const type = sink?.castType ?? 'text';
  return [`t.${quoteIdent(key)} = ANY($${index + 1}::text[]${type === 'text' ? '' : `::${type}[]`})`];
}

const ESCAPED = /["\\]/g;

/**
 * A text array literal: every element quoted (so NULL, blanks, commas and braces in a
 * value stay text), `"` and `\` escaped, SQL NULL as NULL. For the short version columns
 * (LSNs): cheaper to build than pg's serialisation of a JS array (25 vs 65 ns per value).
 */
export function arrayLiteral(values: readonly (string | null)[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const value = values[i];
    if (value === null || value === undefined) out += 'NULL';
    // includes() is a memchr; a regex test scans 2 KB values ~8× slower.
    else out += '"' + (value.includes('"') || value.includes('\\') ? value.replace(ESCAPED, '\\$&') : value) + '"';
  }
  return `${out}}`;
}

function numberArrayLiteral(values: readonly number[]): string {
  return `{${values.join(',')}}`;
}

/** One array parameter per column (binary text[]), then the rows' versions (lsn, seq): the unnest statements' inputs. */
function versionedArrays(ops: readonly UpsertOp[], columns: readonly string[]): (string | number | Buffer | null)[] {
  return [
    ...columns.map((_, c) => textArray(ops.map((op) => op.values[c] ?? null))),
    arrayLiteral(ops.map((op) => op.lsn)),
    numberArrayLiteral(ops.map((op) => op.seq)),
  ];
}
