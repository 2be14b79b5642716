/**
 * The ONE way tests find their servers. Order:
 *   1. env: POSTGRES_URL, NATS_URL, REDIS_URL, ETCD_URL and KAFKA_BROKERS all set → use them
 *      (scripts/test.sh exports them after `servers.sh up`; CI or a developer may point elsewhere);
 *   2. containers: a Docker engine answers → start throw-away containers (testcontainers);
 *   3. local: `bash infra/local/servers.sh up` (installs and starts the servers on this machine,
 *      idempotent) and read `.state/servers.env`.
 * `CDC_TEST_SERVERS=env|containers|local` forces one strategy (no fall-through).
 *
 * Runs once per vitest run in the global setup (global-setup.ts); tests get the URLs
 * through `inject('servers')` (see context.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withTimeout } from './wait.ts';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SERVERS_SCRIPT = join(REPO_ROOT, 'infra', 'local', 'servers.sh');
export const SERVERS_ENV_FILE = join(REPO_ROOT, '.state', 'servers.env');

export interface ServerUrls {
  /** `postgres://user@host:port/db` — a superuser that may create slots and publications. */
  readonly postgres: string;
  /** `nats://host:port`, JetStream enabled. */
  readonly nats: string;
  /** `redis://host:port` */
  readonly redis: string;
  /** `http://host:port` (etcd v3 gRPC endpoint) */
  readonly etcd: string;
  /** `host:port` of each Kafka broker. */
  readonly kafkaBrokers: readonly string[];
}

export type ServersSource = 'env' | 'containers' | 'local';

export interface ResolvedServers {
  readonly urls: ServerUrls;
  readonly source: ServersSource;
  /** Stops what this resolution started (containers); a no-op for env and local servers. */
  stop(): Promise<void>;
}

export const SERVER_ENV_VARS = ['POSTGRES_URL', 'NATS_URL', 'REDIS_URL', 'ETCD_URL', 'KAFKA_BROKERS'] as const;
export type ServerEnvVar = (typeof SERVER_ENV_VARS)[number];

/** The URLs as the environment variables every app reads (for spawned processes). */
export function serverEnv(urls: ServerUrls): Record<ServerEnvVar, string> {
  return {
    POSTGRES_URL: urls.postgres,
    NATS_URL: urls.nats,
    REDIS_URL: urls.redis,
    ETCD_URL: urls.etcd,
    KAFKA_BROKERS: urls.kafkaBrokers.join(','),
  };
}

/** Reads the five variables; `missing` lists those unset or empty. */
export function serversFromEnv(env: NodeJS.ProcessEnv): { urls: ServerUrls; missing: [] } | { urls: undefined; missing: ServerEnvVar[] } {
  const missing = SERVER_ENV_VARS.filter((name) => !env[name]?.trim());
  if (missing.length > 0) return { urls: undefined, missing };
  const get = (name: ServerEnvVar): string => (env[name] ?? '').trim();
  return {
    urls: {
      postgres: get('POSTGRES_URL'),
      nats: get('NATS_URL'),
      redis: get('REDIS_URL'),
      etcd: get('ETCD_URL'),
      kafkaBrokers: get('KAFKA_BROKERS')
        .split(',')
        .map((broker) => broker.trim())
        .filter((broker) => broker.length > 0),
    },
    missing: [],
  };
}

/** Parses `export NAME=value` lines (the format servers.sh writes). */
export function parseEnvFile(text: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!match?.[1]) continue;
    env[match[1]] = (match[2] ?? '').replace(/^(['"])(.*)\1$/, '$2');
  }
  return env;
}

export interface ResolveOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly log?: (message: string) => void;
  /** How long to wait for a Docker engine to answer. */
  readonly dockerProbeTimeoutMs?: number;
  /** Bound on `servers.sh up` (it may install packages and download Kafka the first time). */
  readonly localUpTimeoutMs?: number;
}

