/**
 * SCHEMA_CHANGES=evolve: the sink table follows the source's shape as the events show it.
 *
 *   a column the sink lacks      → ALTER TABLE … ADD COLUMN <name> <type of the event's OID> (nullable)
 *   a safe widening on the source → ALTER TABLE … ALTER COLUMN … TYPE <wider>  (int2→int4→int8,
 *                                   float4→float8, integers/floats → numeric, varchar/char → text)
 *   a column the events no longer carry (DROP COLUMN on the source) → kept on the sink: rows
 *                                   inserted afterwards get NULL (or its default), an update
 *                                   leaves the value the row had
 *   a missing sink table         → CREATE TABLE from the event (keyColumns as primary key)
 *
 * Everything runs on the batch's own connection, inside its transaction: the DDL commits
 * with the rows it was made for, or not at all (a rollback undoes both; the catalog is
 * then cleared).
 *
 * Events carry type OIDs, never type modifiers (pgoutput's relation message has atttypmod
 * but the reader does not pass it on): a new varchar column is added as unbounded
 * `varchar`, numeric as unconstrained `numeric`; a varchar(n) → varchar(m) or
 * numeric(p,s) widening on the source is not seen (the OID is the same) — a value the
 * sink's narrower column cannot hold is refused by the sink. OIDs of built-in types are
 * the same on every server; a user-defined type's OID (≥ 16384: enums, domains,
 * composites) means nothing on the sink, so such a column is not added: the committer holds.
 */
import type { ChangeEvent } from '@cdc/core';
import { SinkSchemaError } from './errors.ts';
import { GUARD_LSN, GUARD_SEQ, quoteIdent, splitName, type Queryable, type SinkTable } from './schema.ts';

export type SchemaChanges = 'evolve' | 'fail';

/** The first OID a database gives to objects it creates (FirstNormalObjectId). */
export const FIRST_USER_OID = 16_384;

/** OIDs of built-in types whose name we know without asking (pg_type.dat). */
export const BUILTIN_TYPES: ReadonlyMap<number, string> = new Map([
  [16, 'boolean'],
  [17, 'bytea'],
  [18, '"char"'],
  [19, 'name'],
  [20, 'bigint'],
  [21, 'smallint'],
  [23, 'integer'],
  [25, 'text'],
  [26, 'oid'],
  [114, 'json'],
  [142, 'xml'],
  [650, 'cidr'],
  [700, 'real'],
  [701, 'double precision'],
  [790, 'money'],
  [829, 'macaddr'],
  [869, 'inet'],
  [1042, 'character'],
  [1043, 'character varying'],
  [1082, 'date'],
  [1083, 'time without time zone'],
  [1114, 'timestamp without time zone'],
  [1184, 'timestamp with time zone'],
  [1186, 'interval'],
  [1266, 'time with time zone'],
  [1560, 'bit'],
  [1562, 'bit varying'],
  [1700, 'numeric'],
  [2950, 'uuid'],
  [3614, 'tsvector'],
  [3802, 'jsonb'],
  [1000, 'boolean[]'],
  [1005, 'smallint[]'],
  [1007, 'integer[]'],
  [1016, 'bigint[]'],
  [1009, 'text[]'],
  [1015, 'character varying[]'],
  [1021, 'real[]'],
  [1022, 'double precision[]'],
  [1231, 'numeric[]'],
  [2951, 'uuid[]'],
  [3807, 'jsonb[]'],
]);

/**
 * The sink type name for a source type OID: from the table above, else from the sink's
 * own pg_type (`lookup`, format_type) for another built-in OID; undefined for a
 * user-defined OID (it names nothing on the sink) or one the sink does not know.
 * `character` is bpchar without its length: unbounded it would be char(1), so it maps to text.
 */
export async function typeNameForOid(oid: number, lookup: (oid: number) => Promise<string | undefined>): Promise<string | undefined> {
  if (!Number.isInteger(oid) || oid <= 0 || oid >= FIRST_USER_OID) return undefined;
  if (oid === 1042) return 'text';
  const known = BUILTIN_TYPES.get(oid);
  if (known !== undefined) return known;
  const name = await lookup(oid);
  return name === undefined || name === '???' || name === '-' ? undefined : name;
}

const INT2 = 21;
const INT4 = 23;
const INT8 = 20;
const FLOAT4 = 700;
const FLOAT8 = 701;
const NUMERIC = 1700;
const TEXT = 25;
const VARCHAR = 1043;
const BPCHAR = 1042;

/** How wide each type of a family is: a higher rank holds every value of a lower one. */
const RANKS: readonly ReadonlyMap<number, number>[] = [
  new Map([
    [INT2, 1],
    [INT4, 2],
    [INT8, 3],
    [NUMERIC, 4],
  ]),
  new Map([
    [FLOAT4, 1],
    [FLOAT8, 2],
  ]),
  new Map([
    [BPCHAR, 1],
    [VARCHAR, 2],
    [TEXT, 3],
  ]),
];

export type Widening =
  /** The sink's type holds the source's values (same type, or the sink's is wider). */
  | { readonly kind: 'fits' }
  /** The source's type is wider: ALTER COLUMN … TYPE `to`. */
  | { readonly kind: 'widen'; readonly to: string }
  /** Different families (text vs jsonb, int vs text, …): left to the sink's casts. */
  | { readonly kind: 'unrelated' };

