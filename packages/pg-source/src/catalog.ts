/**
 * Reads, from the source's catalog, how each configured table is keyed.
 *
 * The key of a change is always the primary key. A table without one is accepted only
 * with REPLICA IDENTITY FULL, and then every column is the key (PostgreSQL sends the
 * whole old row, so an update is a delete of the old row and an insert of the new).
 * A table whose replica identity would not send the old primary key (NOTHING, or an
 * index other than the primary key) is refused at start-up rather than producing
 * updates and deletes nobody can apply.
 */
import type pg from 'pg';
import { quoteIdent } from './connection.ts';
import { ReplicaIdentityError, TableNotFoundError, TableWithoutKeyError } from './errors.ts';

export type ReplicaIdentity = 'default' | 'full' | 'index' | 'nothing';

export interface SourceTable {
  /** `schema.table`, as it appears in every ChangeEvent. */
  readonly table: string;
  readonly schema: string;
  readonly name: string;
  readonly oid: number;
  /** Key columns in key order. */
  readonly keyColumns: readonly string[];
  /** True when the key is the primary key; false when it is every column (REPLICA IDENTITY FULL, no primary key). */
  readonly primaryKey: boolean;
  readonly replicaIdentity: ReplicaIdentity;
  /** All live columns in attnum order. */
  readonly columns: readonly string[];
}

const IDENTITY: Record<string, ReplicaIdentity> = { d: 'default', f: 'full', i: 'index', n: 'nothing' };

/** `schema.table` or `table` (schema public). Quotes are not interpreted: names are taken as written. */
export function parseTableName(text: string): { schema: string; name: string } {
  const trimmed = text.trim();
  const dot = trimmed.indexOf('.');
  if (dot < 0) return { schema: 'public', name: trimmed };
  return { schema: trimmed.slice(0, dot), name: trimmed.slice(dot + 1) };
}

interface TableRow {
  oid: number;
  relkind: string;
  relreplident: string;
  pk: string[] | null;
  ri: string[] | null;
  cols: string[] | null;
}

const TABLE_QUERY = `
SELECT c.oid::int AS oid, c.relkind::text AS relkind, c.relreplident::text AS relreplident,
  (SELECT array_agg(a.attname::text ORDER BY k.ord)
     FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
  (SELECT array_agg(a.attname::text ORDER BY a.attname)
     FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) AS k(attnum)
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = c.oid AND i.indisreplident) AS ri,
  (SELECT array_agg(a.attname::text ORDER BY a.attnum)
     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS cols
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`;

export async function readTable(client: pg.Client, configured: string): Promise<SourceTable> {
  const { schema, name } = parseTableName(configured);
  const table = `${schema}.${name}`;
  const result = await client.query<TableRow>(TABLE_QUERY, [schema, name]);
  const row = result.rows[0];
  if (!row) throw new TableNotFoundError(table);
  if (row.relkind !== 'r') throw new TableNotFoundError(table, `is not an ordinary table (relkind '${row.relkind}')`);
  const replicaIdentity = IDENTITY[row.relreplident] ?? 'nothing';
  const columns = row.cols ?? [];
  const pk = row.pk ?? [];
  if (pk.length === 0) {
    if (replicaIdentity !== 'full') throw new TableWithoutKeyError(table, replicaIdentity);
    return { table, schema, name, oid: row.oid, keyColumns: columns, primaryKey: false, replicaIdentity, columns };
  }
  const identityIsPrimaryKey = replicaIdentity === 'index' && sameSet(row.ri ?? [], pk);
  if (replicaIdentity === 'nothing' || (replicaIdentity === 'index' && !identityIsPrimaryKey)) {
    throw new ReplicaIdentityError(table, replicaIdentity === 'index' ? 'using index (not the primary key)' : replicaIdentity);
  }
  return { table, schema, name, oid: row.oid, keyColumns: pk, primaryKey: true, replicaIdentity, columns };
}

/** `"schema"."table"`, quoted for SQL. */
export function qualified(table: Pick<SourceTable, 'schema' | 'name'>): string {
  return `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((item) => b.includes(item));
}
