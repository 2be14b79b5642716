/**
 * What the committer keeps in the sink besides the user's rows.
 *
 *   cdc_checkpoint(pipeline, partition)  where each input partition resumes, written in the
 *                                        SAME transaction as the rows it covers
 *   cdc_owner(pipeline)                  the fencing epoch (PITFALLS 21)
 *
 * Sink tables are the user's. Each gets two guard columns, added if missing:
 *   _cdc_lsn pg_lsn, _cdc_seq integer — the version of the row: the (commitLsn, seq)
 *   position of the change that wrote it. Within one source that pair is strictly
 *   increasing per key (commit order, then order inside the transaction), so
 *   `(sink._cdc_lsn, sink._cdc_seq) < (new...)` accepts only newer changes: replays and
 *   stale arrivals cannot overwrite a newer row (PITFALLS 1, 11, 15). The pair is not
 *   comparable across sources: one sink table is fed by one source.
 */
import type { Pool, PoolClient, QueryResult, QueryResultRow } from 'pg';

/** A pool or one connection (an open transaction). */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
}
import { SinkRefusedError, fromPgError } from './errors.ts';
import { CdcError } from '@cdc/core';

export const GUARD_LSN = '_cdc_lsn';
export const GUARD_SEQ = '_cdc_seq';

export const BOOKKEEPING_DDL = `
CREATE TABLE IF NOT EXISTS public.cdc_checkpoint (
  pipeline   text        NOT NULL,
  partition  integer     NOT NULL,
  resume_seq bigint      NOT NULL,
  last_key   text,
  lamport    numeric,
  positions  jsonb       NOT NULL DEFAULT '{}'::jsonb,
  epoch      bigint      NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pipeline, partition)
);
CREATE TABLE IF NOT EXISTS public.cdc_owner (
  pipeline text   PRIMARY KEY,
  epoch    bigint NOT NULL
);`;

/**
 * Creates the bookkeeping tables; an advisory lock keeps two starting committers from
 * racing on CREATE. When both exist nothing is created: a least-privilege sink role (no
 * CREATE on the schema) works on tables an administrator made (README: Security).
 */
