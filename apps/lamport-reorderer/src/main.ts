/**
 * lamport-reorderer: raw.<p> → ordered.<p> for every assigned partition.
 * Wiring only; the ordering lives in @cdc/reorder.
 */
import { Bus } from '@cdc/bus';
import { natsConnectionCheck, relaysCheck } from '@cdc/relay';
import { Reorderer } from '@cdc/reorder';
import { HealthServer, loadConfig, redactUrl, runApp, untilAborted } from '@cdc/runtime';
import { schema } from './config.ts';

await runApp({ app: 'lamport-reorderer' }, async ({ logger, signal, defer }) => {
  const config = loadConfig(schema);
  logger.level = config.LOG_LEVEL;
  logger.debug({ config: { ...config, NATS_URL: redactUrl(config.NATS_URL) } }, 'configuration');

  const bus = await Bus.create({ url: config.NATS_URL, name: `lamport-reorderer:${config.PIPELINE}`, logger });
  defer('nats', () => bus.close());
  await bus.ensurePipelineStreams(config.PIPELINE);

  const reorderers = config.partitions.map((partition) =>
    Reorderer.create({
      bus,
      pipeline: config.PIPELINE,
      partition,
      sources: config.SOURCES,
      maxBuffered: config.BUFFER_MAX_EVENTS,
      batchMax: config.BATCH_MAX,
      batchLingerMs: config.BATCH_LINGER_MS,
      statsIntervalMs: config.STATS_INTERVAL_MS,
      logger,
      signal,
    }),
  );
  // Closers run in reverse: the health server goes first, then each partition finishes
  // its batch in hand and flushes, then the connection drains.
  defer('partitions', async () => {
    await Promise.all(reorderers.map((r) => r.stop()));
  });

  const health = await HealthServer.create({ port: config.HEALTH_PORT });
  defer('health server', () => health.close());
  health.addCheck('nats', natsConnectionCheck(bus));
  health.addCheck('partitions', relaysCheck(reorderers.map((r) => ({ partition: r.partition, relay: r.relay })), config.READY_MAX_FAILING_MS));
  logger.info({ port: health.port }, 'health server listening');
  logger.info({ pipeline: config.PIPELINE, partitions: config.partitions, sources: config.SOURCES }, 'lamport-reorderer running');

  // Runs until SIGTERM, or until a partition stops on an error retrying cannot fix.
  const fatal = await Promise.race([untilAborted(signal).then(() => undefined), ...reorderers.map((r) => r.closed())]);
  if (fatal) throw fatal;
});
