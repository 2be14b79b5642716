/**
 * The reader process: wiring only. Every decision lives in @cdc/pg-source.
 *
 * Start-up: config → NATS (+ pipeline streams) → etcd → source setup (publication, slot)
 * → Reader → health server. SIGTERM: the reader drains (publishes what it read and its
 * watermark, confirms what the committer has committed), then etcd and NATS close.
 */
import { Bus, PipelineAgreement, instanceKey } from '@cdc/bus';
import { CheckpointStore } from '@cdc/checkpoint';
import { READER_DEFAULTS, Reader, SlotMonitor, registerReaderMetrics, setupSource } from '@cdc/pg-source';
import { HealthServer, Metrics, etcdSecurity, loadConfig, natsSecurity, redactConfig, runApp, untilAborted, withPipelineFile } from '@cdc/runtime';
import { readerConfigSchema } from './config.ts';

await runApp({ app: 'reader' }, async ({ logger, signal, defer }) => {
  const config = loadConfig(readerConfigSchema, withPipelineFile('reader'));
  logger.level = config.LOG_LEVEL;
  const log = logger.child({ pipeline: config.PIPELINE, source: config.SOURCE_ID });
  log.debug({ config: redactConfig(config) }, 'configuration');

  const bus = await Bus.create({ url: config.NATS_URL, name: `reader-${config.PIPELINE}-${config.SOURCE_ID}`, logger: log, security: natsSecurity(config) });
  defer('nats', () => bus.close());
  await bus.ensurePipelineStreams(config.PIPELINE);
  const agreement = await PipelineAgreement.join(bus, {
    pipeline: config.PIPELINE,
    view: { app: 'reader', instance: instanceKey('reader', config.SOURCE_ID), partitions: config.PARTITIONS, source: config.SOURCE_ID, sinks: config.SINKS },
    logger: log,
  });
  defer('agreement', () => agreement.close());

  const checkpoints = await CheckpointStore.create({ url: config.ETCD_URL, logger: log, security: etcdSecurity(config) });
  defer('etcd', () => checkpoints.close());

  const prepared = await setupSource({
    connectionString: config.SOURCE_DATABASE_URL,
    tables: config.TABLES,
    publicationName: config.PUBLICATION_NAME,
    slotName: config.SLOT_NAME,
    logger: log,
    snapshot: config.SNAPSHOT_MODE,
  });
  log.info(
    {
      database: prepared.database,
      server_version: prepared.serverVersion,
      system_identifier: prepared.systemIdentifier,
      tables: prepared.tables.map((t) => ({ table: t.table, key: t.keyColumns })),
      slot: prepared.slot.name,
      publication: prepared.publication.name,
    },
    'source ready',
  );

  const reader = await Reader.create({
    pipeline: config.PIPELINE,
    source: config.SOURCE_ID,
    connectionString: config.SOURCE_DATABASE_URL,
    tables: config.TABLES,
    partitions: config.PARTITIONS,
    slotName: config.SLOT_NAME,
    publicationName: config.PUBLICATION_NAME,
    heartbeatIntervalMs: config.HEARTBEAT_INTERVAL_MS,
    watermarkIntervalMs: config.WATERMARK_INTERVAL_MS,
    maxInFlight: config.MAX_IN_FLIGHT,
    batchMaxEvents: config.BATCH_MAX_EVENTS,
    batchMaxBytes: config.BATCH_MAX_BYTES,
    bus,
    checkpoints,
    sinks: config.SINKS,
    logger: log,
    prepared,
    signal,
    snapshot: config.SNAPSHOT_MODE,
    snapshotChunkRows: config.SNAPSHOT_CHUNK_ROWS,
    snapshotParallelism: config.SNAPSHOT_PARALLELISM,
  });
  defer('reader', () => reader.close());

  const slotMonitor = SlotMonitor.create({ connectionString: config.SOURCE_DATABASE_URL, slotName: config.SLOT_NAME, intervalMs: READER_DEFAULTS.slotSampleIntervalMs, logger: log });
  defer('slot monitor', () => slotMonitor.close());
  const metrics = Metrics.create({ app: 'reader', pipeline: config.PIPELINE });
  registerReaderMetrics(metrics, reader, { source: config.SOURCE_ID, slot: config.SLOT_NAME, monitor: slotMonitor });
  metrics.connections({ nats: () => bus.readiness().ok, postgres: () => reader.stats().state === 'running' });

  const health = await HealthServer.create({ port: config.HEALTH_PORT, host: config.HEALTH_HOST, metrics, logger: log });
  defer('health', () => health.close());
  health.addCheck('replication', () => {
    const { state } = reader.stats();
    return { ok: state === 'running', detail: state };
  });
  health.addCheck('nats', () => bus.readiness());
  // Progress only: a snapshot in progress does not make the reader unready. Codes only
  // (`running:2`: jobs running or pending); per-table progress is in the log and _cdc.snapshot_jobs.
  health.addCheck('snapshot', () => {
    const jobs = reader.stats().snapshots;
    const open = jobs.filter((job) => job.status === 'running' || job.status === 'pending').length;
    const failed = jobs.filter((job) => job.status === 'failed').length;
    return { ok: true, detail: open + failed === 0 ? 'none_running' : [open > 0 ? `running:${open}` : '', failed > 0 ? `failed:${failed}` : ''].filter(Boolean).join('/') };
  });
  log.info({ port: health.port }, 'health server listening');

  const progress = setInterval(() => {
    const stats = reader.stats();
    log.info(
      {
        captured: stats.captured,
        transactions: stats.transactions,
        last_lsn: stats.lastLsn ?? null,
        confirmed_lsn: stats.confirmedLsn,
        watermark: stats.watermark?.lamport ?? null,
        in_flight: stats.inFlight,
        restarts: stats.restarts,
        dead_lettered: stats.deadLettered,
        snapshot_rows: stats.snapshotRows,
      },
      'progress',
    );
  }, READER_DEFAULTS.progressIntervalMs);
  defer('progress', () => clearInterval(progress));

  if (config.SNAPSHOT_MODE === 'initial_only') {
    // Stop once the initial snapshot is published (close() drains it to JetStream).
    void reader.initialSnapshotDone().then(async () => {
      log.info('SNAPSHOT_MODE=initial_only: the initial snapshot is published; the reader stops');
      await reader.close();
    });
  }

  const failure = await Promise.race([untilAborted(signal).then(() => undefined), reader.closed()]);
  if (failure) throw failure;
});
