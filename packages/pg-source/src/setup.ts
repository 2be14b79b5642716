/**
 * Prepares a source database for the reader, in this order:
 *   1. wal_level must be `logical` (else one clear error saying what to change);
 *   2. every configured table exists and has a key (catalog.ts);
 *   3. the publication: created `FOR TABLE <configured tables>` if missing (and marked as
 *      ours by a comment), else it must publish exactly those tables, every column and row,
 *      and all four operations — except that our own publication is extended by tables
 *      added to TABLES since (their existing rows then come by a backfill). An existing
 *      correct publication is only read, so a role with REPLICATION and SELECT alone
 *      suffices when an administrator created it; a role that would have to create or
 *      alter it and may not gets SourcePrivilegeError with the statement to run;
 *   4. the slot: created with pgoutput if missing, else it must be a logical pgoutput slot
 *      of this database that has not lost WAL (`wal_status = 'lost'`, PITFALLS 8).
 * The publication is created before the slot on purpose: pgoutput looks the publication
 * up in the catalog as of each decoded change, so a slot older than its publication fails
 * with "publication does not exist" on the first change.
 * Existing objects with other settings are errors, never silently reused.
 */
import { CdcError, Lsn } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { redactUrl } from '@cdc/runtime';
import type pg from 'pg';
import { qualified, readTable, type SourceTable } from './catalog.ts';
import { assertValueTextSettings, quoteIdent, sqlStateOf, withSource } from './connection.ts';
import { queueBackfill, queueInitialSnapshot, type SnapshotMode } from './snapshot.ts';
import { PublicationMismatchError, SlotLostError, SlotMismatchError, SourcePrivilegeError, WalLevelError } from './errors.ts';

export interface SetupOptions {
  readonly connectionString: string;
  /** `schema.table` names. */
  readonly tables: readonly string[];
  readonly publicationName: string;
  readonly slotName: string;
  readonly logger: Logger;
  /**
   * `initial` / `initial_only`: when the slot is created, the tables' initial snapshot is
   * queued first (snapshot.ts). Default `never`.
   */
  readonly snapshot?: SnapshotMode;
}

export interface SlotState {
  readonly name: string;
  readonly plugin: string | null;
  readonly slotType: string;
  readonly database: string | null;
  readonly temporary: boolean;
  readonly active: boolean;
  readonly activePid: number | null;
  /** Where streaming resumes: every transaction whose commit starts below it is never sent again. */
  readonly confirmedFlushLsn: Lsn | undefined;
  readonly restartLsn: Lsn | undefined;
  readonly walStatus: string | null;
}

export interface PreparedSource {
  readonly tables: readonly SourceTable[];
  readonly publication: { readonly name: string; readonly created: boolean };
  readonly slot: SlotState & { readonly created: boolean };
  readonly database: string;
  readonly systemIdentifier: string;
  readonly serverVersion: string;
}

const DUPLICATE_OBJECT = '42710';
/** insufficient_privilege: also "must be owner of …". */
const INSUFFICIENT_PRIVILEGE = '42501';

export async function setupSource(options: SetupOptions): Promise<PreparedSource> {
  const { logger } = options;
  return withSource(options.connectionString, 'cdc-reader-setup', async (client) => {
    try {
      const server = await client.query<{ wal_level: string; database: string; version: string; system_identifier: string }>(
        `SELECT current_setting('wal_level') AS wal_level, current_database() AS database,
                current_setting('server_version') AS version, (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier`,
      );
      const info = server.rows[0];
      if (!info) throw new Error('the server returned no settings');
      if (info.wal_level !== 'logical') throw new WalLevelError(info.wal_level, redactUrl(options.connectionString));
      await assertValueTextSettings(client, options.connectionString, 'setup');

      const tables: SourceTable[] = [];
      for (const name of options.tables) tables.push(await readTable(client, name));

      const ensured = await ensurePublication(client, options.publicationName, tables);
      const publication = { name: ensured.name, created: ensured.created };
      if (ensured.created) logger.info({ publication: options.publicationName, tables: tables.map((t) => t.table) }, 'created publication');
      if (ensured.added.length > 0) {
        logger.info({ publication: options.publicationName, tables: ensured.added }, `tables added to the publication: ${ensured.added.join(', ')}`);
        // Their existing rows: a backfill (the reader takes the signal once it streams); with `never`, only if asked for.
        if ((options.snapshot ?? 'never') !== 'never' && (await readSlot(client, options.slotName))) {
          await queueBackfill(client, options.slotName, ensured.added);
          logger.info({ slot: options.slotName, tables: ensured.added }, 'backfill of the added tables queued');
        }
      }

      if ((options.snapshot ?? 'never') !== 'never' && !(await readSlot(client, options.slotName))) {
        const queued = await queueInitialSnapshot(client, options.slotName, tables.map((t) => t.table));
        if (queued > 0) logger.info({ slot: options.slotName, tables: queued }, 'initial snapshot queued');
      }
      const slot = await ensureSlot(client, options.slotName, info.database);
      if (slot.created) logger.info({ slot: options.slotName, lsn: slot.confirmedFlushLsn && Lsn.format(slot.confirmedFlushLsn) }, 'created replication slot');

      return {
        tables,
        publication,
        slot,
        database: info.database,
        systemIdentifier: info.system_identifier,
        serverVersion: info.version,
      };
    } catch (error) {
      throw CdcError.from(error, { code: 'SOURCE_SETUP_FAILED', retriable: false, context: { slot: options.slotName } });
    }
  });
}

