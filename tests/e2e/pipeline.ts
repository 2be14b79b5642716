/**
 * The four apps of one pipeline as real processes, for end-to-end tests and the demo:
 * one reader per source, reorderer processes splitting the partitions, a dedup gate
 * and a committer. Each can be SIGKILLed and restarted with the same configuration.
 *
 *   const pipeline = await PipelineProcesses.start(spec);
 *   await pipeline.kill('committer');     // kill -9
 *   await pipeline.restart('committer');
 *   await pipeline.stop();                // SIGTERM all, bounded
 */
import type { ManagedProcess } from '../harness/process.ts';
import { spawnApp, spawnBuiltApp } from '../harness/process.ts';
import type { ServerUrls } from '../harness/servers.ts';

export interface SourceSpec {
  readonly id: string;
  readonly databaseUrl: string;
  readonly tables: readonly string[];
}

export interface PipelineSpec {
  readonly pipeline: string;
  readonly partitions: number;
  readonly sources: readonly SourceSpec[];
  /** The PostgreSQL sink; required when `sinks` includes 'postgres' (the default). */
  readonly sinkUrl?: string;
  /** Committers to run: 'committer' (PostgreSQL) and/or 'committer-kafka'. Default ['postgres']. */
  readonly sinks?: readonly ('postgres' | 'kafka')[];
  readonly kafka?: {
    readonly topicPrefix: string;
    readonly checkpointTopic: string;
    readonly env?: Readonly<Record<string, string>>;
    /** Another entry point for the Kafka committer (a test-only one with a failpoint); default the app's. */
    readonly entry?: string;
  };
  readonly servers: ServerUrls;
  /** Reorderer processes; partitions are dealt round-robin. Default 2. */
  readonly reorderers?: number;
  readonly echo?: boolean;
  readonly extraEnv?: Readonly<Record<string, string>>;
  /** Run the apps' bundles (`pnpm build`) rather than their sources under tsx: what the bench measures. */
  readonly built?: boolean;
  /** Flags for node itself, per app name (bundles only), e.g. --cpu-prof, which NODE_OPTIONS refuses. */
  readonly nodeArgs?: (app: string) => readonly string[];
  /** Starts an app some other way (tests/deploy/images.test.ts: from its image); default tsx or the bundle. */
  readonly launch?: (name: string, entry: string, env: Readonly<Record<string, string>>) => ManagedProcess;
}

type AppDefinition = { readonly entry: string; readonly env: Record<string, string> };

const READY_LINE = /health server listening/;
const START_TIMEOUT_MS = 60_000;

export class PipelineProcesses {
  readonly #spec: PipelineSpec;
  readonly #definitions = new Map<string, AppDefinition>();
  readonly #running = new Map<string, ManagedProcess>();
  readonly #restarts = new Map<string, number>();

