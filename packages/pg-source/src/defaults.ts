/** Defaults of the reader, in one place: Reader's options and apps/reader's config read them from here. */
export const READER_DEFAULTS = {
  /** WAL heartbeat interval while the watched tables are idle (HEARTBEAT_INTERVAL_MS). */
  heartbeatIntervalMs: 1_000,
  /** Events waiting for their PubAck; when full, reading pauses (MAX_IN_FLIGHT). */
  maxInFlight: 256,
  /** How often a newly committed transaction is turned into a watermark (WATERMARK_INTERVAL_MS); partial raw messages go out with it. */
  watermarkIntervalMs: 50,
  /** How often etcd checkpoints are read for slot feedback. */
  ackIntervalMs: 500,
  /** A progress log line every this many captured events. */
  progressEveryEvents: 5_000,
  /** How often the reader app samples its slot's lag for /metrics (pg_replication_slots). */
  slotSampleIntervalMs: 5_000,
  /** How often the reader app logs its progress line. */
  progressIntervalMs: 5_000,
} as const;
