/**
 * The PostgreSQL sink: a Sink (@cdc/committer) whose batches land in one sink
 * transaction each, rows and cdc_checkpoint together, fenced by the owner epoch.
 *
 *   MergeBatch ─► apply: BEGIN; owner FOR UPDATE; rows; cdc_checkpoint; [dead letters]; COMMIT
 *
 * A batch that failed is retried as it was (attempt > 0: the writer first checks whether
 * its COMMIT had landed). A source transaction larger than `streamAbove` events comes in
 * chunks: one sink transaction (SinkSession) stays open across them and commits with the
 * chunk that ends it, so it lands whole and no process holds it whole. If anything fails
 * while such a transaction is open, it is rolled back and the committer recovers: it
 * reads the checkpoints back from the sink (a COMMIT whose outcome was lost is seen there)
 * and rewinds. Closing with one open rolls it back: the next committer applies it whole.
 */
import { Committer, type Applied, type ApplyContext, type CommitterOptions, type LaneCheckpoint, type LaneStart, type MergeBatch, type Sink } from '@cdc/committer';
import { DEFAULT_SINK } from '@cdc/checkpoint';
import { IllegalStateError, UnreachableError, pinValueText, postgresAuthError, retry } from '@cdc/core';
import { redactUrl, type Logger } from '@cdc/runtime';
import pg from 'pg';
import { acquireEpoch, readCheckpoints } from './checkpoints.ts';
import { FencedError, fromPgError } from './errors.ts';
import { TableCatalog, ensureBookkeeping } from './schema.ts';
import type { SchemaChanges } from './evolve.ts';
import { SinkWriter, type Refusal, type SinkSession } from './writer.ts';

export interface PgSinkOptions {
  readonly pipeline: string;
  readonly partitions: number;
  /** postgres:// URL of the sink database. */
  readonly sinkUrl: string;
  /** This sink's name in etcd (the reader's SINKS) and in its dead letters; default 'postgres'. */
  readonly sinkName?: string | undefined;
  readonly logger: Logger;
  /** Source table → sink table (`schema.table`); default: the same name. */
  readonly tableMap?: ReadonlyMap<string, string> | undefined;
  /** Aborts the connection attempts at start. */
  readonly signal?: AbortSignal | undefined;
  /** SCHEMA_CHANGES: evolve (default) follows the source's shape; fail holds until the sink is fixed (evolve.ts). */
  readonly schemaChanges?: SchemaChanges | undefined;
}

/** The committer over a PostgreSQL sink: the loop's options and the sink's. */
export type PgCommitterOptions = PgSinkOptions & Omit<CommitterOptions, 'logger' | 'name'>;

export interface PgSinkStats {
  readonly epoch: number;
  readonly rowsWritten: number;
  readonly isolatedBatches: number;
  /** Source transactions that were applied in chunks through one open sink transaction. */
  readonly streamedTransactions: number;
}

export type PgCommitter = Committer<PgSink>;