export async function ensureBookkeeping(client: PoolClient): Promise<void> {
  const existing = await client.query<{ checkpoint: string | null; owner: string | null }>(
    `SELECT to_regclass('public.cdc_checkpoint')::text AS checkpoint, to_regclass('public.cdc_owner')::text AS owner`,
  );
  if (existing.rows[0]?.checkpoint && existing.rows[0].owner) return;
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('cdc_bookkeeping'))`);
    await client.query(BOOKKEEPING_DDL);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    if ((error as { code?: string }).code === '42501') {
      throw new CdcError(
        'the committer\'s role may not create its bookkeeping tables public.cdc_checkpoint and public.cdc_owner; as an administrator create them once ' +
          '(the statements are BOOKKEEPING_DDL in @cdc/sink-pg, README: Security) and GRANT SELECT, INSERT, UPDATE ON public.cdc_checkpoint, public.cdc_owner to the role',
        { code: 'SINK_PRIVILEGE_MISSING', retriable: false, cause: error },
      );
    }
    throw error;
  }
}

/** Parses TABLE_MAP `src=dst,src2=dst2` (schema-qualified or not) into source → sink names. */
export function parseTableMap(text: string | undefined): Map<string, string> {
  const map = new Map<string, string>();
  if (text === undefined || text.trim() === '') return map;
  for (const entry of text.split(',')) {
    const item = entry.trim();
    if (item === '') continue;
    const [source, sink, ...rest] = item.split('=').map((part) => part.trim());
    if (!source || !sink || rest.length > 0) {
      throw new RangeError(`TABLE_MAP entry ${JSON.stringify(item)} is not 'source_table=sink_table'`);
    }
    map.set(qualify(source), qualify(sink));
  }
  return map;
}

function qualify(name: string): string {
  return name.includes('.') ? name : `public.${name}`;
}

export function splitName(qualified: string): { schema: string; name: string } {
  const dot = qualified.indexOf('.');
  return dot < 0 ? { schema: 'public', name: qualified } : { schema: qualified.slice(0, dot), name: qualified.slice(dot + 1) };
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export interface SinkColumn {
  readonly name: string;
  /** Type without modifier, for the parameter cast (`varchar(3)` would silently truncate). */
  readonly castType: string;
  /** Type with modifier, for messages. */
  readonly fullType: string;
  /** varchar/char length limit, to name the column of a "value too long" refusal. */
  readonly maxLength: number | undefined;
  readonly generated: boolean;
  readonly position: number;
  /** pg_type OID of the column's type (compared with the event's columnTypes to widen it). */
  readonly typeOid?: number;
  /**
   * The type is an array (or a domain over one): a key probe `pk = ANY(…)` cannot be built
   * on it (an array of arrays would be one multi-dimensional array). Unset: from the `[]`
   * of castType.
   */
  readonly array?: boolean;
}

export interface SinkTable {
  /** The source table name events carry. */
  readonly source: string;
  /** `"schema"."table"` */
  readonly qualified: string;
  readonly display: string;
  readonly columns: ReadonlyMap<string, SinkColumn>;
  readonly primaryKey: readonly string[];
}

const INTROSPECT = `
SELECT a.attname                                AS name,
       format_type(a.atttypid, NULL)            AS cast_type,
       format_type(a.atttypid, a.atttypmod)     AS full_type,
       a.atttypmod                              AS typmod,
       a.atttypid::int                          AS type_oid,
       t.typname                                AS typname,
       t.typcategory = 'A'                      AS is_array,
       a.attgenerated <> ''                     AS generated,
       a.attnum                                 AS position,
       array_position(i.indkey::int2[], a.attnum) AS pk_position
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
 ORDER BY a.attnum`;

interface IntrospectRow {
  name: string;
  cast_type: string;
  full_type: string;
  typmod: number;
  type_oid: number;
  typname: string;
  is_array: boolean;
  generated: boolean;
  position: number;
  pk_position: number | null;
}

/**
 * Sink tables by source name, introspected once and cached. A table that is missing
 * is looked up again next time (the user may create it); a cached table is refreshed
 * when an event names a column it lacks or the sink refuses a statement (its schema
 * may have changed).
 */
export class TableCatalog {
  readonly #pool: Pool;
  readonly #tableMap: ReadonlyMap<string, string>;
  readonly #cache = new Map<string, SinkTable>();

  constructor(pool: Pool, tableMap: ReadonlyMap<string, string> = new Map()) {
    this.#pool = pool;
    this.#tableMap = tableMap;
  }

  sinkNameOf(sourceTable: string): string {
    return this.#tableMap.get(qualify(sourceTable)) ?? qualify(sourceTable);
  }

  invalidate(sourceTable: string): void {
    this.#cache.delete(sourceTable);
  }

  /** Forgets every cached shape: after a rollback that may have undone schema changes made in it. */
  clear(): void {
    this.#cache.clear();
  }

  /**
   * The sink table for a source table, or the refusal that makes its events poison.
   * `via`: the open transaction's connection, so a table or column added in it is seen.
   */
  async resolve(sourceTable: string, via?: Queryable): Promise<SinkTable | SinkRefusedError> {
    const cached = this.#cache.get(sourceTable);
    if (cached) return cached;
    const display = this.sinkNameOf(sourceTable);
    const { schema, name } = splitName(display);
    const db = via ?? this.#pool;
    let rows = await this.#introspect(db, schema, name, display);
    if (rows.length === 0) {
      return new SinkRefusedError('table_missing', `sink table ${display} does not exist`, { table: display });
    }
    if (!rows.some((row) => row.name === GUARD_LSN) || !rows.some((row) => row.name === GUARD_SEQ)) {
      const qualified = `${quoteIdent(schema)}.${quoteIdent(name)}`;
      try {
        // On the pool, committed at once: in the batch's transaction it would hold the
        // table's ACCESS EXCLUSIVE lock for as long as that transaction (a streamed one) is open.
        await this.#pool.query(
          `ALTER TABLE ${qualified} ADD COLUMN IF NOT EXISTS ${GUARD_LSN} pg_lsn, ADD COLUMN IF NOT EXISTS ${GUARD_SEQ} integer`,
        );
      } catch (error) {
        const cause = fromPgError(error, { table: display });
        if (cause.retriable) throw cause;
        return new SinkRefusedError('table_unusable', `cannot add the version guard columns to ${display}: ${cause.message}`, { table: display }, error);
      }
      rows = await this.#introspect(db, schema, name, display);
    }
    const primaryKey = rows
      .filter((row) => row.pk_position !== null)
      .sort((a, b) => (a.pk_position ?? 0) - (b.pk_position ?? 0))
      .map((row) => row.name);
    if (primaryKey.length === 0) {
      return new SinkRefusedError('no_primary_key', `sink table ${display} has no primary key to upsert on`, { table: display });
    }
    const columns = new Map<string, SinkColumn>();
    for (const row of rows) {
      columns.set(row.name, {
        name: row.name,
        castType: row.cast_type,
        fullType: row.full_type,
        maxLength: (row.typname === 'varchar' || row.typname === 'bpchar') && row.typmod > 4 ? row.typmod - 4 : undefined,
        generated: row.generated,
        position: row.position,
        typeOid: row.type_oid,
        array: row.is_array,
      });
    }
    const table: SinkTable = { source: sourceTable, qualified: `${quoteIdent(schema)}.${quoteIdent(name)}`, display, columns, primaryKey };
    this.#cache.set(sourceTable, table);
    return table;
  }

  async #introspect(db: Queryable, schema: string, name: string, display: string): Promise<IntrospectRow[]> {
    try {
      return (await db.query<IntrospectRow>(INTROSPECT, [schema, name])).rows;
    } catch (error) {
      throw fromPgError(error, { table: display });
    }
  }
}