  private constructor(spec: PipelineSpec) {
    this.#spec = spec;
    const sinks = spec.sinks ?? ['postgres'];
    const common = {
      PIPELINE: spec.pipeline,
      PARTITIONS: String(spec.partitions),
      NATS_URL: spec.servers.nats,
      HEALTH_PORT: '0',
      LOG_LEVEL: 'info',
      ...spec.extraEnv,
    };
    for (const source of spec.sources) {
      this.#definitions.set(`reader:${source.id}`, {
        entry: 'apps/reader/src/main.ts',
        env: {
          ...common,
          SOURCE_ID: source.id,
          SOURCE_DATABASE_URL: source.databaseUrl,
          TABLES: source.tables.join(','),
          ETCD_URL: spec.servers.etcd,
          HEARTBEAT_INTERVAL_MS: '500',
          SINKS: sinks.join(','),
        },
      });
    }
    const reorderers = Math.max(1, Math.min(spec.reorderers ?? 2, spec.partitions));
    for (let index = 0; index < reorderers; index++) {
      const assigned = Array.from({ length: spec.partitions }, (_, p) => p).filter((p) => p % reorderers === index);
      this.#definitions.set(`reorderer:${index}`, {
        entry: 'apps/lamport-reorderer/src/main.ts',
        env: { ...common, ASSIGNED_PARTITIONS: assigned.join(','), SOURCES: spec.sources.map((s) => s.id).join(',') },
      });
    }
    this.#definitions.set('dedup-gate', {
      entry: 'apps/dedup-gate/src/main.ts',
      env: { ...common, ASSIGNED_PARTITIONS: 'all', REDIS_URL: spec.servers.redis },
    });
    if (sinks.includes('postgres')) {
      if (spec.sinkUrl === undefined) throw new Error('a PostgreSQL sink needs sinkUrl');
      this.#definitions.set('committer', {
        entry: 'apps/committer/src/main.ts',
        env: { ...common, SINK: 'postgres', SINK_DATABASE_URL: spec.sinkUrl, ETCD_URL: spec.servers.etcd },
      });
    }
    if (sinks.includes('kafka')) {
      if (spec.kafka === undefined) throw new Error('a Kafka sink needs the kafka options');
      this.#definitions.set('committer-kafka', {
        entry: spec.kafka.entry ?? 'apps/committer/src/main.ts',
        env: {
          ...common,
          SINK: 'kafka',
          KAFKA_BROKERS: spec.servers.kafkaBrokers.join(','),
          KAFKA_TOPIC_PREFIX: spec.kafka.topicPrefix,
          KAFKA_CHECKPOINT_TOPIC: spec.kafka.checkpointTopic,
          ETCD_URL: spec.servers.etcd,
          ...spec.kafka.env,
        },
      });
    }
  }

  static async start(spec: PipelineSpec): Promise<PipelineProcesses> {
    const pipeline = new PipelineProcesses(spec);
    try {
      // Downstream first: consumers are ready before the reader publishes.
      const order = [...pipeline.#definitions.keys()].sort((a, b) => rank(a) - rank(b));
      for (const name of order) await pipeline.#launch(name);
    } catch (error) {
      await pipeline.stop();
      throw error;
    }
    return pipeline;
  }

  get names(): string[] {
    return [...this.#definitions.keys()];
  }

  process(name: string): ManagedProcess {
    const running = this.#running.get(name);
    if (!running) throw new Error(`no running app named ${name}`);
    return running;
  }

  /**
   * Starts another process from `definition`'s configuration under the name `as` (a
   * replacement while the original is SIGSTOPped, say). Stopped with the others.
   */
  async launchAs(definition: string, as: string): Promise<ManagedProcess> {
    const found = this.#definitions.get(definition);
    if (!found) throw new Error(`unknown app ${definition}; known: ${this.names.join(', ')}`);
    this.#definitions.set(as, found);
    return this.#launch(as);
  }

  restarts(name: string): number {
    return this.#restarts.get(name) ?? 0;
  }

  async #launch(name: string): Promise<ManagedProcess> {
    const definition = this.#definitions.get(name);
    if (!definition) throw new Error(`unknown app ${name}; known: ${this.names.join(', ')}`);
    const nodeArgs = this.#spec.nodeArgs?.(name) ?? [];
    const child = this.#spec.launch ? this.#spec.launch(name, definition.entry, definition.env) : (this.#spec.built ? spawnBuiltApp : spawnApp)(definition.entry, {
      name,
      ...(nodeArgs.length > 0 ? { nodeArgs } : {}),
      env: definition.env,
      ...(this.#spec.echo === undefined ? {} : { echo: this.#spec.echo }),
    });
    this.#running.set(name, child);
    await child.waitForLine(READY_LINE, START_TIMEOUT_MS);
    return child;
  }

  /** kill -9: no drain, no goodbye. */
  async kill(name: string): Promise<void> {
    const child = this.process(name);
    child.kill('SIGKILL');
    await child.waitForExit(10_000);
  }

  /** Stops (SIGTERM) what runs under `name` and starts it again, with `env` over its configuration from now on. */
  async restart(name: string, env?: Readonly<Record<string, string>>): Promise<void> {
    const previous = this.#running.get(name);
    if (previous) await previous.stop();
    const definition = this.#definitions.get(name);
    if (env && definition) this.#definitions.set(name, { ...definition, env: { ...definition.env, ...env } });
    this.#restarts.set(name, this.restarts(name) + 1);
    await this.#launch(name);
  }

  /** SIGTERM every app (upstream first so downstream can drain), bounded. */
  async stop(): Promise<void> {
    const order = [...this.#running.keys()].sort((a, b) => rank(b) - rank(a));
    for (const name of order) await this.#running.get(name)?.stop(10_000);
    this.#running.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

function rank(name: string): number {
  if (name.startsWith('committer')) return 0;
  if (name.startsWith('dedup')) return 1;
  if (name.startsWith('reorderer')) return 2;
  return 3;
}
