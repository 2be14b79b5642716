/** Defaults of the dedup-gate stage, in one place (the app config reads them from here). */
export const DEDUP_DEFAULTS = {
  /** How long an eventId stays claimed: longer than any replay we expect to absorb, 15 min (DEDUP_WINDOW_MS). */
  windowMs: 900_000,
} as const;
