/**
 * Snapshots: the rows a table already holds, read in primary-key chunks while the stream
 * runs, and placed in the stream so that every stage treats them like changes.
 *
 * One algorithm for the initial snapshot and for a backfill asked for later: the
 * watermark chunking of DBLog (Netflix) that Debezium's incremental snapshots also use.
 * For each chunk of a table:
 *
 *   1. low watermark   pg_logical_emit_message(true, 'cdc-snapshot', {mark: low, job, chunk})
 *   2. read the chunk  SELECT … WHERE key > last ORDER BY key LIMIT n     (any snapshot)
 *   3. high watermark  one transaction: UPDATE _cdc.snapshot_jobs (the job's last key)
 *                      + pg_logical_emit_message(true, 'cdc-snapshot', {mark: high, range})
 *
 * The reader sees both watermarks in the WAL, in commit order with every change. Between
 * them (the window) it notes the changes to the chunk's table (`observe`). At the high
 * watermark the chunk's rows become `read` events of that watermark's transaction, so they
 * carry its Lamport stamp and commit LSN and sit exactly between the changes committed
 * before it and those after it:
 *  - a key no change touched in the window: the row as read — it is the row at the high
 *    watermark, since nothing changed it between the low and high watermark;
 *  - a key changed in the window: the row as read with the window's changes laid over it
 *    in order (overlay): each change sets the columns it carries, a delete removes the row.
 *    Whether the SELECT saw a change or not, the result is the row as of the high
 *    watermark — also for a TOAST column an update left unchanged (the read has it, the
 *    update kept it).
 * So no change is lost or applied twice in the seam, and the sink's version guard
 * (commitLsn, seq) orders snapshot rows and changes like any two changes.
 *
 * Why not an exported snapshot from the slot's creation: it gives one consistent read, but
 * only while the creating connection stays open; a reader killed mid-snapshot would have
 * to start the whole table again, and a backfill of a table added later has no such
 * snapshot at all. The watermark way resumes after a kill from its last chunk and serves
 * both.
 *
 * Durable state lives in the source (schema `_cdc`, not in the publication): the jobs with
 * their last key, written in the high watermark's own transaction, so "the chunk's high
 * watermark is in the WAL" and "the job moved past the chunk" are one fact. After a kill:
 *  - chunks whose high watermark the slot has confirmed are applied downstream;
 *  - a high watermark after the slot's position is replayed from the WAL: the reader reads
 *    that chunk's key range again (`SELECT … WHERE key > lower AND key <= upper`) and
 *    emits it at the same place with the same event ids (one per key per high watermark),
 *    so the gate drops what had passed; the next chunk starts after the job's last key.
 *    A row read again may be newer than its watermark; the changes after the watermark
 *    follow it in the stream, so the sink ends equal to the source;
 *  - a low watermark without its high one is a chunk that never finished: done again.
 *
 * Before its snapshot is done, a change to a row of the table that the sink does not have
 * yet (an update that left TOAST columns unchanged) carries `snapshotPending`: the chunk
 * that holds the row brings it whole later, so the sink skips it instead of refusing it.
 *
 * Signals: a row in `_cdc.snapshot_signals` (the CLI writes one, so may any SQL client)
 * asks this slot's reader to backfill tables, optionally a key range.
 */
import { CdcError, errorMessage, keyText, systemClock, type ChangeEvent, type Clock, type Row, type SnapshotKind } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import pg from 'pg';
import { qualified, type SourceTable } from './catalog.ts';
import { clientConfig, quoteIdent, sqlStateOf } from './connection.ts';
import { SNAPSHOT_PREFIX } from './pgoutput.ts';
import { SourcePrivilegeError } from './errors.ts';

export type SnapshotMode = 'initial' | 'never' | 'initial_only';
export const SNAPSHOT_MODES: readonly SnapshotMode[] = ['initial', 'never', 'initial_only'];

export const SNAPSHOT_DEFAULTS = {
  /** Rows per chunk: what one high watermark's transaction carries, and what the reader holds per table. */
  chunkRows: 2_000,
  /** Tables read at the same time. */
  parallelism: 2,
  /** How often the signal table is looked at. */
  signalIntervalMs: 1_000,
  /** How often a running job logs its progress. */
  progressLogMs: 5_000,
} as const;

type Key = readonly (string | null)[];

export interface SnapshotMark {
  readonly v: 1;
  readonly mark: 'low' | 'high';
  readonly job: number;
  readonly chunk: number;
  readonly table: string;
  readonly kind: SnapshotKind;
  /** high: the chunk's range — keys after `lower` (from it, when `lowerInclusive`) through `upper`; upper null: empty chunk. */
  readonly lower?: Key | null;
  readonly lowerInclusive?: boolean;
  readonly upper?: Key | null;
  /** high: the job ends with this chunk. */
  readonly last?: boolean;
  /**
   * high: the chunk's keys in key order. A row's place in this list is its seq in the
   * watermark's transaction, so a chunk read again after a restart numbers every row as
   * the first read did (the committer's checkpoint and the gate's claims are by position),
   * and a row the first read did not have (inserted since) is left to its own change.
   */
  readonly keys?: readonly Key[];
}

