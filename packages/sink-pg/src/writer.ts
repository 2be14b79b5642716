/**
 * One batch = one sink transaction:
 *
 *   BEGIN
 *   SELECT epoch FROM cdc_owner … FOR UPDATE      fenced? → FencedError, nothing written
 *   [retry only] checkpoints already at target? → ROLLBACK, done (the COMMIT had landed)
 *   SAVEPOINT cdc_chunk
 *   set-based guarded statements (unnest, named), in order
 *   RELEASE SAVEPOINT cdc_chunk
 *   INSERT … cdc_checkpoint … ON CONFLICT …       same transaction as the rows
 *   dead letters published (PubAck awaited)       before COMMIT: a crash re-sends them (same Nats-Msg-Id)
 *   COMMIT
 *
 * A source transaction too large to hold in memory comes in chunks: a SinkSession keeps
 * the one sink transaction open and applies each chunk under its own savepoint, and the
 * checkpoints and COMMIT come with the last chunk. Nothing of it is visible, and nothing
 * of it is stored as applied, before the source transaction is whole in the sink.
 *
 * If the sink refuses a statement (SQLSTATE 22/23/42), a multi-row statement does not
 * say which event is at fault: roll back to the chunk's savepoint and apply the chunk
 * again one event at a time, each under a SAVEPOINT; refused events are rolled back to
 * their savepoint and dead-lettered, the rest commit. Connection errors and
 * serialization failures are thrown as retriable: the caller retries the whole batch.
 */
import { CdcError, IllegalStateError, type ChangeEvent } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import type { Pool, PoolClient } from 'pg';
import { buildStatements, planEvent, type GroupLimits, type RowOp, type Statement } from './apply.ts';
import { alreadyCommitted, assertOwner, writeCheckpoints } from './checkpoints.ts';
import { SHAPE_REFUSALS, SinkRefusedError, SinkSchemaError, classifyPgError, fromPgError, pgFields, sqlstateOf } from './errors.ts';
import { createTableSql, shapeChanges, sinkTypeLookup, typeNameForOid, type SchemaChanges } from './evolve.ts';
import type { LaneCheckpoint } from '@cdc/committer';
import type { SinkTable, TableCatalog } from './schema.ts';

export interface Refusal {
  /** Index of the refused event in the batch. */
  readonly item: number;
  readonly error: SinkRefusedError;
}

export interface ApplyRequest {
  readonly events: readonly ChangeEvent[];
  readonly checkpoints: readonly LaneCheckpoint[];
  readonly epoch: number;
  /** A previous attempt of this batch failed in an unknown state: check before applying again. */
  readonly retry: boolean;
  /** Called inside the transaction, before COMMIT, with every refused event. */
  readonly beforeCommit: (refusals: readonly Refusal[]) => Promise<void>;
}

export interface ApplyOutcome {
  readonly mode: 'batched' | 'isolated' | 'already-committed';
  readonly statements: number;
  readonly rowsWritten: number;
  readonly refusals: readonly Refusal[];
}

export type ChunkOutcome = Omit<ApplyOutcome, 'mode'> & { readonly mode: 'batched' | 'isolated' };

/** Batched statements met events whose row the sink lacks: the chunk goes event by event. */
class AbsentRows extends Error {
  constructor(readonly items: readonly { item: number }[]) {
    super(`${items.length} change(s) need a sink row that is not there`);
    this.name = 'AbsentRows';
  }
}

interface Plan {
  readonly ops: RowOp[];
  readonly refused: Map<number, SinkRefusedError>;
}

/**
 * One open sink transaction (BEGIN + owner check done), fed chunk by chunk. Owned by
 * whoever opened it: it ends with `commit` or `abort`, which return the connection.
 */
export class SinkSession {
  readonly #writer: SinkWriter;
  readonly #client: PoolClient;
  readonly #epoch: number;
  #ended = false;

  constructor(writer: SinkWriter, client: PoolClient, epoch: number) {
    this.#writer = writer;
    this.#client = client;
    this.#epoch = epoch;
  }

  get client(): PoolClient {
    return this.#client;
  }

  /** Applies one chunk of events in order; refused events are returned, not applied. */
  async apply(events: readonly ChangeEvent[]): Promise<ChunkOutcome> {
    this.#assertOpen('apply');
    return this.#guard(() => this.#writer.applyChunk(this.#client, events));
  }