/**
 * What a sink column of type `sinkOid` needs for values of the source's type `sourceOid`.
 * Pure. varchar/char → text is a widening; varchar(n) → varchar(m) is invisible (same
 * OID, no typmod in the events) and counts as fitting. float → numeric is not a widening
 * (numeric has no infinities before PostgreSQL 14).
 */
export function widening(sinkOid: number, sourceOid: number): Widening {
  if (sinkOid === sourceOid) return { kind: 'fits' };
  for (const ranks of RANKS) {
    const sinkRank = ranks.get(sinkOid);
    const sourceRank = ranks.get(sourceOid);
    if (sinkRank === undefined || sourceRank === undefined) continue;
    return sourceRank > sinkRank ? { kind: 'widen', to: BUILTIN_TYPES.get(sourceOid) ?? 'text' } : { kind: 'fits' };
  }
  return { kind: 'unrelated' };
}

export interface ShapeChange {
  readonly sql: string;
  readonly what: string;
  readonly column?: string;
}

/**
 * The DDL that makes `table` take `event` (pure): columns to add, columns to widen. A
 * column whose type cannot be named is a SinkSchemaError (held).
 */
export async function shapeChanges(
  event: ChangeEvent,
  table: SinkTable,
  lookup: (oid: number) => Promise<string | undefined>,
): Promise<ShapeChange[] | SinkSchemaError> {
  const changes: ShapeChange[] = [];
  const context = { table: table.display, lsn: event.commitLsn, eventId: event.eventId };
  const row = event.after ?? event.before ?? {};
  for (const column of Object.keys(row)) {
    if (column === GUARD_LSN || column === GUARD_SEQ) continue;
    const oid = event.columnTypes[column];
    const sink = table.columns.get(column);
    if (sink === undefined) {
      const type = oid === undefined ? 'text' : await typeNameForOid(oid, lookup);
      if (type === undefined) {
        return new SinkSchemaError(
          'type_unknown',
          `sink table ${table.display} has no column ${column}, and its source type (OID ${oid}) is not a built-in type the sink can name: add the column on the sink`,
          { ...context, column },
        );
      }
      changes.push({ sql: `ALTER TABLE ${table.qualified} ADD COLUMN IF NOT EXISTS ${quoteIdent(column)} ${type}`, what: `added column ${column} ${type}`, column });
      continue;
    }
    if (oid === undefined || sink.typeOid === undefined || sink.generated) continue;
    const verdict = widening(sink.typeOid, oid);
    if (verdict.kind === 'widen') {
      changes.push({
        sql: `ALTER TABLE ${table.qualified} ALTER COLUMN ${quoteIdent(column)} TYPE ${verdict.to}`,
        what: `widened column ${column} from ${sink.fullType} to ${verdict.to}`,
        column,
      });
    }
  }
  return changes;
}

/** CREATE TABLE for a sink table that does not exist, from the event (its key as primary key). */
export async function createTableSql(
  qualifiedName: string,
  event: ChangeEvent,
  lookup: (oid: number) => Promise<string | undefined>,
): Promise<string | SinkSchemaError> {
  const { schema, name } = splitName(qualifiedName);
  const context = { table: qualifiedName, lsn: event.commitLsn, eventId: event.eventId };
  const row = event.after ?? event.before ?? {};
  const names = [...new Set([...event.keyColumns, ...Object.keys(row)])].filter((column) => column !== GUARD_LSN && column !== GUARD_SEQ);
  if (event.keyColumns.length === 0) {
    return new SinkSchemaError('table_missing', `sink table ${qualifiedName} does not exist and the change has no key to make its primary key: create it on the sink`, context);
  }
  const columns: string[] = [];
  for (const column of names) {
    const oid = event.columnTypes[column];
    const type = oid === undefined ? 'text' : await typeNameForOid(oid, lookup);
    if (type === undefined) {
      return new SinkSchemaError('type_unknown', `sink table ${qualifiedName} does not exist and column ${column}'s type (OID ${oid}) cannot be named on the sink: create it`, {
        ...context,
        column,
      });
    }
    columns.push(`${quoteIdent(column)} ${type}${event.keyColumns.includes(column) ? ' NOT NULL' : ''}`);
  }
  columns.push(`${GUARD_LSN} pg_lsn`, `${GUARD_SEQ} integer`, `PRIMARY KEY (${event.keyColumns.map(quoteIdent).join(', ')})`);
  return `CREATE TABLE IF NOT EXISTS ${quoteIdent(schema)}.${quoteIdent(name)} (${columns.join(', ')})`;
}

/** format_type of an OID on the sink (its pg_type), cached per OID. */
export function sinkTypeLookup(db: Queryable): (oid: number) => Promise<string | undefined> {
  const cache = new Map<number, string | undefined>();
  return async (oid) => {
    if (cache.has(oid)) return cache.get(oid);
    const { rows } = await db.query<{ name: string | null }>('SELECT format_type(oid, NULL) AS name FROM pg_type WHERE oid = $1::oid', [oid]);
    const name = rows[0]?.name ?? undefined;
    cache.set(oid, name);
    return name;
  };
}
