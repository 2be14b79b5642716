/**
 * The committer's environment, parsed once at start-up. SINK chooses the sink; each
 * sink's variables are required only for it. Every bad variable is named in one error.
 *
 * Two sinks beside each other are two committer processes (SINK=postgres and
 * SINK=kafka) with their own checkpoints; the reader's SINKS lists both so the slot
 * is confirmed only through what both committed.
 */
import { COMMITTER_DEFAULTS } from '@cdc/committer';
import { env, etcdSecurityFields, natsSecurityFields, z } from '@cdc/runtime';
import zlib from 'node:zlib';
import { COMPRESSIONS, KAFKA_DEFAULTS, type Compression, SASL_MECHANISMS, securityProblems, type KafkaSecurity, type SaslMechanism } from '@cdc/sink-kafka';
import { parseTableMap } from '@cdc/sink-pg';

const tableMap = z
  .string()
  .optional()
  .transform((value, context) => {
    try {
      return parseTableMap(value);
    } catch (error) {
      context.addIssue({ code: z.ZodIssueCode.custom, message: error instanceof Error ? error.message : String(error) });
      return z.NEVER;
    }
  });

const etcdUrls = z
  .string({ required_error: 'required, for example http://127.0.0.1:2379 (comma-separated for a cluster)' })
  .refine(
    (value) => value.split(',').every((url) => /^https?:\/\/[^\s/]+/.test(url.trim())),
    'must be http(s) URLs, for example http://127.0.0.1:2379 (comma-separated for a cluster)',
  );

const BROKER = /^[A-Za-z0-9.-]+:\d{1,5}$/;

const booleanFlag = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'true or false' })
    .default(fallback ? 'true' : 'false')
    .transform((value) => value === 'true' || value === '1' || value === 'yes');