  /** Writes the checkpoints, lets the caller act on refusals inside the transaction, and COMMITs. */
  async commit(checkpoints: readonly LaneCheckpoint[], beforeCommit?: () => Promise<void>): Promise<void> {
    this.#assertOpen('commit');
    await this.#guard(async () => {
      await writeCheckpoints(this.#client, this.#writer.pipeline, this.#epoch, checkpoints);
      await beforeCommit?.();
      await this.#client.query('COMMIT');
    });
    this.#end(false);
  }

  /** Rolls back whatever is open and returns the connection (discarded if it broke). Idempotent. */
  async abort(): Promise<void> {
    if (this.#ended) return;
    let broken = false;
    await this.#client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    // Schema changes made in the transaction are gone with it.
    this.#writer.forgetShapes();
    this.#end(broken);
  }

  /** Errors end the session: rolled back, connection returned, the error typed. */
  async #guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      let broken = !(error instanceof CdcError) && sqlstateOf(error) === undefined;
      await this.#client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      this.#writer.forgetShapes();
      this.#end(broken);
      throw fromPgError(error, {});
    }
  }

  #assertOpen(action: string): void {
    if (this.#ended) throw new IllegalStateError('sink-session', 'ended', action);
  }

  #end(broken: boolean): void {
    this.#ended = true;
    // A broken connection must not go back to the pool.
    this.#client.release(broken ? true : undefined);
  }
}

export class SinkWriter {
  readonly #pool: Pool;
  readonly #catalog: TableCatalog;
  readonly #pipeline: string;
  readonly #logger: Logger;
  readonly #limits: GroupLimits | undefined;
  readonly #schemaChanges: SchemaChanges;
  /** Event shapes each cached table was found to take; a refreshed table is a new object, checked anew. */
  readonly #fitted = new WeakMap<SinkTable, Set<string>>();

  constructor(options: {
    pool: Pool;
    catalog: TableCatalog;
    pipeline: string;
    logger: Logger;
    groupLimits?: GroupLimits;
    /** evolve (default): the sink table follows the events' shape; fail: hold until the operator fixes it. */
    schemaChanges?: SchemaChanges | undefined;
  }) {
    this.#pool = options.pool;
    this.#catalog = options.catalog;
    this.#pipeline = options.pipeline;
    this.#logger = options.logger;
    this.#limits = options.groupLimits;
    this.#schemaChanges = options.schemaChanges ?? 'evolve';
  }

  /** Drops the cached table shapes (after a rollback that may have undone DDL made in it). */
  forgetShapes(): void {
    this.#catalog.clear();
  }

  get pipeline(): string {
    return this.#pipeline;
  }

  /** BEGIN and the owner check on a pooled connection: FencedError if `epoch` is no longer the owner's. */
  async begin(epoch: number): Promise<SinkSession> {
    let client: PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw fromPgError(error, {});
    }
    const session = new SinkSession(this, client, epoch);
    try {
      await client.query('BEGIN');
      await assertOwner(client, this.#pipeline, epoch);
    } catch (error) {
      await session.abort();
      throw fromPgError(error, {});
    }
    return session;
  }

