/**
 * The committer process, wired: deduped.<p> (every partition) → the sink, exactly once;
 * committed positions → etcd for the reader's slot feedback. The loop is @cdc/committer's;
 * SINK=postgres (@cdc/sink-pg: rows and checkpoint in one PostgreSQL transaction) or
 * SINK=kafka (@cdc/sink-kafka: Debezium records and checkpoint in one Kafka transaction)
 * is the sink. Wiring only; main.ts runs it.
 *
 * SIGTERM/SIGINT: the batch in hand is applied and committed, positions are published,
 * then everything closes in reverse order of creation.
 */
import { Bus, PipelineAgreement, instanceKey } from '@cdc/bus';
import { CheckpointStore } from '@cdc/checkpoint';
import { registerCommitterMetrics } from '@cdc/committer';
import { HealthServer, Metrics, etcdSecurity, loadConfig, natsSecurity, redactConfig, runApp, withPipelineFile } from '@cdc/runtime';
import { KafkaSink, parseTopicRoutes, type KafkaSinkOptions } from '@cdc/sink-kafka';
import { PgSink } from '@cdc/sink-pg';
import { committerConfigSchema, kafkaSecurity } from './config.ts';

/** What a test-only entry point may add to the wiring (tests/kafka/committer-with-failpoint.ts); the app passes nothing. */
export interface CommitterHooks {
  /** Into the Kafka sink: runs after each transaction's last send, before its commit. */
  readonly kafkaBeforeCommit?: KafkaSinkOptions['beforeCommit'];
}

export async function runCommitter(hooks: CommitterHooks = {}): Promise<void> {
  await runApp({ app: 'committer' }, async ({ logger, signal, defer }) => {
    const config = loadConfig(committerConfigSchema, withPipelineFile('committer'));
    logger.level = config.LOG_LEVEL;
    logger.debug({ config: redactConfig(config) }, 'configuration');

    const bus = await Bus.create({ url: config.NATS_URL, name: `committer-${config.PIPELINE}-${config.SINK_NAME}`, logger, security: natsSecurity(config) });
    defer('nats', () => bus.close());
    await bus.ensurePipelineStreams(config.PIPELINE);
    const agreement = await PipelineAgreement.join(bus, {
      pipeline: config.PIPELINE,
      view: { app: 'committer', instance: instanceKey('committer', config.SINK_NAME), partitions: config.PARTITIONS, sink: config.SINK_NAME },
      logger,
    });
    defer('agreement', () => agreement.close());

    const checkpointStore = await CheckpointStore.create({ url: config.ETCD_URL, logger, security: etcdSecurity(config) });
    defer('etcd', () => checkpointStore.close());

    const committer =
      config.SINK === 'kafka'
        ? await KafkaSink.createCommitter({
            pipeline: config.PIPELINE,
            partitions: config.PARTITIONS,
            brokers: config.KAFKA_BROKERS ?? [],
            security: kafkaSecurity(config),
            bus,
            checkpointStore,
            logger,
            sinkName: config.SINK_NAME,
            ...(config.KAFKA_TRANSACTIONAL_ID ? { transactionalId: config.KAFKA_TRANSACTIONAL_ID } : {}),
            checkpointTopic: config.KAFKA_CHECKPOINT_TOPIC,
            records: {
              topicPrefix: config.KAFKA_TOPIC_PREFIX,
              routes: config.KAFKA_TOPIC_ROUTES ? parseTopicRoutes(config.KAFKA_TOPIC_ROUTES) : [],
              tombstones: config.KAFKA_TOMBSTONES,
              transactionMetadata: config.KAFKA_TRANSACTION_METADATA,
            },
            batchMaxEvents: config.BATCH_MAX_EVENTS,
            batchLingerMs: config.BATCH_LINGER_MS,
            ...(config.STREAM_TRANSACTIONS_ABOVE ? { streamAbove: config.STREAM_TRANSACTIONS_ABOVE } : {}),
            maxBufferedBytesPerPartition: config.PARTITION_BUFFER_MAX_BYTES,
            compression: config.KAFKA_COMPRESSION,
            maxRequestBytes: config.KAFKA_MAX_REQUEST_BYTES,
            ...(config.KAFKA_MAX_MESSAGE_BYTES ? { maxMessageBytes: config.KAFKA_MAX_MESSAGE_BYTES } : {}),
            transactionTimeoutMs: config.KAFKA_TRANSACTION_TIMEOUT_MS,
            topicPartitions: config.KAFKA_TOPIC_PARTITIONS,
            topicReplicationFactor: config.KAFKA_REPLICATION_FACTOR,
            checkpointReplicationFactor: config.KAFKA_REPLICATION_FACTOR,
            ...(hooks.kafkaBeforeCommit ? { beforeCommit: hooks.kafkaBeforeCommit } : {}),
            signal,
          })
        : await PgSink.createCommitter({
            pipeline: config.PIPELINE,
            partitions: config.PARTITIONS,
            sinkUrl: config.SINK_DATABASE_URL ?? '',
            bus,
            checkpointStore,
            sinkName: config.SINK_NAME,
            logger,
            tableMap: config.TABLE_MAP,
            schemaChanges: config.SCHEMA_CHANGES,
            batchMaxEvents: config.BATCH_MAX_EVENTS,
            batchLingerMs: config.BATCH_LINGER_MS,
            ...(config.STREAM_TRANSACTIONS_ABOVE ? { streamAbove: config.STREAM_TRANSACTIONS_ABOVE } : {}),
            maxBufferedBytesPerPartition: config.PARTITION_BUFFER_MAX_BYTES,
            signal,
          });
    defer('committer', () => committer.close());

    const metrics = Metrics.create({ app: 'committer', pipeline: config.PIPELINE });
    metrics.connections({ nats: () => bus.readiness().ok });
    registerCommitterMetrics(metrics, committer, { sink: config.SINK_NAME, sinkKind: config.SINK });
    const health = await HealthServer.create({ port: config.HEALTH_PORT, host: config.HEALTH_HOST, metrics, logger });
    defer('health', () => health.close());
    health.addCheck('nats', () => bus.readiness());
    health.addCheck('committer', () => committer.readiness());
    logger.info({ port: health.port, sink: config.SINK, sink_name: config.SINK_NAME }, 'health server listening');

    // Resolves after a drain (signal) or when the committer stops on its own (fenced, fatal).
    const failure = await committer.closed();
    if (failure) throw failure;
  });
}
