/**
 * Every committer default, in one place: the committers (both sinks) fall back to these
 * and apps/committer's config schema fills its variables from them.
 */
export const COMMITTER_DEFAULTS = {
  /** BATCH_MAX_EVENTS: events per batch (per sink transaction; for Kafka per Kafka transaction). */
  batchMaxEvents: 2_000,
  /** BATCH_LINGER_MS: how long a batch waits to fill. */
  batchLingerMs: 50,
  /**
   * Events read ahead per partition, as a multiple of batchMaxEvents. 2, not 4: decoded
   * events are the committer's largest live set; the bench (2026-12-04, bench/README.md)
   * measured the same throughput and CPU within its noise for 1, 2 and 4, and peak RSS in
   * wide-rows into Kafka 213 (4) → 189 (2) → 163 MB (1); 1 hinted at +2 µs/change in one
   * series. A partition holding the merge back is still read past it (merge.ts wantsMore).
   */
  bufferedBatchesPerPartition: 2,
  /**
   * PARTITION_BUFFER_MAX_BYTES, per partition. Decoded events take 2–3× their JSON size
   * in the heap: 4 partitions of 8 MiB stay well inside a 128 MB V8 heap (the apps'
   * default cap) even for 2 KB rows.
   */
  maxBufferedBytesPerPartition: 8 * 1_048_576,
  /** A progress line this often. */
  progressIntervalMs: 5_000,
  /** Back-off between failed loop iterations (core backoffDelay: exponential, jittered). */
  retry: { initialDelayMs: 200, maxDelayMs: 5_000 },
  /** Back-off between failed publishes of positions to etcd. */
  positionsRetry: { initialDelayMs: 1_000, maxDelayMs: 10_000 },
  /** Least time between two publishes of positions to etcd (each put is an fsync there). */
  positionsIntervalMs: 100,
  /**
   * SCHEMA_CHANGES: `evolve` — the PostgreSQL sink adds columns, widens types and creates
   * tables to follow the source; `fail` — the committer holds at the first change the
   * sink table does not fit, until the operator changes the sink. Never a dead letter.
   */
  schemaChanges: 'evolve' as 'evolve' | 'fail',
  /** How long a stopping committer waits for its last positions to reach etcd. */
  positionsFlushMs: 5_000,
} as const;