  /** One batch in one sink transaction (see the top of this file). */
  async apply(request: ApplyRequest): Promise<ApplyOutcome> {
    const session = await this.begin(request.epoch);
    try {
      if (request.retry && (await alreadyCommitted(session.client, this.#pipeline, request.checkpoints))) {
        await session.abort();
        return { mode: 'already-committed', statements: 0, rowsWritten: 0, refusals: [] };
      }
      const outcome = await session.apply(request.events);
      await session.commit(request.checkpoints, async () => {
        if (outcome.refusals.length > 0) await request.beforeCommit(outcome.refusals);
      });
      return outcome;
    } finally {
      await session.abort();
    }
  }

  /** Inside an open transaction: the chunk's statements under a savepoint, event by event if the sink refuses one. */
  async applyChunk(client: PoolClient, events: readonly ChangeEvent[]): Promise<ChunkOutcome> {
    let plan = await this.#plan(client, events);
    let mode: ChunkOutcome['mode'] = 'batched';
    let counts: { statements: number; rows: number };
    await client.query('SAVEPOINT cdc_chunk');
    try {
      counts = await this.#runAll(client, buildStatements(plan.ops, this.#limits));
    } catch (error) {
      if (!(error instanceof AbsentRows) && classifyPgError(error) !== 'refusal') throw error;
      await client.query('ROLLBACK TO SAVEPOINT cdc_chunk');
      // The refusal may come from a stale cached schema: look the tables up again.
      for (const event of events) this.#catalog.invalidate(event.table);
      if (error instanceof AbsentRows) {
        this.#logger.info({ items: error.items.length }, 'the sink lacks rows that changes with unchanged TOAST columns need; applying event by event');
      } else {
        this.#logger.info({ sqlstate: sqlstateOf(error), err: error }, 'sink refused a batched statement; applying event by event');
      }
      plan = await this.#plan(client, events);
      mode = 'isolated';
      counts = await this.#runIsolated(client, plan, events);
    }
    await client.query('RELEASE SAVEPOINT cdc_chunk');
    const refusals = [...plan.refused].sort(([a], [b]) => a - b).map(([item, error]) => ({ item, error }));
    return { mode, statements: counts.statements, rowsWritten: counts.rows, refusals };
  }

  /**
   * Resolves sink tables and plans each event; schema mismatches are found before any SQL
   * runs. evolve: the sink table is made to fit (evolve.ts), in this transaction. A shape
   * problem that remains (fail, or what evolve cannot fix) is thrown as SinkSchemaError:
   * retriable, the committer holds; it is never a dead letter.
   */
  async #plan(client: PoolClient, events: readonly ChangeEvent[]): Promise<Plan> {
    const ops: RowOp[] = [];
    const refused = new Map<number, SinkRefusedError>();
    const refreshed = new Set<string>();
    const lookup = sinkTypeLookup(client);
    for (let item = 0; item < events.length; item++) {
      const event = events[item];
      if (event === undefined) continue;
      const context = { lsn: event.commitLsn, eventId: event.eventId };
      let table = await this.#catalog.resolve(event.table, client);
      if (table instanceof SinkRefusedError && table.kind === 'table_missing' && this.#schemaChanges === 'evolve') {
        const sql = await createTableSql(this.#catalog.sinkNameOf(event.table), event, lookup);
        if (sql instanceof SinkSchemaError) throw sql;
        await this.#ddl(client, sql, event, 'created the sink table');
        this.#catalog.invalidate(event.table);
        table = await this.#catalog.resolve(event.table, client);
      }
      if (table instanceof SinkRefusedError) throw this.#held(table.withContext(context), event);
      if (this.#schemaChanges === 'evolve' && !this.#fits(table, event)) {
        const changes = await shapeChanges(event, table, lookup);
        if (changes instanceof SinkSchemaError) throw changes;
        if (changes.length > 0) {
          for (const change of changes) await this.#ddl(client, change.sql, event, change.what, change.column);
          this.#catalog.invalidate(event.table);
          const evolved = await this.#catalog.resolve(event.table, client);
          if (evolved instanceof SinkRefusedError) throw this.#held(evolved.withContext(context), event);
          table = evolved;
        }
        this.#fitted.get(table)?.add(shapeKey(event)) ?? this.#fitted.set(table, new Set([shapeKey(event)]));
      }
      let planned = planEvent(event, table, item);
      // A column the cached schema lacks may have been added since: look once more.
      if (planned instanceof SinkRefusedError && planned.kind === 'column_missing' && !refreshed.has(event.table)) {
        refreshed.add(event.table);
        this.#catalog.invalidate(event.table);
        const again = await this.#catalog.resolve(event.table, client);
        planned = again instanceof SinkRefusedError ? again : planEvent(event, again, item);
      }
      if (planned instanceof SinkRefusedError && SHAPE_REFUSALS.has(planned.kind)) throw this.#held(planned.withContext(context), event);
      if (planned instanceof SinkRefusedError) refused.set(item, planned.withContext(context));
      else ops.push(...planned);
    }
    return { ops, refused };
  }

  /** The table already takes events of this shape (columns and their OIDs): checked once per cached table object. */
  #fits(table: SinkTable, event: ChangeEvent): boolean {
    return this.#fitted.get(table)?.has(shapeKey(event)) ?? false;
  }

  /** One schema change on the sink, in the batch's transaction; a failure holds the committer. */
  async #ddl(client: PoolClient, sql: string, event: ChangeEvent, what: string, column?: string): Promise<void> {
    const context = { table: this.#catalog.sinkNameOf(event.table), lsn: event.commitLsn, eventId: event.eventId, ...(column ? { column } : {}) };
    try {
      await client.query(sql);
    } catch (error) {
      const cause = fromPgError(error, context);
      if (cause.retriable) throw cause;
      throw new SinkSchemaError('evolve_failed', `SCHEMA_CHANGES=evolve could not change ${context.table}: ${cause.message}; change the sink table by hand`, context, error);
    }
    this.#logger.info({ ...context, event_id: event.eventId, sql }, `schema change followed on the sink: ${what}`);
  }

  /** A refusal about the sink table's shape, as the error that holds the committer. */
  #held(refusal: SinkRefusedError, event: ChangeEvent): SinkSchemaError {
    this.#catalog.invalidate(event.table);
    const fix = this.#schemaChanges === 'fail' ? 'SCHEMA_CHANGES=fail' : 'SCHEMA_CHANGES=evolve cannot fix it';
    return new SinkSchemaError(
      refusal.kind,
      `holding at ${refusal.context.table ?? event.table}${typeof refusal.context.column === 'string' ? ` column ${refusal.context.column}` : ''} ` +
        `(event ${event.eventId}, LSN ${event.commitLsn}): ${refusal.message}; ${fix}: change the sink table and the committer goes on by itself`,
      { ...refusal.context, table: refusal.context.table ?? event.table, lsn: event.commitLsn, eventId: event.eventId },
      refusal,
    );
  }

