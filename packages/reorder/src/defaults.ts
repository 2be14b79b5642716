/** Defaults of the lamport-reorderer stage, in one place (the app config reads them from here). */
export const REORDERER_DEFAULTS = {
  /** Events held per partition while a source's watermark is awaited (BUFFER_MAX_EVENTS). */
  maxBuffered: 50_000,
  /** How often per-source ordering counters are logged; 0 = never (STATS_INTERVAL_MS). */
  statsIntervalMs: 30_000,
} as const;
