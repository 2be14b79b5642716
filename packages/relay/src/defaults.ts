/**
 * Defaults of a relay stage, in one place: the stage packages and the app configs
 * (packages/relay/src/app-config.ts) read them from here.
 */
export const RELAY_DEFAULTS = {
  /**
   * Messages per fetched batch (BATCH_MAX). A message carries up to ~100 events (@cdc/core
   * WIRE_DEFAULTS), so 64 messages is up to ~6,400 events per cycle — and at most twice
   * that read ahead (the consumer buffer is 2 × BATCH_MAX messages, up to 64 KiB each).
   */
  batchMax: 64,
  /**
   * How long a fetch waits for its first message (BATCH_LINGER_MS). A message ends the wait
   * at once and what is already buffered goes with it, so this adds no latency; it is how
   * often an idle partition's loop wakes (issue 12: 20 ms cost an idle relay 4–6 % of a core).
   */
  batchLingerMs: 500,
  /** Un-acknowledged publishes at once. */
  maxInFlight: 256,
  /** /readyz fails once a partition has been failing for this long (READY_MAX_FAILING_MS). */
  readyMaxFailingMs: 30_000,
} as const;
