/**
 * The per-test context: connections to the real servers, unique names, child processes,
 * and cleanup that always runs, newest first, each step bounded in time.
 *
 *   import { test, expect } from '../harness/index.ts';
 *   test('…', async ({ ctx }) => {
 *     const db = await ctx.pg();                  // closed after the test
 *     const table = ctx.uniqueName('orders');
 *     await db.query(`CREATE TABLE ${table} (id int primary key)`);
 *     ctx.defer(`drop ${table}`, () => db.query(`DROP TABLE ${table}`));
 *   });
 *
 * Outside the `test` fixture: `await using ctx = createTestContext();`.
 */
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { Etcd3 } from 'etcd3';
import { Redis, type RedisOptions } from 'ioredis';
import { Admin, Producer, stringSerializers, type ProducerOptions } from '@platformatic/kafka';
import { closeNow } from '@cdc/sink-kafka';
import { Client as PgClient, type ClientConfig as PgClientConfig } from 'pg';
import { inject, test as base } from 'vitest';
import { uniqueName } from './names.ts';
import { ManagedProcess, spawnApp, type ProcessOptions } from './process.ts';
import './provided.ts';
import { serverEnv, type ServerUrls } from './servers.ts';
import { withTimeout } from './wait.ts';

/** Bound on each cleanup step: a hung close fails the test instead of hanging the run. */
const CLEANUP_STEP_TIMEOUT_MS = 15_000;

export interface NatsHandles {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
}

export class TestContext implements AsyncDisposable {
  readonly servers: ServerUrls;
  readonly #cleanups: { name: string; run: () => unknown }[] = [];
  #closed: Promise<void> | undefined;

  constructor(servers: ServerUrls) {
    this.servers = servers;
  }

  /** Registers a cleanup step; steps run in reverse order of registration. */
  defer(name: string, run: () => unknown): void {
    if (this.#closed) throw new Error(`test context already closed; cannot defer '${name}'`);
    this.#cleanups.push({ name, run });
  }

  uniqueName(prefix?: string): string {
    return uniqueName(prefix);
  }

  /** The URLs as the env vars the apps read, for spawned processes. */
  env(): Record<string, string> {
    return serverEnv(this.servers);
  }

  // --- PostgreSQL ---------------------------------------------------------------------

  pgConfig(overrides: PgClientConfig = {}): PgClientConfig {
    return { connectionString: this.servers.postgres, connectionTimeoutMillis: 5_000, ...overrides };
  }

  /** A connected client, ended after the test. */
  async pg(overrides: PgClientConfig = {}): Promise<PgClient> {
    const client = new PgClient(this.pgConfig(overrides));
    // An idle client whose server goes away emits 'error'; unhandled, it would crash the worker.
    client.on('error', () => undefined);
    await client.connect();
    this.defer('pg client end', () => client.end());
    return client;
  }

  // --- NATS JetStream -----------------------------------------------------------------

  async nats(): Promise<NatsHandles> {
    const nc = await natsConnect({ servers: this.servers.nats, name: 'cdc-tests', timeout: 5_000, maxReconnectAttempts: 3 });
    this.defer('nats close', () => nc.close());
    return { nc, js: jetstream(nc), jsm: await jetstreamManager(nc) };
  }

  // --- Redis --------------------------------------------------------------------------

  async redis(options: RedisOptions = {}): Promise<Redis> {
    const redis = new Redis(this.servers.redis, {
      lazyConnect: true,
      connectTimeout: 5_000,
      maxRetriesPerRequest: 1,
      ...options,
    });
    redis.on('error', () => undefined); // reported through the failing command instead
    await redis.connect();
    this.defer('redis quit', async () => {
      try {
        await withTimeout(redis.quit(), 2_000, 'redis quit');
      } catch {
        redis.disconnect();
      }
    });
    return redis;
  }

  // --- etcd ---------------------------------------------------------------------------

  etcd(): Etcd3 {
    const client = new Etcd3({ hosts: this.servers.etcd, dialTimeout: 5_000 });
    this.defer('etcd close', () => client.close());
    return client;
  }

  // --- Kafka --------------------------------------------------------------------------

  /** A Kafka admin client (connects on first use) for the local brokers or `brokers`, closed after the test. */
  kafkaAdmin(brokers: readonly string[] = this.servers.kafkaBrokers): Admin {
    const admin = new Admin({ clientId: uniqueName('admin'), bootstrapBrokers: [...brokers], connectTimeout: 5_000, retries: 5, retryDelay: 200 });
    this.defer('kafka admin close', () => closeNow(admin));
    return admin;
  }

  /** A producer of string keys and values, closed after the test. */
  kafkaProducer(
    options: Omit<ProducerOptions<string, string, string, string>, 'clientId' | 'bootstrapBrokers' | 'serializers'> = {},
    brokers: readonly string[] = this.servers.kafkaBrokers,
  ): Producer<string, string, string, string> {
    const producer = new Producer<string, string, string, string>({
      clientId: uniqueName('producer'),
      bootstrapBrokers: [...brokers],
      serializers: stringSerializers,
      connectTimeout: 5_000,
      ...options,
    });
    this.defer('kafka producer close', () => closeNow(producer));
    return producer;
  }

  // --- processes ----------------------------------------------------------------------

  /** Spawns a process (server URLs in its env), stopped (TERM, then KILL) after the test. */
  spawn(options: ProcessOptions): ManagedProcess {
    const child = ManagedProcess.spawn({ ...options, env: { ...this.env(), ...options.env } });
    this.defer(`stop ${child.name}`, () => child.stop());
    return child;
  }

  /** Runs a TypeScript entry point (relative to the repo root) with tsx; see spawnApp. */
  spawnApp(entry: string, options: Parameters<typeof spawnApp>[1] = {}): ManagedProcess {
    const child = spawnApp(entry, { ...options, env: { ...this.env(), ...options?.env } });
    this.defer(`stop ${child.name}`, () => child.stop());
    return child;
  }

  // --- lifecycle ----------------------------------------------------------------------

  /** Runs every cleanup step (newest first) even when some fail; then throws them all. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      const errors: unknown[] = [];
      for (const { name, run } of this.#cleanups.reverse()) {
        try {
          await withTimeout(Promise.resolve().then(run), CLEANUP_STEP_TIMEOUT_MS, `cleanup '${name}'`);
        } catch (error) {
          errors.push(new Error(`cleanup '${name}' failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error }));
        }
      }
      this.#cleanups.length = 0;
      if (errors.length === 1) throw errors[0];
      if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanup steps failed`);
    })();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}


/** A context on the servers the global setup resolved (only inside a vitest worker). */
export function createTestContext(servers: ServerUrls = inject('servers')): TestContext {
  return new TestContext(servers);
}

/** `test` with a `ctx` fixture: a fresh TestContext per test, closed after it. */
export const test = base.extend<{ ctx: TestContext }>({
  // eslint-disable-next-line no-empty-pattern -- vitest reads fixture dependencies from the destructuring
  ctx: async ({}, use) => {
    const ctx = createTestContext();
    try {
      await use(ctx);
    } finally {
      await ctx.close();
    }
  },
});
