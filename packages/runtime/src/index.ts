/**
 * @cdc/runtime — what every app process needs around its domain logic.
 *
 *   await runApp({ app: 'committer' }, async ({ logger, signal, defer }) => {
 *     const config = loadConfig(schema);
 *     const metrics = Metrics.create({ app: 'committer', pipeline: config.PIPELINE });
 *     const health = await HealthServer.create({ port: config.HEALTH_PORT, host: config.HEALTH_HOST, metrics, logger });
 *     defer('health', () => health.close());
 *     await new ConsumerLoop({ name: 'apply', logger }).run(handler, signal);
 *   });
 */
export { createLogger, memoryFields, redactUrl } from './logger.ts';
export type { Logger } from './logger.ts';
export { loadConfig, env, z, redactConfig, registerEnvSecrets, MAX_PARTITIONS, DEFAULT_HEALTH_PORT } from './config.ts';
export {
  natsSecurityFields,
  redisSecurityFields,
  etcdSecurityFields,
  natsSecurity,
  redisSecurity,
  etcdSecurity,
  securityProblems,
} from './security.ts';
export type { NatsSecurity, BasicSecurity, TlsFiles } from './security.ts';
export type { Env } from './config.ts';
export { PIPELINE_APPS, pipelineFileSchema, parsePipelineFile, loadPipelineFile, pipelineFileEnv, withPipelineFile, fieldPath } from './pipeline-file.ts';
export type { PipelineApp, PipelineFile, PipelineFileReader, PipelineSource, PipelineSink } from './pipeline-file.ts';
export { HealthServer, REASON_CODE, DEFAULT_HEALTH_HOST } from './health.ts';
export type { ReadinessCheck, Readiness, HealthServerOptions } from './health.ts';
export { Metrics, DURATION_BUCKETS, BATCH_SIZE_BUCKETS, perPartition } from './metrics.ts';
export type { MetricLabels, MetricsOptions, Sample } from './metrics.ts';
export { runApp, untilAborted } from './lifecycle.ts';
export type { AppContext, RunOptions } from './lifecycle.ts';
export { consumerMachine, ConsumerLoop, IllegalTransitionError, nextConsumerState } from './consumer-machine.ts';
export type { ConsumerEvent, ConsumerState, ConsumerHandler, ConsumerLoopOptions } from './consumer-machine.ts';
