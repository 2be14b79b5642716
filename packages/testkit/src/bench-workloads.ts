/**
 * Benchmark workloads: insert-only, generated server-side so the generator is never the
 * bottleneck (a PL/pgSQL procedure commits inside its loop: no client round trip per
 * transaction; big transactions are one `INSERT ... SELECT generate_series`).
 *
 *   await applyBenchSchema(sourceUrl, 'source');   // after SOURCE_SCHEMA_SQL
 *   await applyBenchSchema(sinkUrl, 'sink');       // after SINK_SCHEMA_SQL
 *   const run = await runBenchWorkload({ databaseUrl: sourceUrl, shape: 'small', changes: 50_000, rowsPerTxn: 1 });
 *
 * Rows go to the testkit's own tables so @cdc/testkit's verifier checks them like any other
 * workload (audit_events for small rows, accounts with a 2 KB TOASTed note for wide rows);
 * the history triggers stay on both sides, so every change costs two heap inserts there.
 *
 * Latency (one clock): both databases live on the same PostgreSQL server, so
 *   source  written_at DEFAULT clock_timestamp()  — the row's write; in a single-row
 *           transaction the commit follows within microseconds (plus the WAL flush);
 *   sink    applied_at DEFAULT clock_timestamp()  — the committer never writes this column
 *           (the source has none), so the sink stamps each row as it applies it.
 * track_commit_timestamp would give exact commit times on both sides, but it needs a server
 * restart and is off on the shared servers; the bench approximates the sink commit by the
 * newest applied_at of the same sink transaction (same xmin), which is what a reader of the
 * sink could see at the earliest.
 */
import pg from 'pg';

const SOURCE_SQL = `
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS written_at timestamptz DEFAULT clock_timestamp();
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS written_at timestamptz DEFAULT clock_timestamp();
-- n rows from first_id, per_txn rows per transaction, paced to rate rows/s (0 = as fast as
-- possible); wide = accounts with a 2048-character note (STORAGE EXTERNAL: out of line).
CREATE OR REPLACE PROCEDURE bench_generate(first_id bigint, n bigint, per_txn bigint, rate double precision, wide boolean)
LANGUAGE plpgsql AS $$
DECLARE
  started timestamptz := clock_timestamp();
  done bigint := 0;
  take bigint;
  ahead double precision;
BEGIN
  WHILE done < n LOOP
    take := least(per_txn, n - done);
    IF wide THEN
      INSERT INTO accounts (id, owner, balance, note, version)
      SELECT first_id + g, 'bench-' || (first_id + g), g, repeat(md5((first_id + g)::text), 64), 1
      FROM generate_series(done, done + take - 1) AS g;
    ELSE
      INSERT INTO audit_events (id, kind, payload, version)
      SELECT first_id + g, 'bench', 'payload-' || (first_id + g), 1
      FROM generate_series(done, done + take - 1) AS g;
    END IF;
    COMMIT;
    done := done + take;
    IF rate > 0 THEN
      ahead := done / rate - extract(epoch FROM clock_timestamp() - started);
      IF ahead > 0.0005 THEN PERFORM pg_sleep(ahead); END IF;
    END IF;
  END LOOP;
END $$;`;

const SINK_SQL = `
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS written_at timestamptz;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS applied_at timestamptz DEFAULT clock_timestamp();
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS written_at timestamptz;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS applied_at timestamptz DEFAULT clock_timestamp();`;

/** Adds the timestamp columns (and, on the source, the generator procedure). */
export async function applyBenchSchema(databaseUrl: string, side: 'source' | 'sink'): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(side === 'source' ? SOURCE_SQL : SINK_SQL);
  } finally {
    await client.end();
  }
}

export type BenchRowShape = 'small' | 'wide';

export interface BenchWorkloadOptions {
  readonly databaseUrl: string;
  readonly shape: BenchRowShape;
  /** Rows inserted in total (one change each). */
  readonly changes: number;
  /** Rows per source transaction (1 = single-row transactions; >= changes = one transaction). */
  readonly rowsPerTxn: number;
  /** Parallel generator sessions, each with a disjoint id range; default 1. */
  readonly clients?: number;
  /** Offered rate in rows/s over all clients; 0 or absent = as fast as possible. */
  readonly ratePerSecond?: number;
  /**
   * synchronous_commit for the generator sessions; default true. Off only moves WAL flushes
   * to the WAL writer (<= wal_writer_delay later): the decoded changes are the same, but
   * logical decoding waits for the flush, so keep it on wherever latency is measured.
   */
  readonly synchronousCommit?: boolean;
  /** First id; default 1. */
  readonly firstId?: number;
}

export interface BenchWorkloadResult {
  readonly changes: number;
  readonly transactions: number;
  /** Wall clock (ms since epoch) when the first session started and when the last one returned. */
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly changesPerSecond: number;
  /** pg_current_wal_lsn() after the last commit: where the workload's WAL ends. */
  readonly endLsn: string;
}

export async function runBenchWorkload(options: BenchWorkloadOptions): Promise<BenchWorkloadResult> {
  const clients = Math.max(1, Math.min(options.clients ?? 1, options.changes));
  const firstId = options.firstId ?? 1;
  const rate = options.ratePerSecond ?? 0;
  const perClient = Array.from({ length: clients }, (_, index) =>
    Math.floor(options.changes / clients) + (index < options.changes % clients ? 1 : 0),
  );
  const sessions = await Promise.all(
    perClient.map(async () => {
      const client = new pg.Client({ connectionString: options.databaseUrl, application_name: 'cdc-bench-generator' });
      await client.connect();
      if (options.synchronousCommit === false) await client.query('SET synchronous_commit = off');
      return client;
    }),
  );
  const startedAt = Date.now();
  try {
    let offset = 0;
    await Promise.all(
      sessions.map((client, index) => {
        const rows = perClient[index] ?? 0;
        const from = firstId + offset;
        offset += rows;
        return client.query('CALL bench_generate($1, $2, $3, $4, $5)', [
          from,
          rows,
          Math.max(1, options.rowsPerTxn),
          rate > 0 ? rate / clients : 0,
          options.shape === 'wide',
        ]);
      }),
    );
    const finishedAt = Date.now();
    const end = await sessions[0]?.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    const transactions = perClient.reduce((sum, rows) => sum + Math.ceil(rows / Math.max(1, options.rowsPerTxn)), 0);
    return {
      changes: options.changes,
      transactions,
      startedAt,
      finishedAt,
      changesPerSecond: options.changes / Math.max(0.001, (finishedAt - startedAt) / 1000),
      endLsn: end?.rows[0]?.lsn ?? '0/0',
    };
  } finally {
    await Promise.all(sessions.map((client) => client.end().catch(() => undefined)));
  }
}