/** A snapshot row to publish as a `read` event. */
export interface SnapshotRead {
  /** Its place in the chunk (SnapshotMark.keys): its seq after the transaction's own events. */
  readonly index: number;
  readonly table: SourceTable;
  readonly key: Key;
  readonly row: Row;
  readonly columnTypes: Readonly<Record<string, number>>;
  readonly snapshot: SnapshotKind;
}

export interface SnapshotJobProgress {
  readonly job: number;
  readonly kind: SnapshotKind;
  readonly table: string;
  readonly status: 'pending' | 'running' | 'done' | 'failed';
  readonly chunks: number;
  readonly rowsRead: number;
  readonly rowsEstimated: number | null;
  /** Rows per second since this process started the job. */
  readonly rate: number | null;
  readonly etaSeconds: number | null;
  readonly error?: string;
}

interface Job {
  readonly id: number;
  readonly kind: SnapshotKind;
  readonly table: string;
  readonly rangeFrom: Key | null;
  readonly rangeTo: Key | null;
  lastKey: Key | null;
  chunks: number;
  rowsRead: number;
  rowsEstimated: number | null;
  status: 'pending' | 'running' | 'done' | 'failed';
  error?: string;
  startedAt?: number;
  rowsAtStart?: number;
}

interface Window {
  readonly chunk: number;
  /** keyText → the window's changes to that key, in stream order. */
  readonly changes: Map<string, ChangeEvent[]>;
  truncated: boolean;
}

interface TableShape {
  /** Key columns with their types for the range predicate (format_type). */
  readonly keyTypes: readonly string[];
  /** Columns read (not generated, not dropped), in attnum order. */
  readonly columns: readonly string[];
}

export class SnapshotError extends CdcError {
  constructor(message: string, context: Record<string, unknown>, cause?: unknown) {
    super(message, { code: 'SNAPSHOT_FAILED', retriable: false, context, cause });
  }
}

const CREATE_SCHEMA_SQL = 'CREATE SCHEMA IF NOT EXISTS _cdc';
const SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS _cdc.snapshot_jobs (
  slot text NOT NULL,
  id bigint GENERATED ALWAYS AS IDENTITY,
  kind text NOT NULL CHECK (kind IN ('initial', 'incremental')),
  table_name text NOT NULL,
  range_from text[],
  range_to text[],
  last_key text[],
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
  chunks integer NOT NULL DEFAULT 0,
  rows_read bigint NOT NULL DEFAULT 0,
  rows_estimated bigint,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (slot, id)
);
CREATE TABLE IF NOT EXISTS _cdc.snapshot_signals (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  slot text NOT NULL,
  tables text[] NOT NULL,
  range_from text[],
  range_to text[],
  created_at timestamptz NOT NULL DEFAULT now(),
  taken_at timestamptz,
  jobs bigint[]
);`;

/**
 * Creates the `_cdc` schema and its tables if missing (one at a time across readers: an
 * advisory lock). When both tables exist nothing is created (no DDL, so no CREATE
 * privilege is needed: an administrator may have made them for a least-privilege role).
 */
export async function ensureSnapshotSchema(client: Pick<pg.Client, 'query'>): Promise<void> {
  const existing = await client.query<{ schema: boolean; jobs: string | null; signals: string | null }>(
    `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '_cdc') AS schema,
            to_regclass('_cdc.snapshot_jobs')::text AS jobs, to_regclass('_cdc.snapshot_signals')::text AS signals`,
  );
  const found = existing.rows[0];
  if (found?.jobs && found.signals) return;
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('cdc._cdc schema'))`);
    // CREATE SCHEMA IF NOT EXISTS checks CREATE on the database even when the schema
    // exists: skipped when it does (an administrator's `CREATE SCHEMA _cdc AUTHORIZATION <reader>`).
    if (!found?.schema) await client.query(CREATE_SCHEMA_SQL);
    await client.query(SCHEMA_SQL);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    if ((error as { code?: string }).code === '42501') {
      const role = await client.query<{ role: string }>('SELECT current_user AS role').then((result) => result.rows[0]?.role ?? '<reader role>', () => '<reader role>');
      throw new SourcePrivilegeError(
        'create the _cdc schema (the snapshot bookkeeping: _cdc.snapshot_jobs, _cdc.snapshot_signals)',
        `CREATE SCHEMA _cdc AUTHORIZATION ${quoteIdent(role)};`,
        error,
      );
    }
    throw error;
  }
}

/**
 * Queues the initial snapshot of `tables` for a slot about to be created: before the slot,
 * so a reader killed between the two finds the jobs (a slot re-created later gets a new
 * snapshot: its WAL does not cover the old one's gap). Nothing is queued when unfinished
 * initial jobs for this slot exist already.
 */
