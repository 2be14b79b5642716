/**
 * Environment of the lamport-reorderer: the relay-app base (@cdc/relay relayConfigBase:
 * PIPELINE, PARTITIONS, ASSIGNED_PARTITIONS, BATCH_*, NATS_URL, HEALTH_PORT, LOG_LEVEL,
 * READY_MAX_FAILING_MS) plus its own. Parsed once at start-up; every bad variable is
 * named in one ConfigError; defaults come from the packages that own them.
 */
import { relayConfigSchema } from '@cdc/relay';
import { REORDERER_DEFAULTS } from '@cdc/reorder';
import { env, type z } from '@cdc/runtime';

export const schema = relayConfigSchema({
  SOURCES: env.list().refine((list) => list.length > 0, 'required: comma list of source ids, for example pg1,pg2'),
  BUFFER_MAX_EVENTS: env.positiveInt(REORDERER_DEFAULTS.maxBuffered),
  /** How often per-source ordering counters are logged; 0 = never. */
  STATS_INTERVAL_MS: env.nonNegativeInt(REORDERER_DEFAULTS.statsIntervalMs),
});

export type Config = z.output<typeof schema>;
