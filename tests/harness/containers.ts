/**
 * Servers as throw-away containers, for machines with a Docker engine. Loaded lazily by
 * servers.ts so machines without Docker never import testcontainers' runtime.
 *
 * Images match what infra/local/servers.sh installs: PostgreSQL 15 (wal_level=logical),
 * NATS 2.10 with JetStream, Redis 7, etcd 3.5, Kafka 3.9.1 (KRaft, one combined node).
 * testcontainers' reaper (Ryuk) removes them if this process dies before `stop()`.
 */
import type { StartedTestContainer } from 'testcontainers';
import type { ServerUrls } from './servers.ts';
import { withTimeout } from './wait.ts';
import { freePort } from './ports.ts';

const STARTUP_TIMEOUT_MS = 180_000;

/** True when testcontainers finds a container runtime that answers within `timeoutMs`. */
export async function dockerAvailable(timeoutMs: number): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await withTimeout(getContainerRuntimeClient(), timeoutMs, 'a Docker engine');
    return true;
  } catch {
    return false;
  }
}

export async function startContainers(options: { log: (message: string) => void }): Promise<{
  urls: ServerUrls;
  stop: () => Promise<void>;
}> {
  const { GenericContainer, Wait } = await import('testcontainers');
  // Kafka advertises the address clients must dial, so its host port has to be known
  // before it starts: take a free port and bind it explicitly. (Tiny race with other
  // processes grabbing it in between; a failed start says so.)
  const kafkaHostPort = await freePort();

  const specs = {
    postgres: new GenericContainer('postgres:15')
      .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: 'trust' })
      .withCommand(['postgres', '-c', 'wal_level=logical', '-c', 'max_replication_slots=32', '-c', 'max_wal_senders=32'])
      .withExposedPorts(5432)
      // The image's init process starts postgres twice; the second "ready" is the real one.
      .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2)),
    nats: new GenericContainer('nats:2.10')
      .withCommand(['-js'])
      .withExposedPorts(4222)
      .withWaitStrategy(Wait.forLogMessage(/Server is ready/)),
    redis: new GenericContainer('redis:7')
      .withExposedPorts(6379)
      .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/)),
    etcd: new GenericContainer('quay.io/coreos/etcd:v3.5.17')
      .withCommand([
        'etcd',
        '--name=test',
        '--data-dir=/tmp/etcd',
        '--listen-client-urls=http://0.0.0.0:2379',
        '--advertise-client-urls=http://127.0.0.1:2379',
        '--listen-peer-urls=http://0.0.0.0:2380',
      ])
      .withExposedPorts(2379)
      .withWaitStrategy(Wait.forLogMessage(/ready to serve client requests/)),
    kafka: new GenericContainer('apache/kafka:3.9.1')
      .withEnvironment({
        // With any KAFKA_* variable set the image ignores its default server.properties,
        // so the whole single-node KRaft config is spelled out here.
        KAFKA_NODE_ID: '1',
        KAFKA_PROCESS_ROLES: 'broker,controller',
        KAFKA_LISTENERS: 'PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093',
        KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://localhost:${kafkaHostPort}`,
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
        KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
        KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9093',
        KAFKA_INTER_BROKER_LISTENER_NAME: 'PLAINTEXT',
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
        KAFKA_NUM_PARTITIONS: '1',
      })
      .withExposedPorts({ container: 9092, host: kafkaHostPort })
      .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/)),
  };

  const started: StartedTestContainer[] = [];
  const stop = async (): Promise<void> => {
    const results = await Promise.allSettled(started.map((container) => container.stop({ timeout: 10_000 })));
    const failures = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failures.length > 0) throw new AggregateError(failures.map((f) => f.reason), 'stopping test containers failed');
  };

  // allSettled, not all: a failed start must not leave the others starting unobserved.
  const results = await Promise.allSettled(
    [specs.postgres, specs.nats, specs.redis, specs.etcd, specs.kafka].map((spec) =>
      spec.withStartupTimeout(STARTUP_TIMEOUT_MS).start(),
    ),
  );
  for (const result of results) if (result.status === 'fulfilled') started.push(result.value);
  const failures = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failures.length > 0) {
    await stop().catch(() => undefined);
    throw new AggregateError(failures.map((f) => f.reason), 'starting test containers failed');
  }
  const [postgres, nats, redis, etcd, kafka] = started;
  if (!postgres || !nats || !redis || !etcd || !kafka) throw new Error('a container did not start');
  const urls: ServerUrls = {
    postgres: `postgres://postgres@${postgres.getHost()}:${postgres.getMappedPort(5432)}/postgres`,
    nats: `nats://${nats.getHost()}:${nats.getMappedPort(4222)}`,
    redis: `redis://${redis.getHost()}:${redis.getMappedPort(6379)}`,
    etcd: `http://${etcd.getHost()}:${etcd.getMappedPort(2379)}`,
    kafkaBrokers: [`${kafka.getHost()}:${kafkaHostPort}`],
  };
  options.log(`containers up: ${started.map((c) => c.getName()).join(', ')}`);
  return { urls, stop };
}