/** The comment on a publication the reader created: only such a one is extended when TABLES grows. */
export const MANAGED_PUBLICATION_COMMENT = 'created by the cdc reader: tables added to TABLES are added here';

async function ensurePublication(
  client: pg.Client,
  name: string,
  tables: readonly SourceTable[],
): Promise<{ name: string; created: boolean; added: readonly string[] }> {
  const existing = await client.query<{ comment: string | null }>(
    `SELECT obj_description(oid, 'pg_publication') AS comment FROM pg_publication WHERE pubname = $1`,
    [name],
  );
  if (existing.rowCount === 0) {
    try {
      await client.query(`CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${tables.map(qualified).join(', ')}`);
      await client.query(`COMMENT ON PUBLICATION ${quoteIdent(name)} IS '${MANAGED_PUBLICATION_COMMENT}'`);
      return { name, created: true, added: [] };
    } catch (error) {
      // Least privilege: a role with REPLICATION and SELECT only cannot create it.
      if (sqlStateOf(error) === INSUFFICIENT_PRIVILEGE) {
        throw new SourcePrivilegeError(
          `create publication ${name} (it does not exist; creating one needs CREATE on the database and ownership of the tables)`,
          `CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${tables.map(qualified).join(', ')};`,
          error,
        );
      }
      // Another reader created it between our check and our CREATE: verify theirs.
      if (sqlStateOf(error) !== DUPLICATE_OBJECT) throw error;
    }
  }
  const differences = await publicationDifferences(client, name, tables);
  if (differences.length === 0) return { name, created: false, added: [] };
  // Our own publication that only lacks tables added to TABLES since: extend it (their rows
  // come by a backfill, their changes from now on by the stream). Anyone else's is refused.
  const missing = await missingTables(client, name, tables);
  const onlyMissing = differences.length === 1 && differences[0]?.startsWith('it lacks ') === true && missing.length > 0;
  if (onlyMissing && existing.rows[0]?.comment === MANAGED_PUBLICATION_COMMENT) {
    const alter = `ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${missing.map(qualified).join(', ')}`;
    try {
      await client.query(alter);
    } catch (error) {
      if (sqlStateOf(error) !== INSUFFICIENT_PRIVILEGE) throw error;
      throw new SourcePrivilegeError(`add ${missing.map((t) => t.table).join(', ')} to publication ${name} (that needs ownership of the publication and the tables)`, `${alter};`, error);
    }
    return { name, created: false, added: missing.map((t) => t.table) };
  }
  throw new PublicationMismatchError(name, differences);
}

async function missingTables(client: pg.Client, name: string, tables: readonly SourceTable[]): Promise<SourceTable[]> {
  const published = await client.query<{ t: string }>(`SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = $1`, [name]);
  const have = new Set(published.rows.map((row) => row.t));
  return tables.filter((t) => !have.has(t.table));
}