export async function resolveServers(options: ResolveOptions = {}): Promise<ResolvedServers> {
  const env = options.env ?? process.env;
  const log = options.log ?? (() => undefined);
  const forced = env.CDC_TEST_SERVERS?.trim() || 'auto';
  if (!['auto', 'env', 'containers', 'local'].includes(forced)) {
    throw new Error(`CDC_TEST_SERVERS must be one of auto, env, containers, local; got '${forced}'`);
  }

  if (forced === 'auto' || forced === 'env') {
    const fromEnv = serversFromEnv(env);
    if (fromEnv.urls) {
      log('servers: from environment variables');
      return { urls: fromEnv.urls, source: 'env', stop: async () => undefined };
    }
    if (forced === 'env') throw new Error(`CDC_TEST_SERVERS=env but these are not set: ${fromEnv.missing.join(', ')}`);
    if (fromEnv.missing.length < SERVER_ENV_VARS.length) {
      log(`servers: ignoring the partial environment (missing ${fromEnv.missing.join(', ')})`);
    }
  }

  if (forced === 'auto' || forced === 'containers') {
    const { dockerAvailable, startContainers } = await import('./containers.ts');
    if (await dockerAvailable(options.dockerProbeTimeoutMs ?? 5_000)) {
      log('servers: starting containers (testcontainers)');
      const started = await startContainers({ log });
      return { urls: started.urls, source: 'containers', stop: started.stop };
    }
    if (forced === 'containers') throw new Error('CDC_TEST_SERVERS=containers but no Docker engine answered');
    log('servers: no Docker engine answered; using infra/local/servers.sh');
  }

  const urls = await startLocalServers(env, options.localUpTimeoutMs ?? 15 * 60_000);
  return { urls, source: 'local', stop: async () => undefined };
}

/**
 * `servers.sh up` is idempotent: it starts only what is stopped. Servers it starts get a
 * watchdog (CDC_SERVERS_TTL_SECONDS, default here 1 h) so they never outlive a forgotten run;
 * they are left running after the tests so the next run starts at once.
 */
async function startLocalServers(env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ServerUrls> {
  if (!existsSync(SERVERS_SCRIPT)) {
    throw new Error(
      `no servers: set ${SERVER_ENV_VARS.join(', ')}, or run a Docker engine, or provide ${SERVERS_SCRIPT}`,
    );
  }
  const child = spawn('bash', [SERVERS_SCRIPT, 'up'], {
    cwd: REPO_ROOT,
    env: { ...env, CDC_SERVERS_TTL_SECONDS: env.CDC_SERVERS_TTL_SECONDS ?? '3600' },
    // The servers detach their own stdio; ours goes to the terminal for progress.
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exit = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
  let code: number | null;
  try {
    code = await withTimeout(exit, timeoutMs, 'infra/local/servers.sh up');
  } catch (error) {
    child.kill('SIGTERM');
    throw error;
  }
  if (code !== 0) throw new Error(`infra/local/servers.sh up exited with ${code}; see its output above`);
  const fromFile = serversFromEnv(parseEnvFile(await readFile(SERVERS_ENV_FILE, 'utf8')));
  if (!fromFile.urls) throw new Error(`${SERVERS_ENV_FILE} lacks ${fromFile.missing.join(', ')}`);
  return fromFile.urls;
}

/** `host:port` of every server, for a reachability check. */
export function endpoints(urls: ServerUrls): { server: string; host: string; port: number }[] {
  const fromUrl = (server: string, url: string, defaultPort: number) => {
    const parsed = new URL(url);
    return { server, host: parsed.hostname, port: Number(parsed.port || defaultPort) };
  };
  return [
    fromUrl('postgres', urls.postgres, 5432),
    fromUrl('nats', urls.nats, 4222),
    fromUrl('redis', urls.redis, 6379),
    fromUrl('etcd', urls.etcd, 2379),
    ...urls.kafkaBrokers.map((broker) => fromUrl('kafka', `kafka://${broker}`, 9092)),
  ];
}

/**
 * Fails fast, naming every server that does not accept a TCP connection, instead of
 * letting each test time out on its own.
 */
export async function assertReachable(urls: ServerUrls, timeoutMs = 3_000): Promise<void> {
  const results = await Promise.all(
    endpoints(urls).map(
      ({ server, host, port }) =>
        new Promise<string | undefined>((resolve) => {
          const socket = tcpConnect({ host, port });
          const done = (problem?: string): void => {
            socket.destroy();
            resolve(problem === undefined ? undefined : `${server} at ${host}:${port}: ${problem}`);
          };
          socket.setTimeout(timeoutMs, () => done(`no answer within ${timeoutMs} ms`));
          socket.once('connect', () => done());
          socket.once('error', (error) => done(error.message));
        }),
    ),
  );
  const problems = results.filter((problem): problem is string => problem !== undefined);
  if (problems.length > 0) {
    throw new Error(
      `servers not reachable: ${problems.join('; ')}. Start them with 'bash infra/local/servers.sh up' ` +
        `or unset ${SERVER_ENV_VARS.join('/')} to let the harness start them.`,
    );
  }
}
