/**
 * committer — deduped.<p> (every partition) → sink PostgreSQL, exactly once; committed
 * positions → etcd for the reader's slot feedback. Wiring only: the logic is @cdc/sink-pg.
 *
 * SIGTERM/SIGINT: the batch in hand is applied and committed, positions are published,
 * then everything closes in reverse order of creation.
 */
import { Bus } from '@cdc/bus';
import { CheckpointStore } from '@cdc/checkpoint';
import { HealthServer, env, loadConfig, redactUrl, runApp, z } from '@cdc/runtime';
import { Committer, parseTableMap } from '@cdc/sink-pg';

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

const schema = z.object({
  PIPELINE: env.name(),
  PARTITIONS: z
    .string({ required_error: 'required: the number of partitions of the pipeline, for example 8' })
    .regex(/^\d+$/, 'must be a whole number, for example 8')
    .transform(Number)
    .pipe(z.number().int().min(1, 'must be at least 1').max(4096, 'must be at most 4096')),
  SINK_DATABASE_URL: env.url(['postgres', 'postgresql'], 'postgres://user:password@host:5432/sink'),
  NATS_URL: env.url(['nats', 'tls'], 'nats://127.0.0.1:4222'),
  ETCD_URL: etcdUrls,
  TABLE_MAP: tableMap,
  BATCH_MAX_EVENTS: env.positiveInt(2000),
  BATCH_LINGER_MS: z.coerce.number().int().min(0).max(60_000).default(50),
  HEALTH_PORT: env.port(8080),
  LOG_LEVEL: env.logLevel(),
});

await runApp({ app: 'committer' }, async ({ logger, signal, defer }) => {
  const config = loadConfig(schema);
  logger.level = config.LOG_LEVEL;
  logger.debug(
    {
      config: {
        ...config,
        SINK_DATABASE_URL: redactUrl(config.SINK_DATABASE_URL),
        NATS_URL: redactUrl(config.NATS_URL),
        ETCD_URL: config.ETCD_URL.split(',').map((url) => redactUrl(url.trim())).join(','),
        TABLE_MAP: Object.fromEntries(config.TABLE_MAP),
      },
    },
    'configuration',
  );

  const bus = await Bus.connect({ url: config.NATS_URL, name: `committer-${config.PIPELINE}`, logger });
  defer('nats', () => bus.close());
  await bus.ensurePipelineStreams(config.PIPELINE);

  const checkpointStore = await CheckpointStore.connect({ url: config.ETCD_URL, logger });
  defer('etcd', () => checkpointStore.close());

  const committer = await Committer.start({
    pipeline: config.PIPELINE,
    partitions: config.PARTITIONS,
    sinkUrl: config.SINK_DATABASE_URL,
    bus,
    checkpointStore,
    logger,
    tableMap: config.TABLE_MAP,
    batchMaxEvents: config.BATCH_MAX_EVENTS,
    batchLingerMs: config.BATCH_LINGER_MS,
    signal,
  });
  defer('committer', () => committer.close());

  const health = await HealthServer.create({ port: config.HEALTH_PORT });
  defer('health', () => health.close());
  health.addCheck('committer', () => committer.readiness());
  logger.info({ port: health.port }, 'health server listening');

  // Resolves after a drain (signal) or when the committer stops on its own (fenced, fatal).
  const failure = await committer.done;
  if (failure) throw failure;
});