export async function queueInitialSnapshot(client: Pick<pg.Client, 'query'>, slot: string, tables: readonly string[]): Promise<number> {
  await ensureSnapshotSchema(client);
  const open = await client.query(`SELECT 1 FROM _cdc.snapshot_jobs WHERE slot = $1 AND kind = 'initial' AND status IN ('pending', 'running') LIMIT 1`, [slot]);
  if ((open.rowCount ?? 0) > 0) return 0;
  const inserted = await client.query(
    `INSERT INTO _cdc.snapshot_jobs (slot, kind, table_name) SELECT $1, 'initial', t FROM unnest($2::text[]) AS t`,
    [slot, tables],
  );
  return inserted.rowCount ?? 0;
}

/**
 * Queues a backfill of `tables` for the slot's reader as jobs (not a signal), so a reader
 * about to start knows them before its first change: tables just added to its publication.
 */
export async function queueBackfill(client: Pick<pg.Client, 'query'>, slot: string, tables: readonly string[]): Promise<number> {
  await ensureSnapshotSchema(client);
  const inserted = await client.query(
    `INSERT INTO _cdc.snapshot_jobs (slot, kind, table_name) SELECT $1, 'incremental', t FROM unnest($2::text[]) AS t`,
    [slot, tables],
  );
  return inserted.rowCount ?? 0;
}

/**
 * Asks the reader of `slot` to backfill `tables` (all of each, or keys from `rangeFrom`
 * through `rangeTo`, inclusive, as key values in text form): a signal row it takes within
 * a second. Returns the signal id.
 */
export async function requestBackfill(
  client: Pick<pg.Client, 'query'>,
  request: { slot: string; tables: readonly string[]; rangeFrom?: Key | null; rangeTo?: Key | null },
): Promise<number> {
  await ensureSnapshotSchema(client);
  const result = await client.query<{ id: string }>(
    'INSERT INTO _cdc.snapshot_signals (slot, tables, range_from, range_to) VALUES ($1, $2, $3, $4) RETURNING id::text',
    [request.slot, request.tables, request.rangeFrom ?? null, request.rangeTo ?? null],
  );
  return Number(result.rows[0]?.id);
}

/** The jobs of a slot, newest first (for the CLI and tests). */
export async function readSnapshotJobs(client: Pick<pg.Client, 'query'>, slot: string): Promise<SnapshotJobProgress[]> {
  const exists = await client.query(`SELECT to_regclass('_cdc.snapshot_jobs') IS NOT NULL AS ok`);
  if (exists.rows[0]?.ok !== true) return [];
  const result = await client.query<{ id: string; kind: SnapshotKind; table_name: string; status: Job['status']; chunks: number; rows_read: string; rows_estimated: string | null; error: string | null }>(
    'SELECT id::text, kind, table_name, status, chunks, rows_read::text, rows_estimated::text, error FROM _cdc.snapshot_jobs WHERE slot = $1 ORDER BY id DESC',
    [slot],
  );
  return result.rows.map((row) => ({
    job: Number(row.id),
    kind: row.kind,
    table: row.table_name,
    status: row.status,
    chunks: row.chunks,
    rowsRead: Number(row.rows_read),
    rowsEstimated: row.rows_estimated === null ? null : Number(row.rows_estimated),
    rate: null,
    etaSeconds: null,
    ...(row.error === null ? {} : { error: row.error }),
  }));
}

export interface SnapshotterOptions {
  readonly connectionString: string;
  readonly slot: string;
  readonly tables: readonly SourceTable[];
  readonly mode: SnapshotMode;
  readonly logger: Logger;
  readonly chunkRows?: number;
  readonly parallelism?: number;
  readonly signalIntervalMs?: number;
  readonly clock?: Clock;
}

/** Every value as PostgreSQL's text (what a ChangeEvent carries): no type parsing on chunk reads. */
const TEXT_TYPES = { getTypeParser: () => (value: string) => value };

/**
 * Owns the snapshot jobs of one slot: runs them (chunks, watermarks) and answers the
 * reader about the watermarks it meets in the stream. Created by the reader, closed by it.
 */
export class Snapshotter {
  readonly #options: SnapshotterOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #pool: pg.Pool;
  readonly #abort = new AbortController();
  readonly #tables: Map<string, SourceTable>;
  readonly #shapes = new Map<string, TableShape>();
  readonly #jobs = new Map<number, Job>();
  /** Tables with a job not done: their changes carry snapshotPending. */
  readonly #pendingTables = new Map<string, number>();
  readonly #windows = new Map<number, Window>();
  readonly #windowsByTable = new Map<string, Set<number>>();
  /** Chunks read by this process and not yet emitted: `job:chunk` → rows. */
  readonly #live = new Map<string, SnapshotRead[]>();
  /** `job:chunk` → resolves when the reader has emitted that chunk's high watermark. */
  readonly #waiting = new Map<string, () => void>();
  /** Jobs whose last chunk is in the transaction being read. */
  readonly #endingAtCommit: number[] = [];
  #driver: Promise<void> | undefined;
  #initialDone: Promise<void>;
  #resolveInitialDone!: () => void;
  #closed = false;

