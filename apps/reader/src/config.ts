/**
 * The reader's environment, parsed once at start-up. Every bad variable is named in one
 * error; defaults are filled here and nowhere else.
 */
import { WIRE_DEFAULTS } from '@cdc/core';
import { READER_DEFAULTS, SNAPSHOT_DEFAULTS, SNAPSHOT_MODES } from '@cdc/pg-source';
import { env, etcdSecurityFields, natsSecurityFields, z } from '@cdc/runtime';

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$/;

/** `cdc_<pipeline>_<source>`, lowercased, limited to [a-z0-9_] and 63 bytes (a PostgreSQL identifier and slot name). */
export function defaultSlotName(pipeline: string, source: string): string {
  return `cdc_${pipeline}_${source}`.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 63);
}

const SLOT_NAME = /^[a-z0-9_]{1,63}$/;

export const readerConfigSchema = z
  .object({
    PIPELINE: env.name(),
    SOURCE_ID: env.name(),
    SOURCE_DATABASE_URL: env.url(['postgres', 'postgresql'], 'postgres://user:password@host:5432/db'),
    TABLES: env
      .list()
      .refine((tables) => tables.length > 0, 'at least one table, for example public.orders,public.customers')
      .refine((tables) => tables.every((table) => TABLE_NAME.test(table)), 'comma list of schema.table, for example public.orders'),
    PARTITIONS: env.partitions(),
    SLOT_NAME: z.string().regex(SLOT_NAME, 'lowercase letters, digits and _ only (1-63)').optional(),
    PUBLICATION_NAME: z.string().regex(/^[A-Za-z0-9_]{1,63}$/, 'letters, digits and _ only (1-63)').optional(),
    NATS_URL: env.natsUrl(),
    ...natsSecurityFields,
    ETCD_URL: env.url(['http', 'https'], 'http://127.0.0.1:2379'),
    ...etcdSecurityFields,
    // The slot is confirmed only through what every one of these sinks has committed.
    SINKS: env
      .list()
      .default('postgres')
      .refine((sinks) => sinks.length > 0, 'at least one sink name, for example postgres or postgres,kafka')
      .refine((sinks) => sinks.every((sink) => /^[A-Za-z0-9_-]{1,64}$/.test(sink)), 'comma list of sink names (letters, digits, _ and -)'),
    HEARTBEAT_INTERVAL_MS: env.positiveInt(READER_DEFAULTS.heartbeatIntervalMs),
    // How often the newest committed transaction becomes a watermark: the reorderer releases up to it.
    WATERMARK_INTERVAL_MS: env.positiveInt(READER_DEFAULTS.watermarkIntervalMs),
    MAX_IN_FLIGHT: env.positiveInt(READER_DEFAULTS.maxInFlight),
    // Events per raw message and its encoded size: a message is also cut before every watermark.
    BATCH_MAX_EVENTS: env.positiveInt(WIRE_DEFAULTS.batchMaxEvents),
    BATCH_MAX_BYTES: env.positiveInt(WIRE_DEFAULTS.batchMaxBytes),
    // initial: existing rows are read once the slot is created; initial_only: that, then the
    // reader stops; never: changes from the slot's start only. Backfills (signal table, CLI) run in every mode.
    SNAPSHOT_MODE: z.enum(SNAPSHOT_MODES as [string, ...string[]]).default('initial').transform((mode) => mode as (typeof SNAPSHOT_MODES)[number]),
    SNAPSHOT_CHUNK_ROWS: env.positiveInt(SNAPSHOT_DEFAULTS.chunkRows),
    SNAPSHOT_PARALLELISM: env.positiveInt(SNAPSHOT_DEFAULTS.parallelism),
    HEALTH_PORT: env.healthPort(),
    HEALTH_HOST: env.healthHost(),
    LOG_LEVEL: env.logLevel(),
  })
  .transform((config) => {
    const fallback = defaultSlotName(config.PIPELINE, config.SOURCE_ID);
    return { ...config, SLOT_NAME: config.SLOT_NAME ?? fallback, PUBLICATION_NAME: config.PUBLICATION_NAME ?? fallback };
  });

export type ReaderConfig = z.output<typeof readerConfigSchema>;