/** Everything about the existing publication that differs from what the reader needs. */
export async function publicationDifferences(client: pg.Client, name: string, tables: readonly SourceTable[]): Promise<string[]> {
  const differences: string[] = [];
  const pub = await client.query<{ puballtables: boolean; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean }>(
    'SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1',
    [name],
  );
  const flags = pub.rows[0];
  if (!flags) return ['it does not exist'];
  if (flags.puballtables) differences.push('it is FOR ALL TABLES');
  const off = (['insert', 'update', 'delete', 'truncate'] as const).filter((op) => !flags[`pub${op}`]);
  if (off.length > 0) differences.push(`it does not publish ${off.join(', ')}`);

  // to_jsonb: the column list (attnames) and row filter columns exist from PostgreSQL 15 on.
  const published = await client.query<{ row: { schemaname: string; tablename: string; attnames?: string[] | null; rowfilter?: string | null } }>(
    'SELECT to_jsonb(t) AS row FROM pg_publication_tables t WHERE pubname = $1',
    [name],
  );
  const wanted = new Map(tables.map((t) => [t.table, t]));
  const seen = new Set<string>();
  const extra: string[] = [];
  for (const { row } of published.rows) {
    const table = `${row.schemaname}.${row.tablename}`;
    seen.add(table);
    const config = wanted.get(table);
    if (!config) {
      extra.push(table);
      continue;
    }
    if (row.rowfilter) differences.push(`${table} has a row filter (${row.rowfilter})`);
    if (Array.isArray(row.attnames)) {
      const missing = config.columns.filter((column) => !row.attnames?.includes(column));
      if (missing.length > 0) differences.push(`${table} leaves out columns ${missing.join(', ')}`);
    }
  }
  const missing = [...wanted.keys()].filter((table) => !seen.has(table));
  if (missing.length > 0) differences.push(`it lacks ${missing.join(', ')}`);
  if (extra.length > 0) differences.push(`it also publishes ${extra.join(', ')}`);
  return differences;
}

export async function readSlot(client: pg.Client, name: string): Promise<SlotState | undefined> {
  const result = await client.query<{
    plugin: string | null;
    slot_type: string;
    database: string | null;
    temporary: boolean;
    active: boolean;
    active_pid: number | null;
    confirmed_flush_lsn: string | null;
    restart_lsn: string | null;
    wal_status: string | null;
  }>(
    `SELECT plugin::text, slot_type, database::text, temporary, active, active_pid,
            confirmed_flush_lsn::text, restart_lsn::text, wal_status
       FROM pg_replication_slots WHERE slot_name = $1`,
    [name],
  );
  const row = result.rows[0];
  if (!row) return undefined;
  return {
    name,
    plugin: row.plugin,
    slotType: row.slot_type,
    database: row.database,
    temporary: row.temporary,
    active: row.active,
    activePid: row.active_pid,
    confirmedFlushLsn: row.confirmed_flush_lsn ? Lsn.parse(row.confirmed_flush_lsn) : undefined,
    restartLsn: row.restart_lsn ? Lsn.parse(row.restart_lsn) : undefined,
    walStatus: row.wal_status,
  };
}

async function ensureSlot(client: pg.Client, name: string, database: string): Promise<SlotState & { created: boolean }> {
  let created = false;
  if (!(await readSlot(client, name))) {
    try {
      // Waits for transactions running now to end: the slot starts at a consistent point.
      await client.query(`SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [name]);
      created = true;
    } catch (error) {
      if (sqlStateOf(error) !== DUPLICATE_OBJECT) throw error;
    }
  }
  const slot = await readSlot(client, name);
  if (!slot) throw new SlotLostError(name, 'it was dropped while the reader was starting');
  assertUsableSlot(slot, database);
  return { ...slot, created };
}

/** Throws unless the slot is a healthy logical pgoutput slot of `database`. */
export function assertUsableSlot(slot: SlotState, database: string): void {
  const differences: string[] = [];
  if (slot.slotType !== 'logical') differences.push(`it is a ${slot.slotType} slot, not logical`);
  if (slot.plugin !== null && slot.plugin !== 'pgoutput') differences.push(`its plugin is ${slot.plugin}, not pgoutput`);
  if (slot.database !== null && slot.database !== database) differences.push(`it belongs to database ${slot.database}, not ${database}`);
  if (slot.temporary) differences.push('it is temporary');
  if (differences.length > 0) throw new SlotMismatchError(slot.name, differences);
  if (slot.walStatus === 'lost') throw new SlotLostError(slot.name, `wal_status is 'lost' (max_slot_wal_keep_size was exceeded)`);
  if (slot.confirmedFlushLsn === undefined) throw new SlotLostError(slot.name, 'it has no confirmed_flush_lsn');
}