/** A sink transaction open across the chunks of a large source transaction. */
interface OpenStream {
  readonly session: SinkSession;
  /** The checkpoints of every chunk so far, newest per partition: written with the last one. */
  readonly checkpoints: Map<number, LaneCheckpoint>;
  readonly started: number;
  events: number;
  refused: number;
  rows: number;
  statements: number;
  chunks: number;
  isolated: boolean;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export class PgSink implements Sink<PgSinkStats> {
  readonly name: string;
  readonly committedUnit = 'transaction the sink committed';
  readonly #options: PgSinkOptions;
  readonly #logger: Logger;
  readonly #pool: pg.Pool;
  readonly #writer: SinkWriter;
  readonly #stats: Mutable<PgSinkStats>;
  #stream: OpenStream | undefined;
  /** The last apply failed with a streamed transaction open and rolled it back. */
  #rolledBack = false;
  #closing: Promise<void> | undefined;

  private constructor(options: PgSinkOptions, pool: pg.Pool, epoch: number, logger: Logger) {
    this.name = options.sinkName ?? DEFAULT_SINK;
    this.#options = options;
    this.#logger = logger;
    this.#pool = pool;
    this.#writer = new SinkWriter({
      pool,
      catalog: new TableCatalog(pool, options.tableMap),
      pipeline: options.pipeline,
      logger,
      schemaChanges: options.schemaChanges,
    });
    this.#stats = { epoch, rowsWritten: 0, isolatedBatches: 0, streamedTransactions: 0 };
  }

  /**
   * Connects to the sink, creates the bookkeeping tables and takes ownership (epoch + 1:
   * any older committer is fenced from its next batch on).
   */
  static async create(options: PgSinkOptions): Promise<PgSink> {
    if (!Number.isInteger(options.partitions) || options.partitions < 1) {
      throw new RangeError(`partitions must be a positive integer, got ${options.partitions}`);
    }
    const logger = options.logger;
    // Values arrive as text in the pinned settings (ISO dates, hex bytea, …): the sink session reads them the same way.
    const pool = new pg.Pool({ ...pinValueText(options.sinkUrl), max: 3, application_name: `cdc-committer-${options.pipeline}` });
    // A connection that breaks must not crash the process: idle ones are reported by the
    // pool, checked-out ones fail their query (retriable) and are discarded on release.
    pool.on('error', (error) => logger.warn({ err: error }, 'idle sink connection failed'));
    pool.on('connect', (client) => client.on('error', () => undefined));
    try {
      const client = await retry(
        async () => {
          try {
            return await pool.connect();
          } catch (error) {
            // Wrong password, unknown role, failed TLS check: not retried, one line.
            throw (
              postgresAuthError('sink PostgreSQL', redactUrl(options.sinkUrl), error, 'check the user and password (or client certificate) of SINK_DATABASE_URL') ??
              new UnreachableError('sink PostgreSQL', redactUrl(options.sinkUrl), 'check SINK_DATABASE_URL and that the server runs', error)
            );
          }
        },
        {
          attempts: 8,
          initialDelayMs: 250,
          maxDelayMs: 4_000,
          ...(options.signal ? { signal: options.signal } : {}),
          onRetry: ({ attempt, delayMs }) => logger.warn({ attempt, delay_ms: delayMs }, 'sink not reachable yet; retrying'),
        },
      );
      try {
        await ensureBookkeeping(client);
        return new PgSink(options, pool, await acquireEpoch(client, options.pipeline), logger);
      } catch (error) {
        throw fromPgError(error, {});
      } finally {
        client.release();
      }
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
  }

  /** Creates the sink and a running committer into it from the checkpoints it holds. */
  static async createCommitter(options: PgCommitterOptions): Promise<PgCommitter> {
    const logger = options.logger.child({ component: 'committer', pipeline: options.pipeline });
    const sink = await PgSink.create({ ...options, logger });
    let starts: readonly LaneStart[];
    try {
      starts = await sink.recover();
    } catch (error) {
      await sink.close();
      throw error;
    }
    return Committer.create(sink, starts, { ...options, logger, name: 'committer' });
  }

  get epoch(): number {
    return this.#stats.epoch;
  }

  stats(): PgSinkStats {
    return { ...this.#stats };
  }

  /** The checkpoints the sink holds, read from it. */
  async recover(): Promise<readonly LaneStart[]> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw fromPgError(error, {});
    }
    try {
      return await readCheckpoints(client, this.#options.pipeline, this.#options.partitions);
    } catch (error) {
      throw fromPgError(error, {});
    } finally {
      client.release();
    }
  }

  afterFailure(): 'retry' | 'recover' {
    // A streamed transaction was rolled back: its earlier chunks are gone, read on from the sink's checkpoints.
    const outcome = this.#rolledBack ? 'recover' : 'retry';
    this.#rolledBack = false;
    return outcome;
  }

  isFenced(error: unknown): boolean {
    return error instanceof FencedError;
  }

  async apply(merge: MergeBatch, context: ApplyContext): Promise<Applied> {
    const chunk = merge.events.length > 0;
    if (this.#stream !== undefined || (chunk && merge.endsInside)) return this.#applyStreamed(merge, context);
    // Only a chunk after an open stream starts inside a transaction; a rewind starts between two.
    if (chunk && merge.startsInside) throw new IllegalStateError('committer', 'no open sink transaction', 'apply the middle of a source transaction');
    const started = Date.now();
    const events = merge.events.map((merged) => merged.event);
    const outcome = await this.#writer.apply({
      events,
      checkpoints: merge.checkpoints,
      epoch: this.#stats.epoch,
      retry: context.attempt > 0,
      beforeCommit: (refusals) => context.deadLetter(this.#refusals(merge, refusals)),
    });
    this.#stats.rowsWritten += outcome.rowsWritten;
    if (outcome.mode === 'isolated') this.#stats.isolatedBatches += 1;
    const last = events.at(-1);
    this.#logger.debug(
      {
        events: events.length,
        transactions: merge.transactions,
        statements: outcome.statements,
        rows: outcome.rowsWritten,
        mode: outcome.mode,
        attempt: context.attempt,
        ms: Date.now() - started,
        ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}),
      },
      'batch committed',
    );
    return { committed: merge.checkpoints, applied: events.length - outcome.refusals.length };
  }

  /**
   * A chunk of a large source transaction (or the batch after it): applied in the open
   * sink transaction; the checkpoints and COMMIT come with the chunk after which nothing
   * of it can follow. Never retried as it is: a failure rolls back and recovers.
   */
  async #applyStreamed(merge: MergeBatch, context: ApplyContext): Promise<Applied> {
    try {
      const stream = (this.#stream ??= {
        session: await this.#writer.begin(this.#stats.epoch),
        checkpoints: new Map(),
        started: Date.now(),
        events: 0,
        refused: 0,
        rows: 0,
        statements: 0,
        chunks: 0,
        isolated: false,
      });
      if (merge.events.length > 0) {
        const outcome = await stream.session.apply(merge.events.map((merged) => merged.event));
        // Before the COMMIT (which may be chunks away): a crash re-sends them, never loses them.
        if (outcome.refusals.length > 0) await context.deadLetter(this.#refusals(merge, outcome.refusals));
        stream.events += merge.events.length;
        stream.refused += outcome.refusals.length;
        stream.rows += outcome.rowsWritten;
        stream.statements += outcome.statements;
        stream.isolated ||= outcome.mode === 'isolated';
        stream.chunks += 1;
      }
      for (const checkpoint of merge.checkpoints) stream.checkpoints.set(checkpoint.partition, checkpoint);
      const last = merge.events.at(-1)?.event;
      if (merge.endsInside) {
        this.#logger.debug(
          { events: stream.events, chunks: stream.chunks, ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}) },
          'chunk applied; sink transaction stays open until the source transaction ends',
        );
        return { committed: undefined, applied: 0 };
      }
      const checkpoints = [...stream.checkpoints.values()];
      await stream.session.commit(checkpoints);
      this.#stream = undefined;
      this.#stats.streamedTransactions += 1;
      this.#stats.rowsWritten += stream.rows;
      if (stream.isolated) this.#stats.isolatedBatches += 1;
      this.#logger.info(
        {
          events: stream.events,
          chunks: stream.chunks,
          statements: stream.statements,
          rows: stream.rows,
          ms: Date.now() - stream.started,
          ...(last ? { lsn: last.commitLsn, event_id: last.eventId, trace_id: last.traceId } : {}),
        },
        'streamed transaction committed',
      );
      return { committed: checkpoints, applied: stream.events - stream.refused };
    } catch (error) {
      await this.#abortStream();
      this.#rolledBack = true;
      throw error;
    }
  }

  #refusals(merge: MergeBatch, refusals: readonly Refusal[]) {
    return refusals.flatMap(({ item, error }) => {
      const event = merge.events[item];
      return event === undefined ? [] : [{ event, error }];
    });
  }

  async #abortStream(): Promise<void> {
    const stream = this.#stream;
    this.#stream = undefined;
    await stream?.session.abort();
  }

  /** Rolls back a streamed transaction still open (its end was not read: it cannot commit) and closes the pool. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#stream !== undefined) {
        // The next committer applies it again, whole.
        this.#logger.warn({ events: this.#stream.events, chunks: this.#stream.chunks }, 'stopping with a streamed source transaction open: rolled back');
        await this.#abortStream().catch(() => undefined);
      }
      await this.#pool.end().catch(() => undefined);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
