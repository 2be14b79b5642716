/**
 * dedup-gate: ordered.<p> → deduped.<p> for every assigned partition, dropping events
 * another input message already claimed in Redis. Wiring only; the logic is @cdc/dedup.
 */
import { Bus } from '@cdc/bus';
import { DedupGate, RedisDedupStore } from '@cdc/dedup';
import { natsConnectionCheck, relaysCheck } from '@cdc/relay';
import { HealthServer, loadConfig, redactUrl, runApp, untilAborted } from '@cdc/runtime';
import { schema } from './config.ts';

await runApp({ app: 'dedup-gate' }, async ({ logger, signal, defer }) => {
  const config = loadConfig(schema);
  logger.level = config.LOG_LEVEL;
  logger.debug({ config: { ...config, NATS_URL: redactUrl(config.NATS_URL), REDIS_URL: redactUrl(config.REDIS_URL) } }, 'configuration');

  const bus = await Bus.create({ url: config.NATS_URL, name: `dedup-gate:${config.PIPELINE}`, logger });
  defer('nats', () => bus.close());
  await bus.ensurePipelineStreams(config.PIPELINE);

  // Connects in the background: while Redis is down every batch fails and is retried.
  const store = RedisDedupStore.create({ url: config.REDIS_URL, pipeline: config.PIPELINE, windowMs: config.DEDUP_WINDOW_MS, logger });
  defer('redis', () => store.close());

  const gates = config.partitions.map((partition) =>
    DedupGate.create({
      bus,
      store,
      pipeline: config.PIPELINE,
      partition,
      batchMax: config.BATCH_MAX,
      batchLingerMs: config.BATCH_LINGER_MS,
      logger,
      signal,
    }),
  );
  // Closers run in reverse: health server, then each partition finishes its batch in
  // hand and flushes, then Redis, then the NATS connection drains.
  defer('partitions', async () => {
    await Promise.all(gates.map((gate) => gate.stop()));
  });

  const health = await HealthServer.create({ port: config.HEALTH_PORT });
  defer('health server', () => health.close());
  health.addCheck('nats', natsConnectionCheck(bus));
  health.addCheck('redis', () => (store.isReady() ? { ok: true } : { ok: false, detail: 'not connected' }));
  health.addCheck('partitions', relaysCheck(gates.map((g) => ({ partition: g.partition, relay: g.relay })), config.READY_MAX_FAILING_MS));
  logger.info({ port: health.port }, 'health server listening');
  logger.info({ pipeline: config.PIPELINE, partitions: config.partitions, window_ms: config.DEDUP_WINDOW_MS }, 'dedup-gate running');

  const fatal = await Promise.race([untilAborted(signal).then(() => undefined), ...gates.map((gate) => gate.closed())]);
  if (fatal) throw fatal;
});