  /**
   * Batched: any event the sink lacks a row for sends the chunk back (AbsentRows) to be
   * applied event by event, where each event's savepoint keeps it atomic (an update that
   * moved its key and deleted the old row must not half-apply).
   */
  async #runAll(client: PoolClient, statements: readonly Statement[]): Promise<{ statements: number; rows: number }> {
    let rows = 0;
    for (const statement of statements) {
      const result = await this.#execute(client, statement);
      if (result.absent.length > 0) throw new AbsentRows(result.absent);
      rows += result.rows;
    }
    return { statements: statements.length, rows };
  }

  /** Runs one statement; `absent` are its items the sink has no row for (see Statement.absentRefusal / ifNoRows). */
  async #execute(client: PoolClient, statement: Statement): Promise<{ rows: number; absent: { item: number; error: SinkRefusedError }[] }> {
    // Named: pg parses it once per connection (its own cache, keyed by name) and PostgreSQL plans it once.
    const result = await client.query<{ written?: number; absent?: number[]; ok?: boolean }>(
      statement.name === undefined ? { text: statement.text, values: statement.values } : { name: statement.name, text: statement.text, values: statement.values },
    );
    if (statement.absentRefusal) {
      const row = result.rows[0];
      const refusal = statement.absentRefusal;
      return { rows: row?.written ?? 0, absent: (row?.absent ?? []).map((item) => ({ item, error: refusal(item) })) };
    }
    const rows = result.rowCount ?? 0;
    if (rows === 0 && statement.ifNoRows) {
      const { check, refusal } = statement.ifNoRows;
      const verdict = await client.query<{ ok: boolean }>(
        check.name === undefined ? { text: check.text, values: check.values } : { name: check.name, text: check.text, values: check.values },
      );
      const item = statement.items[0];
      if (verdict.rows[0]?.ok !== true && item !== undefined) return { rows, absent: [{ item, error: refusal() }] };
    }
    return { rows, absent: [] };
  }

  async #runIsolated(client: PoolClient, plan: Plan, events: readonly ChangeEvent[]): Promise<{ statements: number; rows: number }> {
    const byItem = new Map<number, RowOp[]>();
    for (const op of plan.ops) {
      const ops = byItem.get(op.item) ?? [];
      ops.push(op);
      byItem.set(op.item, ops);
    }
    let statements = 0;
    let rows = 0;
    for (const [item, ops] of byItem) {
      const event = events[item];
      if (event === undefined) continue;
      await client.query('SAVEPOINT cdc_event');
      try {
        let absent: SinkRefusedError | undefined;
        for (const statement of buildStatements(ops, this.#limits)) {
          const result = await this.#execute(client, statement);
          statements += 1;
          absent = result.absent[0]?.error;
          if (absent) break;
          rows += result.rows;
        }
        if (absent) {
          // Nothing of this event stays written.
          await client.query('ROLLBACK TO SAVEPOINT cdc_event');
          await client.query('RELEASE SAVEPOINT cdc_event');
          if (event.snapshotPending) {
            // Its table's snapshot has not reached this row yet: the chunk that holds it
            // brings it whole, this change included (@cdc/pg-source snapshot.ts). Skipped, not refused.
            this.#logger.debug({ table: event.table, lsn: event.commitLsn, event_id: event.eventId }, 'change to a row the snapshot has not brought yet: skipped, the snapshot carries it');
            continue;
          }
          // Refused with the reason.
          plan.refused.set(item, absent.withContext({ lsn: event.commitLsn, eventId: event.eventId }));
          continue;
        }
        await client.query('RELEASE SAVEPOINT cdc_event');
      } catch (error) {
        if (classifyPgError(error) !== 'refusal') throw error;
        await client.query('ROLLBACK TO SAVEPOINT cdc_event');
        await client.query('RELEASE SAVEPOINT cdc_event');
        const refusal = await this.#describe(error, event, ops);
        // The table changed under us (a column dropped on the sink …): hold, never dead-letter.
        if (SHAPE_REFUSALS.has(refusal.kind)) throw this.#held(refusal, event);
        // A value its own source type holds, refused by a narrower sink column: the sink's shape, not the data.
        if (await this.#validAtSource(refusal, event)) throw this.#held(refusal, event);
        // NOT NULL on a sink column the events no longer carry (dropped on the source): the sink's shape too.
        const column = refusal.context.column;
        if (refusal.context.sqlstate === '23502' && typeof column === 'string' && event.after !== null && !(column in event.after)) {
          throw this.#held(refusal, event);
        }
        plan.refused.set(item, refusal);
      }
    }
    return { statements, rows };
  }

  /**
   * A value refusal (22xxx) whose value is valid in the type the SOURCE declared for it
   * (its columnTypes OID, probed on a pool connection): the sink column is narrower (a
   * shorter varchar, a smaller numeric, an incompatible type change) — held, not a dead
   * letter. A value invalid in its own type, or without a known type, is input that can
   * never be applied: dead-lettered.
   */
  async #validAtSource(refusal: SinkRefusedError, event: ChangeEvent): Promise<boolean> {
    const column = refusal.context.column;
    if (refusal.kind !== 'value_refused' || typeof column !== 'string') return false;
    const oid = event.columnTypes[column];
    const value = event.after?.[column];
    if (oid === undefined || value === undefined || value === null) return false;
    const type = await typeNameForOid(oid, sinkTypeLookup(this.#pool));
    if (type === undefined) return false;
    try {
      await this.#pool.query(`SELECT $1::${type}`, [value]);
      return true;
    } catch (probe) {
      if (classifyPgError(probe) === 'refusal') return false;
      throw fromPgError(probe, { table: refusal.context.table, column, lsn: event.commitLsn, eventId: event.eventId });
    }
  }

  /** The refusal with the column named: from the server when it says, else by probing each value's cast. */
  async #describe(error: unknown, event: ChangeEvent, ops: readonly RowOp[]): Promise<SinkRefusedError> {
    const table = ops[0]?.table;
    const context = { table: table?.display ?? event.table, lsn: event.commitLsn, eventId: event.eventId };
    const refusal = fromPgError(error, context);
    if (!(refusal instanceof SinkRefusedError)) throw refusal;
    if (refusal.context.column !== undefined || table === undefined) return refusal;
    const column = await this.#findRefusedColumn(error, table, ops);
    if (column === undefined) return refusal;
    const sinkColumn = table.columns.get(column);
    return new SinkRefusedError(
      refusal.kind,
      `sink column ${table.display}.${column} (${sinkColumn?.fullType ?? 'unknown type'}) refused the value: ${pgFields(error).message ?? ''}`,
      { ...refusal.context, column },
      error,
    );
  }

  async #findRefusedColumn(error: unknown, table: SinkTable, ops: readonly RowOp[]): Promise<string | undefined> {
    const upsert = ops.find((op) => op.kind === 'upsert');
    if (upsert?.kind !== 'upsert') return undefined;
    const state = sqlstateOf(error);
    if (state === '22001') {
      return upsert.columns.find((column, i) => {
        const max = table.columns.get(column)?.maxLength;
        const value = upsert.values[i];
        return max !== undefined && value !== null && value !== undefined && [...value].length > max;
      });
    }
    if (!state?.startsWith('22')) return undefined;
    // Outside the batch transaction (a pool connection): a failed probe must not abort it.
    for (let i = 0; i < upsert.columns.length; i++) {
      const column = upsert.columns[i];
      const value = upsert.values[i];
      const type = column === undefined ? undefined : table.columns.get(column)?.castType;
      if (column === undefined || type === undefined || value === null || value === undefined) continue;
      try {
        await this.#pool.query(`SELECT $1::${type}`, [value]);
      } catch (probe) {
        if (classifyPgError(probe) === 'refusal') return column;
      }
    }
    return undefined;
  }
}

/** The columns an event writes and their type OIDs: what evolve checks a table against. */
function shapeKey(event: ChangeEvent): string {
  let key = '';
  for (const column of Object.keys(event.after ?? event.before ?? {})) key += `${column}\u0000${event.columnTypes[column] ?? ''}\u0001`;
  return key;
}