  private constructor(options: SnapshotterOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'snapshot', slot: options.slot });
    this.#clock = options.clock ?? systemClock;
    this.#pool = new pg.Pool({ ...clientConfig(options.connectionString, 'cdc-snapshot'), max: (options.parallelism ?? SNAPSHOT_DEFAULTS.parallelism) + 1 });
    this.#pool.on('error', () => undefined);
    this.#tables = new Map(options.tables.map((t) => [t.table, t]));
    this.#initialDone = new Promise((resolve) => {
      this.#resolveInitialDone = resolve;
    });
  }

  /**
   * Loads this slot's unfinished jobs before the stream starts (so its first changes already
   * know which tables are pending). With mode `never` and no `_cdc` schema there is nothing to do.
   */
  static async create(options: SnapshotterOptions): Promise<Snapshotter> {
    const snapshotter = new Snapshotter(options);
    try {
      await snapshotter.#loadJobs();
    } catch (error) {
      await snapshotter.close();
      throw error;
    }
    return snapshotter;
  }

  /** Starts running jobs and taking signals (after the stream is up). */
  start(): void {
    this.#driver ??= this.#drive().catch((error: unknown) => {
      if (!this.#abort.signal.aborted) this.#log.error({ err: error }, `snapshot driver stopped: ${errorMessage(error)}`);
    });
  }

  /** True while `table` has a snapshot job that is not done. */
  pending(table: string): boolean {
    return this.#pendingTables.has(table);
  }

  /** Resolves once no initial job is left (at once when there was none). */
  initialDone(): Promise<void> {
    return this.#initialDone;
  }

  progress(): SnapshotJobProgress[] {
    const now = this.#clock.now();
    return [...this.#jobs.values()].map((job) => {
      const elapsed = job.startedAt === undefined ? 0 : (now - job.startedAt) / 1000;
      const done = job.rowsRead - (job.rowsAtStart ?? 0);
      const rate = elapsed > 0 ? done / elapsed : null;
      const left = job.rowsEstimated === null ? null : Math.max(0, job.rowsEstimated - job.rowsRead);
      return {
        job: job.id,
        kind: job.kind,
        table: job.table,
        status: job.status,
        chunks: job.chunks,
        rowsRead: job.rowsRead,
        rowsEstimated: job.rowsEstimated,
        rate: rate === null ? null : Math.round(rate),
        etaSeconds: rate && left !== null && job.status === 'running' ? Math.round(left / rate) : null,
        ...(job.error === undefined ? {} : { error: job.error }),
      };
    });
  }

  /** A streamed change (reader, before publishing): noted in every open window of its table. */
  observe(event: ChangeEvent): void {
    if (this.#windowsByTable.size === 0) return;
    const jobs = this.#windowsByTable.get(event.table);
    if (!jobs) return;
    for (const job of jobs) {
      const window = this.#windows.get(job);
      if (!window) continue;
      if (event.op === 'truncate') {
        window.truncated = true;
        continue;
      }
      const key = keyText(event.key);
      const list = window.changes.get(key);
      if (list) list.push(event);
      else window.changes.set(key, [event]);
    }
  }

  /**
   * A snapshot watermark met in the stream. Low: opens the chunk's window. High: the rows to
   * emit now, in this transaction (then call `emitted`). Anything unreadable is logged and skipped.
   */
  async onMark(content: string, lsn: string): Promise<{ mark: SnapshotMark; reads: SnapshotRead[]; places: number } | undefined> {
    let mark: SnapshotMark;
    try {
      mark = JSON.parse(content) as SnapshotMark;
    } catch (error) {
      this.#log.warn({ lsn, err: error }, 'unreadable snapshot watermark skipped');
      return undefined;
    }
    if (mark.v !== 1 || typeof mark.job !== 'number' || typeof mark.chunk !== 'number' || typeof mark.table !== 'string') {
      this.#log.warn({ lsn, content }, 'unknown snapshot watermark skipped');
      return undefined;
    }
    if (mark.mark === 'low') {
      this.#openWindow(mark);
      return undefined;
    }
    const window = this.#windows.get(mark.job);
    const windowOf = window && window.chunk === mark.chunk ? window : undefined;
    this.#closeWindow(mark.job);
    const table = this.#tables.get(mark.table);
    if (!table) {
      this.#log.warn({ lsn, table: mark.table, job: mark.job }, 'snapshot watermark of a table this reader does not capture: skipped');
      return { mark, reads: [], places: 0 };
    }
    const keys = mark.keys ?? [];
    const id = `${mark.job}:${mark.chunk}`;
    let rows = this.#live.get(id);
    if (!rows) {
      // A replay (the reader restarted after the watermark was written): read the range
      // again, keep the keys the first read had, each at its first place.
      const places = new Map(keys.map((key, index) => [keyText(key), index]));
      const again = mark.upper === null || mark.upper === undefined ? [] : await this.#readRange(table, mark.kind, mark.lower ?? null, mark.lowerInclusive === true, mark.upper, undefined);
      rows = [];
      for (const read of again) {
        const index = places.get(keyText(read.key));
        if (index !== undefined) rows.push({ ...read, index });
      }
      this.#log.info({ lsn, table: mark.table, job: mark.job, chunk: mark.chunk, rows: rows.length, first_read: keys.length }, 'snapshot chunk read again for a replayed high watermark');
    }
    return { mark, reads: windowOf ? overlay(rows, windowOf, this.#log) : rows, places: keys.length };
  }

  /**
   * The reader published the high watermark's reads (they are in its transaction). The
   * last chunk of a job ends it only at that transaction's commit (`committed`): until
   * then the reads are not covered by a watermark.
   */
  emitted(mark: SnapshotMark): void {
    const id = `${mark.job}:${mark.chunk}`;
    this.#live.delete(id);
    this.#waiting.get(id)?.();
    this.#waiting.delete(id);
    if (mark.last) this.#endingAtCommit.push(mark.job);
  }

  /** The reader decoded a commit: jobs whose last chunk was in that transaction are done. */
  committed(): void {
    if (this.#endingAtCommit.length === 0) return;
    for (const job of this.#endingAtCommit.splice(0)) this.#finished(job);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort(new Error('snapshot closing'));
    for (const release of this.#waiting.values()) release();
    this.#waiting.clear();
    await this.#driver;
    await this.#pool.end().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- jobs -----------------------------------------------------------------------------

  async #loadJobs(): Promise<void> {
    const client = await this.#pool.connect();
    try {
      const exists = await client.query(`SELECT to_regclass('_cdc.snapshot_jobs') IS NOT NULL AS ok`);
      if (exists.rows[0]?.ok !== true) {
        this.#checkInitialDone();
        return;
      }
      const result = await client.query<{
        id: string;
        kind: SnapshotKind;
        table_name: string;
        range_from: string[] | null;
        range_to: string[] | null;
        last_key: string[] | null;
        status: Job['status'];
        chunks: number;
        rows_read: string;
        rows_estimated: string | null;
      }>(
        `SELECT id::text, kind, table_name, range_from, range_to, last_key, status, chunks, rows_read::text, rows_estimated::text
           FROM _cdc.snapshot_jobs WHERE slot = $1 AND status IN ('pending', 'running') ORDER BY id`,
        [this.#options.slot],
      );
      for (const row of result.rows) {
        const id = Number(row.id);
        if (this.#jobs.has(id)) continue;
        this.#addJob({
          id,
          kind: row.kind,
          table: row.table_name,
          rangeFrom: row.range_from,
          rangeTo: row.range_to,
          lastKey: row.last_key,
          chunks: row.chunks,
          rowsRead: Number(row.rows_read),
          rowsEstimated: row.rows_estimated === null ? null : Number(row.rows_estimated),
          status: row.status,
        });
      }
      // Empty tables are done before the stream starts: a row written after this is a change
      // in the stream only (checked later, a row written meanwhile would arrive twice: as its
      // insert and as a read of the same row).
      for (const job of this.#jobs.values()) {
        const table = this.#tables.get(job.table);
        if (job.status === 'pending' && table) await this.#startJob(job, table, client);
      }
      this.#checkInitialDone();
    } finally {
      client.release();
    }
  }

  #addJob(job: Job): void {
    this.#jobs.set(job.id, job);
    this.#pendingTables.set(job.table, (this.#pendingTables.get(job.table) ?? 0) + 1);
  }

  #finished(jobId: number, failure?: string): void {
    const job = this.#jobs.get(jobId);
    if (!job || job.status === 'done' || job.status === 'failed') return;
    job.status = failure === undefined ? 'done' : 'failed';
    if (failure !== undefined) job.error = failure;
    const left = (this.#pendingTables.get(job.table) ?? 1) - 1;
    if (left <= 0) this.#pendingTables.delete(job.table);
    else this.#pendingTables.set(job.table, left);
    const seconds = job.startedAt === undefined ? null : (this.#clock.now() - job.startedAt) / 1000;
    if (failure === undefined) {
      this.#log.info({ job: job.id, table: job.table, kind: job.kind, rows: job.rowsRead, chunks: job.chunks, seconds }, `snapshot of ${job.table} done: ${job.rowsRead} rows in ${job.chunks} chunks`);
    }
    this.#checkInitialDone();
  }

  #checkInitialDone(): void {
    const open = [...this.#jobs.values()].some((job) => job.kind === 'initial' && (job.status === 'pending' || job.status === 'running'));
    if (!open) this.#resolveInitialDone();
  }

  async #drive(): Promise<void> {
    const signal = this.#abort.signal;
    const parallelism = this.#options.parallelism ?? SNAPSHOT_DEFAULTS.parallelism;
    const running = new Map<number, Promise<void>>();
    let lastProgressLog = this.#clock.now();
    while (!signal.aborted) {
      try {
        await this.#takeSignals();
      } catch (error) {
        if (sqlStateOf(error) !== '42P01') this.#log.warn({ err: error }, `snapshot signals not read: ${errorMessage(error)}`);
      }
      for (const job of this.#jobs.values()) {
        if (running.size >= parallelism) break;
        if ((job.status === 'pending' || job.status === 'running') && !running.has(job.id)) {
          running.set(
            job.id,
            this.#runJob(job).finally(() => running.delete(job.id)),
          );
        }
      }
      if (this.#clock.now() - lastProgressLog >= SNAPSHOT_DEFAULTS.progressLogMs) {
        lastProgressLog = this.#clock.now();
        for (const job of this.progress()) {
          if (job.status !== 'running') continue;
          this.#log.info(
            { job: job.job, table: job.table, rows_read: job.rowsRead, rows_estimated: job.rowsEstimated, rate: job.rate, eta_s: job.etaSeconds },
            `snapshot ${job.table}: ${describeProgress(job)}`,
          );
        }
      }
      await Promise.race([this.#clock.sleep(this.#options.signalIntervalMs ?? SNAPSHOT_DEFAULTS.signalIntervalMs, signal).catch(() => undefined), ...running.values()]);
    }
    await Promise.allSettled(running.values());
  }

  async #takeSignals(): Promise<void> {
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      const signals = await client.query<{ id: string; tables: string[]; range_from: string[] | null; range_to: string[] | null }>(
        `SELECT id::text, tables, range_from, range_to FROM _cdc.snapshot_signals WHERE slot = $1 AND taken_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED`,
        [this.#options.slot],
      );
      const added: Job[] = [];
      for (const signal of signals.rows) {
        const ids: number[] = [];
        for (const table of signal.tables) {
          const name = table.includes('.') ? table : `public.${table}`;
          const known = this.#tables.has(name);
          const inserted = await client.query<{ id: string }>(
            `INSERT INTO _cdc.snapshot_jobs (slot, kind, table_name, range_from, range_to, status, error)
             VALUES ($1, 'incremental', $2, $3, $4, $5, $6) RETURNING id::text`,
            [this.#options.slot, name, signal.range_from, signal.range_to, known ? 'pending' : 'failed', known ? null : `${name} is not captured by this reader (add it to TABLES and the publication)`],
          );
          const id = Number(inserted.rows[0]?.id);
          ids.push(id);
          if (known) added.push({ id, kind: 'incremental', table: name, rangeFrom: signal.range_from, rangeTo: signal.range_to, lastKey: null, chunks: 0, rowsRead: 0, rowsEstimated: null, status: 'pending' });
          else this.#log.warn({ table: name, signal: signal.id }, `backfill of ${name} refused: the reader does not capture it`);
        }
        await client.query('UPDATE _cdc.snapshot_signals SET taken_at = now(), jobs = $2 WHERE id = $1', [signal.id, ids]);
      }
      await client.query('COMMIT');
      for (const job of added) {
        this.#addJob(job);
        this.#log.info({ job: job.id, table: job.table, range_from: job.rangeFrom, range_to: job.rangeTo }, `backfill of ${job.table} queued`);
      }
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  /** Runs one job to its end (or until closed); a failure of a chunk is retried with back-off. */
  async #runJob(job: Job): Promise<void> {
    const signal = this.#abort.signal;
    const table = this.#tables.get(job.table);
    if (!table) {
      await this.#fail(job, `${job.table} is not captured by this reader`);
      return;
    }
    let failures = 0;
    job.startedAt ??= this.#clock.now();
    job.rowsAtStart ??= job.rowsRead;
    while (!signal.aborted && job.status !== 'done' && job.status !== 'failed') {
      try {
        const more = await this.#chunk(job, table);
        failures = 0;
        if (!more) return;
      } catch (error) {
        if (signal.aborted) return;
        failures += 1;
        // Class 42 (no such table or column, no ordering for a key type, no privilege): retrying cannot help.
        const retriable = !(error instanceof SnapshotError) && !(sqlStateOf(error)?.startsWith('42') ?? false);
        if (!retriable || failures > 30) {
          await this.#fail(job, errorMessage(error));
          return;
        }
        const delay = Math.min(5_000, 200 * 2 ** Math.min(failures, 5));
        this.#log.warn({ err: error, job: job.id, table: job.table, delay_ms: delay }, `snapshot chunk of ${job.table} failed: ${errorMessage(error)}; retrying`);
        await this.#clock.sleep(delay, signal).catch(() => undefined);
      }
    }
  }

  async #fail(job: Job, reason: string): Promise<void> {
    this.#log.error({ job: job.id, table: job.table }, `snapshot of ${job.table} failed: ${reason}`);
    await this.#pool
      .query(`UPDATE _cdc.snapshot_jobs SET status = 'failed', error = $3, updated_at = now() WHERE slot = $1 AND id = $2`, [this.#options.slot, job.id, reason])
      .catch(() => undefined);
    this.#finished(job.id, reason);
  }

  /** One chunk: low watermark, read, high watermark; resolves once the reader emitted it. False when the job is done. */
  async #chunk(job: Job, table: SourceTable): Promise<boolean> {
    const shape = await this.#shape(table);
    let written: { emitted: Promise<void>; last: boolean } | undefined;
    const client = await this.#pool.connect();
    try {
      if (job.status === 'pending' && !(await this.#startJob(job, table, client))) return false;
      written = await this.#writeChunk(job, table, shape, client);
    } finally {
      client.release();
    }
    // Flow control: the next chunk is read once the stream has emitted this one. close()
    // aborts, then releases every wait registered so far; one registered after that is
    // never waited for.
    if (this.#abort.signal.aborted) return false;
    await written.emitted;
    return !written.last;
  }

  /** Low watermark, the read, and the high watermark with the job's progress in one transaction. */
  async #writeChunk(job: Job, table: SourceTable, shape: TableShape, client: pg.PoolClient): Promise<{ emitted: Promise<void>; last: boolean }> {
    const chunk = job.chunks + 1;
    const lower = job.lastKey ?? job.rangeFrom;
    const lowerInclusive = job.lastKey === null && job.rangeFrom !== null;
    const base = { v: 1 as const, job: job.id, chunk, table: job.table, kind: job.kind };
    await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [SNAPSHOT_PREFIX, JSON.stringify({ ...base, mark: 'low' })]);
    const chunkRows = this.#options.chunkRows ?? SNAPSHOT_DEFAULTS.chunkRows;
    const rows = await this.#readRange(table, job.kind, lower, lowerInclusive, job.rangeTo, chunkRows, client, shape);
    const last = rows.length < chunkRows;
    const upper = rows.at(-1)?.key ?? null;
    const mark: SnapshotMark = { ...base, mark: 'high', lower, lowerInclusive, upper, last, keys: rows.map((row) => row.key) };
    const id = `${job.id}:${chunk}`;
    this.#live.set(id, rows);
    const emitted = new Promise<void>((resolve) => this.#waiting.set(id, resolve));
    try {
      await client.query('BEGIN');
      await client.query(
        `UPDATE _cdc.snapshot_jobs SET last_key = COALESCE($3, last_key), chunks = $4, rows_read = rows_read + $5, status = $6, updated_at = now() WHERE slot = $1 AND id = $2`,
        [this.#options.slot, job.id, upper, chunk, rows.length, last ? 'done' : 'running'],
      );
      await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [SNAPSHOT_PREFIX, JSON.stringify(mark)]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      this.#live.delete(id);
      this.#waiting.delete(id);
      throw error;
    }
    job.chunks = chunk;
    job.rowsRead += rows.length;
    if (upper !== null) job.lastKey = upper;
    return { emitted, last };
  }

  /**
   * pending → running, or → done at once for an empty table: the slot exists already, so
   * every row it gets from now on is a change in the stream. False when done.
   */
  async #startJob(job: Job, table: SourceTable, client: pg.PoolClient): Promise<boolean> {
    job.rowsEstimated ??= await estimateRows(client, table);
    const empty = (await client.query(`SELECT NOT EXISTS (SELECT 1 FROM ${qualified(table)}) AS empty`)).rows[0]?.empty === true;
    await client.query(`UPDATE _cdc.snapshot_jobs SET status = $3, rows_estimated = $4, updated_at = now() WHERE slot = $1 AND id = $2`, [
      this.#options.slot,
      job.id,
      empty ? 'done' : 'running',
      job.rowsEstimated,
    ]);
    if (empty) {
      this.#finished(job.id);
      return false;
    }
    job.status = 'running';
    this.#log.info({ job: job.id, table: job.table, kind: job.kind, rows_estimated: job.rowsEstimated }, `snapshot of ${job.table} started`);
    return true;
  }

  async #shape(table: SourceTable): Promise<TableShape> {
    const known = this.#shapes.get(table.table);
    if (known) return known;
    const result = await this.#pool.query<{ attname: string; type: string; generated: string }>(
      `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated::text AS generated
         FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
      [qualified(table)],
    );
    const types = new Map(result.rows.map((row) => [row.attname, row.type]));
    const keyTypes = table.keyColumns.map((column) => {
      const type = types.get(column);
      if (type === undefined) throw new SnapshotError(`key column ${column} of ${table.table} no longer exists`, { table: table.table, column });
      return type;
    });
    const shape = { keyTypes, columns: result.rows.filter((row) => row.generated === '').map((row) => row.attname) };
    this.#shapes.set(table.table, shape);
    return shape;
  }

  /** Rows of a key range in key order, as reads; `limit` undefined reads the whole range. */
  async #readRange(
    table: SourceTable,
    kind: SnapshotKind,
    lower: Key | null,
    lowerInclusive: boolean,
    upper: Key | null,
    limit: number | undefined,
    client?: pg.PoolClient,
    knownShape?: TableShape,
  ): Promise<SnapshotRead[]> {
    const shape = knownShape ?? (await this.#shape(table));
    const values: (string | null)[] = [];
    const tuple = (key: Key): string => `(${key.map((value, i) => {
      values.push(value);
      return `$${values.length}::${shape.keyTypes[i]}`;
    }).join(', ')})`;
    const keyList = `(${table.keyColumns.map(quoteIdent).join(', ')})`;
    const where: string[] = [];
    if (lower !== null) where.push(`${keyList} ${lowerInclusive ? '>=' : '>'} ${tuple(lower)}`);
    if (upper !== null) where.push(`${keyList} <= ${tuple(upper)}`);
    const text =
      `SELECT ${shape.columns.map(quoteIdent).join(', ')} FROM ${qualified(table)}` +
      (where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '') +
      ` ORDER BY ${table.keyColumns.map(quoteIdent).join(', ')}` +
      (limit === undefined ? '' : ` LIMIT ${limit}`);
    const runner = client ?? this.#pool;
    const result = await runner.query<Record<string, string | null>>({ text, values, types: TEXT_TYPES });
    const columnTypes: Record<string, number> = {};
    for (const field of result.fields) columnTypes[field.name] = field.dataTypeID;
    return result.rows.map((row, index) => ({
      index,
      table,
      key: table.keyColumns.map((column) => row[column] ?? null),
      row,
      columnTypes,
      snapshot: kind,
    }));
  }

  #openWindow(mark: SnapshotMark): void {
    // A window of the same job still open never got its high watermark (a chunk cut short): replaced.
    this.#closeWindow(mark.job);
    this.#windows.set(mark.job, { chunk: mark.chunk, changes: new Map(), truncated: false });
    const jobs = this.#windowsByTable.get(mark.table) ?? new Set<number>();
    jobs.add(mark.job);
    this.#windowsByTable.set(mark.table, jobs);
  }

  #closeWindow(job: number): void {
    if (!this.#windows.delete(job)) return;
    for (const [table, jobs] of this.#windowsByTable) {
      jobs.delete(job);
      if (jobs.size === 0) this.#windowsByTable.delete(table);
    }
  }
}

/**
 * The chunk's rows as of its high watermark: each row a window change touched gets those
 * changes laid over it in order (see the top of this file); a row deleted in the window is
 * left out; a truncate in the window leaves the whole chunk out (the changes after it are
 * whole rows in the stream).
 */
export function overlay(rows: readonly SnapshotRead[], window: { readonly changes: ReadonlyMap<string, readonly ChangeEvent[]>; readonly truncated: boolean }, log?: Logger): SnapshotRead[] {
  if (window.truncated) return [];
  if (window.changes.size === 0) return [...rows];
  const out: SnapshotRead[] = [];
  for (const read of rows) {
    const changes = window.changes.get(keyText(read.key));
    if (!changes) {
      out.push(read);
      continue;
    }
    let row: Record<string, string | null> | null = { ...read.row };
    let complete = true;
    for (const change of changes) {
      if (change.op === 'delete') {
        row = null;
        continue;
      }
      if (change.after === null) continue;
      if (row === null) {
        // Deleted then written again in the window: what this change does not carry is unknown.
        row = { ...change.after };
        if (change.unchanged.length > 0) complete = false;
        else complete = true;
        continue;
      }
      Object.assign(row, change.after);
      if (change.op === 'insert' && change.unchanged.length === 0) complete = true;
    }
    if (row === null) continue;
    if (!complete) {
      log?.warn({ table: read.table.table, key: read.key }, 'snapshot row left out: the window rewrote it without every column (its changes carry it)');
      continue;
    }
    out.push({ ...read, row });
  }
  return out;
}

async function estimateRows(client: pg.PoolClient, table: SourceTable): Promise<number> {
  const result = await client.query<{ n: string | null }>(`SELECT reltuples::bigint::text AS n FROM pg_class WHERE oid = $1::regclass`, [qualified(table)]);
  const estimate = Number(result.rows[0]?.n ?? -1);
  if (estimate >= 0) return estimate;
  // Never analysed (-1): count, once.
  const counted = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${qualified(table)}`);
  return Number(counted.rows[0]?.n ?? 0);
}

/** "120,000 / ~1,000,000 rows (12 %), 9,500 rows/s, about 93 s left" */
export function describeProgress(job: SnapshotJobProgress): string {
  const parts = [`${job.rowsRead.toLocaleString('en-US')}${job.rowsEstimated === null ? '' : ` / ~${job.rowsEstimated.toLocaleString('en-US')}`} rows`];
  if (job.rowsEstimated) parts[0] += ` (${Math.min(100, Math.round((100 * job.rowsRead) / job.rowsEstimated))} %)`;
  if (job.rate !== null) parts.push(`${job.rate.toLocaleString('en-US')} rows/s`);
  if (job.etaSeconds !== null) parts.push(`about ${job.etaSeconds} s left`);
  if (job.status !== 'running') parts.push(job.status);
  return parts.join(', ');
}
