/**
 * The process around relay stages, shared by every relay-stage app (lamport-reorderer,
 * dedup-gate): config (parsed once, logged at debug with URLs redacted) → logger level
 * → NATS (+ pipeline streams) → the app's shared resources → one stage per assigned
 * partition → health server (/readyz: NATS status stream, the app's checks, every
 * partition's loop). Runs until SIGTERM/SIGINT or until a partition stops on an error
 * retrying cannot fix (exit code 1).
 *
 * Closers run in reverse order of creation: the health server goes first, then each
 * partition finishes its batch in hand and flushes, then the app's resources, then the
 * NATS connection drains.
 *
 *   await runRelayApp({
 *     name: 'dedup-gate',
 *     configSchema: schema,
 *     setup: ({ config, bus, logger, signal }) => ({
 *       makeStage: (partition) => DedupGate.create({ bus, partition, ..., logger, signal }),
 *     }),
 *   });
 */
import { Bus, PipelineAgreement, instanceKey } from '@cdc/bus';
import { HealthServer, Metrics, PIPELINE_APPS, loadConfig, natsSecurity, redactConfig, runApp, untilAborted, withPipelineFile, type z, type AppContext, type Logger, type ReadinessCheck } from '@cdc/runtime';
import type { RelayAppConfig } from './app-config.ts';
import { registerRelayMetrics } from './metrics.ts';
import { relaysCheck } from './readiness.ts';
import type { Relay } from './relay.ts';

/** One partition's stage, as the runner needs it. */
export interface RelayStage {
  readonly partition: number;
  readonly relay: Relay;
  closed(): Promise<Error | undefined>;
  close(): Promise<void>;
}

export interface RelayAppContext<C> {
  readonly config: C;
  readonly bus: Bus;
  readonly logger: Logger;
  /** Aborted on SIGTERM/SIGINT: pass it to every stage. */
  readonly signal: AbortSignal;
  /** Registers a closer for a shared resource; it runs after the stages have closed. */
  readonly defer: AppContext['defer'];
}

export interface RelayAppSetup {
  readonly makeStage: (partition: number) => RelayStage;
  /** Readiness checks of the app's own resources, added between `nats` and `partitions`. */
  readonly checks?: Readonly<Record<string, ReadinessCheck>>;
  /** Extra fields of the "running" log line. */
  readonly fields?: Readonly<Record<string, unknown>>;
  /** Registers the app's own metric families (read at scrape time), besides the relay's. */
  readonly metrics?: (metrics: Metrics) => void;
  /** `cdc_connection_up` targets of the app's own resources (NATS is added). */
  readonly connections?: Readonly<Record<string, () => boolean>>;
}

export interface RelayAppOptions<C extends RelayAppConfig> {
  /** The app's name: logs, the NATS connection name (`<name>:<pipeline>`). */
  readonly name: string;
  readonly configSchema: z.ZodType<C, z.ZodTypeDef, unknown>;
  readonly setup: (context: RelayAppContext<C>) => RelayAppSetup | Promise<RelayAppSetup>;
  /** For tests: do not call process.exit. */
  readonly exit?: (code: number) => void;
}

/** Runs the app to its end; resolves with the exit code (after calling `exit`). */
export function runRelayApp<C extends RelayAppConfig>(options: RelayAppOptions<C>): Promise<number> {
  return runApp({ app: options.name, ...(options.exit ? { exit: options.exit } : {}) }, async ({ logger, signal, defer }) => {
    // The app's part of PIPELINE_FILE (when set) under the environment.
    const fileApp = PIPELINE_APPS.find((app) => app === options.name);
    const config = loadConfig(options.configSchema, fileApp ? withPipelineFile(fileApp) : process.env);
    logger.level = config.LOG_LEVEL;
    logger.debug({ config: redactConfig(config) }, 'configuration');

    const bus = await Bus.create({ url: config.NATS_URL, name: `${options.name}:${config.PIPELINE}`, logger, security: natsSecurity(config) });
    defer('nats', () => bus.close());
    await bus.ensurePipelineStreams(config.PIPELINE);
    // The reorderer merges every source (SOURCES): its view names them.
    const sources = (config as { SOURCES?: unknown }).SOURCES;
    const agreement = await PipelineAgreement.join(bus, {
      pipeline: config.PIPELINE,
      view: {
        app: options.name,
        instance: instanceKey(options.name, config.ASSIGNED_PARTITIONS),
        partitions: config.PARTITIONS,
        ...(Array.isArray(sources) ? { sources: sources.map(String) } : {}),
      },
      logger,
    });
    defer('agreement', () => agreement.close());

    const { makeStage, checks = {}, fields = {}, metrics: appMetrics, connections = {} } = await options.setup({ config, bus, logger, signal, defer });
    const stages = config.partitions.map((partition) => makeStage(partition));
    defer('partitions', async () => {
      await Promise.all(stages.map((stage) => stage.close()));
    });

    const metrics = Metrics.create({ app: options.name, pipeline: config.PIPELINE });
    registerRelayMetrics(metrics, options.name, stages);
    appMetrics?.(metrics);
    metrics.connections({ nats: () => bus.readiness().ok, ...connections });
    const health = await HealthServer.create({ port: config.HEALTH_PORT, host: config.HEALTH_HOST, metrics, logger });
    defer('health server', () => health.close());
    health.addCheck('nats', () => bus.readiness());
    for (const [name, check] of Object.entries(checks)) health.addCheck(name, check);
    health.addCheck('partitions', relaysCheck(stages, config.READY_MAX_FAILING_MS));
    logger.info({ port: health.port }, 'health server listening');
    logger.info({ pipeline: config.PIPELINE, partitions: config.partitions, ...fields }, `${options.name} running`);

    // Runs until SIGTERM, or until a partition stops on an error retrying cannot fix.
    const fatal = await Promise.race([untilAborted(signal).then(() => undefined), ...stages.map((stage) => stage.closed())]);
    if (fatal) throw fatal;
  });
}