export const committerConfigSchema = z
  .object({
    PIPELINE: env.name(),
    PARTITIONS: env.partitions(),
    SINK: z.enum(['postgres', 'kafka'], { message: "'postgres' or 'kafka'" }).default('postgres'),
    /** Name of this sink's positions in etcd (the reader's SINKS). Default: SINK. */
    SINK_NAME: env.name().optional(),
    NATS_URL: env.natsUrl(),
    ...natsSecurityFields,
    ETCD_URL: etcdUrls,
    ...etcdSecurityFields,
    BATCH_MAX_EVENTS: env.positiveInt(COMMITTER_DEFAULTS.batchMaxEvents),
    BATCH_LINGER_MS: z.coerce.number().int().min(0).max(60_000).default(COMMITTER_DEFAULTS.batchLingerMs),
    /**
     * Source transactions with more events than this are streamed in chunks of
     * BATCH_MAX_EVENTS instead of held whole. PostgreSQL: still one sink transaction
     * (default BATCH_MAX_EVENTS). Kafka: consecutive Kafka transactions (default KAFKA_DEFAULTS.streamAbove, 5000).
     */
    STREAM_TRANSACTIONS_ABOVE: z.coerce.number().int().positive().optional(),
    /** Per partition: encoded bytes read ahead of the sink before that partition waits (4 partitions × 8 MiB fit a 128 MB heap). */
    PARTITION_BUFFER_MAX_BYTES: env.positiveInt(COMMITTER_DEFAULTS.maxBufferedBytesPerPartition),
    HEALTH_PORT: env.healthPort(),
    HEALTH_HOST: env.healthHost(),
    LOG_LEVEL: env.logLevel(),
    // --- SINK=postgres
    SINK_DATABASE_URL: env.url(['postgres', 'postgresql'], 'postgres://user:password@host:5432/sink').optional(),
    TABLE_MAP: tableMap,
    /** evolve: the sink table follows ADD COLUMN, widenings, new tables; fail: hold until the sink is fixed. */
    SCHEMA_CHANGES: z.enum(['evolve', 'fail'], { message: "'evolve' or 'fail'" }).default(COMMITTER_DEFAULTS.schemaChanges),
    // --- SINK=kafka
    KAFKA_BROKERS: env
      .list()
      .refine((brokers) => brokers.every((broker) => BROKER.test(broker)), 'comma list of host:port, for example 127.0.0.1:9092')
      .optional(),
    /** Topic of a table: <prefix>.<schema>.<table>. Default: PIPELINE. */
    KAFKA_TOPIC_PREFIX: z.string().regex(/^[A-Za-z0-9._-]{1,200}$/, 'letters, digits, ., _ and - only').optional(),
    /** schema.table=topic or schema.*=topic, comma-separated; first match wins. */
    KAFKA_TOPIC_ROUTES: z.string().optional(),
    KAFKA_TOMBSTONES: booleanFlag(true),
    KAFKA_TRANSACTION_METADATA: booleanFlag(false),
    KAFKA_TRANSACTIONAL_ID: z.string().regex(/^[A-Za-z0-9._-]{1,200}$/, 'letters, digits, ., _ and - only').optional(),
    KAFKA_CHECKPOINT_TOPIC: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, 'a Kafka topic name').default(KAFKA_DEFAULTS.checkpointTopic),
    KAFKA_COMPRESSION: z
      .enum(COMPRESSIONS as [Compression, ...Compression[]], { message: COMPRESSIONS.map((c) => `'${c}'`).join(', ') })
      .default(KAFKA_DEFAULTS.compression)
      .refine((codec) => codec !== 'zstd' || typeof (zlib as { zstdCompressSync?: unknown }).zstdCompressSync === 'function', {
        message: `zstd needs Node.js 22.15 or newer (this is ${process.version})`,
      }),
    /** SASL: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (user + password) or OAUTHBEARER (token). Unset: no SASL. */
    KAFKA_SASL_MECHANISM: z.enum(SASL_MECHANISMS as [SaslMechanism, ...SaslMechanism[]], { message: SASL_MECHANISMS.map((m) => `'${m}'`).join(', ') }).optional(),
    KAFKA_SASL_USERNAME: z.string().min(1).optional(),
    KAFKA_SASL_PASSWORD: z.string().optional(),
    KAFKA_SASL_TOKEN: z.string().optional(),
    /** TLS to the brokers; implied by any KAFKA_TLS_*_FILE. */
    KAFKA_TLS: booleanFlag(false),
    KAFKA_TLS_CA_FILE: z.string().min(1).optional(),
    KAFKA_TLS_CERT_FILE: z.string().min(1).optional(),
    KAFKA_TLS_KEY_FILE: z.string().min(1).optional(),
    KAFKA_TLS_SERVER_NAME: z.string().min(1).optional(),
    KAFKA_MAX_REQUEST_BYTES: env.positiveInt(KAFKA_DEFAULTS.maxRequestBytes),
    KAFKA_MAX_MESSAGE_BYTES: z.coerce.number().int().positive().optional(),
    KAFKA_TRANSACTION_TIMEOUT_MS: z.coerce.number().int().min(1_000).max(900_000).default(KAFKA_DEFAULTS.transactionTimeoutMs),
    KAFKA_TOPIC_PARTITIONS: env.positiveInt(KAFKA_DEFAULTS.topicPartitions),
    KAFKA_REPLICATION_FACTOR: env.positiveInt(KAFKA_DEFAULTS.replicationFactor),
  })
  .superRefine((config, context) => {
    if (config.SINK === 'postgres' && config.SINK_DATABASE_URL === undefined) {
      context.addIssue({ code: z.ZodIssueCode.custom, path: ['SINK_DATABASE_URL'], message: 'required with SINK=postgres, for example postgres://user:password@host:5432/sink' });
    }
    if (config.SINK === 'kafka' && (config.KAFKA_BROKERS === undefined || config.KAFKA_BROKERS.length === 0)) {
      context.addIssue({ code: z.ZodIssueCode.custom, path: ['KAFKA_BROKERS'], message: 'required with SINK=kafka, for example 127.0.0.1:9092' });
    }
    for (const { variable, problem } of securityProblems(kafkaSecurity(config))) {
      context.addIssue({ code: z.ZodIssueCode.custom, path: [variable], message: problem });
    }
  })
  .transform((config) => ({ ...config, SINK_NAME: config.SINK_NAME ?? config.SINK, KAFKA_TOPIC_PREFIX: config.KAFKA_TOPIC_PREFIX ?? config.PIPELINE }));

export type CommitterConfig = z.output<typeof committerConfigSchema>;

/** The Kafka sink's TLS and SASL settings from the committer's configuration. */
export function kafkaSecurity(config: {
  KAFKA_SASL_MECHANISM?: SaslMechanism | undefined;
  KAFKA_SASL_USERNAME?: string | undefined;
  KAFKA_SASL_PASSWORD?: string | undefined;
  KAFKA_SASL_TOKEN?: string | undefined;
  KAFKA_TLS: boolean;
  KAFKA_TLS_CA_FILE?: string | undefined;
  KAFKA_TLS_CERT_FILE?: string | undefined;
  KAFKA_TLS_KEY_FILE?: string | undefined;
  KAFKA_TLS_SERVER_NAME?: string | undefined;
}): KafkaSecurity {
  const tls = config.KAFKA_TLS || config.KAFKA_TLS_CA_FILE !== undefined || config.KAFKA_TLS_CERT_FILE !== undefined;
  return {
    ...(tls
      ? { tls: { caFile: config.KAFKA_TLS_CA_FILE, certFile: config.KAFKA_TLS_CERT_FILE, keyFile: config.KAFKA_TLS_KEY_FILE, serverName: config.KAFKA_TLS_SERVER_NAME } }
      : {}),
    ...(config.KAFKA_SASL_MECHANISM
      ? { sasl: { mechanism: config.KAFKA_SASL_MECHANISM, username: config.KAFKA_SASL_USERNAME, password: config.KAFKA_SASL_PASSWORD, token: config.KAFKA_SASL_TOKEN } }
      : {}),
  };
}
