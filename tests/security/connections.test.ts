/**
 * Every connection with authentication and TLS on, against servers of this file's own
 * (secure-servers.ts): the project's bus round-trips through a nats-server with users and
 * TLS (client certificates verified), the dedup claims work on a TLS-only Redis with an ACL
 * user, the checkpoint store works on an etcd with TLS, client certificates and auth. Wrong
 * credentials give one AuthenticationError that names the server and never the secret.
 */
import { Bus } from '@cdc/bus';
import { CheckpointStore } from '@cdc/checkpoint';
import { AuthenticationError, STAGES, stageSubject, streamName } from '@cdc/core';
import { RedisDedupStore } from '@cdc/dedup';
import { createLogger } from '@cdc/runtime';
import { nkeys } from '@nats-io/transport-node';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { createTestContext, describe, expect, test, waitFor, type TestContext } from '../harness/index.ts';
import { spawnBuiltApp } from '../harness/process.ts';
import {
  makeCertificates,
  secureServersAvailable,
  startSecureEtcd,
  startSecureNats,
  startSecureRedis,
  tempDir,
  type Certificates,
  type SecureEtcd,
  type SecureNats,
  type SecureRedis,
} from './secure-servers.ts';

const PASSWORD = 'Nats-Secret-4417';
const REDIS_PASSWORD = 'Redis-Secret-8812';
const ETCD_PASSWORD = 'Etcd-Secret-2290';
const WRONG = 'Wrong-Secret-0001';

function capturedLogger(): { lines: string[]; logger: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, logger: createLogger({ app: 'test', level: 'debug', destination: { write: (line: string) => void lines.push(line) } }) };
}

describe.skipIf(!secureServersAvailable())('authenticated, encrypted connections', () => {
  let suite: TestContext;
  let certs: Certificates;
  let nats: SecureNats;
  let redis: SecureRedis;
  let etcd: SecureEtcd;
  const nkeyUser = nkeys.createUser();
  let seedFile: string;

  beforeAll(async () => {
    suite = createTestContext();
    certs = makeCertificates(tempDir(suite, 'certs'));
    seedFile = join(certs.dir, 'app.nk');
    writeFileSync(seedFile, `${new TextDecoder().decode(nkeyUser.getSeed())}\n`, { mode: 0o600 });
    [nats, redis, etcd] = await Promise.all([
      startSecureNats(suite, { certs, verifyClients: true, users: [{ user: 'app', password: PASSWORD }], nkeys: [nkeyUser.getPublicKey()] }),
      startSecureRedis(suite, { certs, requirepass: REDIS_PASSWORD, aclUser: { user: 'gate', password: REDIS_PASSWORD } }),
      startSecureEtcd(suite, { certs, rootPassword: `root-${ETCD_PASSWORD}`, cdcUser: { user: 'cdc', password: ETCD_PASSWORD } }),
    ]);
  }, 90_000);

  afterAll(async () => {
    await suite?.[Symbol.asyncDispose]();
  }, 60_000);

  const natsTls = () => ({ caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey });

  async function roundTrip(ctx: TestContext, bus: Bus): Promise<void> {
    const name = ctx.uniqueName('sec');
    await bus.ensurePipelineStreams(name);
    ctx.defer('delete streams', async () => {
      for (const stage of [...STAGES, 'dlq'] as const) await bus.jsm.streams.delete(streamName(name, stage)).catch(() => undefined);
    });
    const publisher = bus.publisher({ maxInFlight: 8 });
    const subject = stageSubject(name, 'raw', 0);
    const acks = await Promise.all([1, 2, 3].map((i) => publisher.publish(subject, { i }, { msgId: `m${i}` })));
    expect(acks.map((ack) => ack.seq)).toEqual([1, 2, 3]);
    const reader = await bus.openReader({ stream: streamName(name, 'raw'), subject, startSeq: 1 });
    const batch = await reader.nextBatch(10, 5_000);
    await bus.closeReader(reader);
    expect(batch.map((message) => message.json<{ i: number }>().i)).toEqual([1, 2, 3]);
  }

  test('NATS: user and password from the URL, TLS with a CA and a client certificate: publish and consume round-trip', async ({ ctx }) => {
    const { logger, lines } = capturedLogger();
    const bus = await Bus.create({ url: `tls://app:${PASSWORD}@127.0.0.1:${nats.port}`, name: 'sec-url', logger, security: { tls: natsTls() } });
    ctx.defer('close bus', () => bus.close());
    await roundTrip(ctx, bus);
    expect(lines.join('')).not.toContain(PASSWORD);
  });

  test('NATS: user and password from the settings (NATS_USER/NATS_PASSWORD) on a nats:// URL with NATS_TLS_* files', async ({ ctx }) => {
    const bus = await Bus.create({ url: `nats://127.0.0.1:${nats.port}`, name: 'sec-settings', logger: capturedLogger().logger, security: { user: 'app', password: PASSWORD, tls: natsTls() } });
    ctx.defer('close bus', () => bus.close());
    await roundTrip(ctx, bus);
  });

  test('NATS: an nkey seed file (NATS_NKEY_SEED_FILE) authenticates; the seed is never logged', async ({ ctx }) => {
    const { logger, lines } = capturedLogger();
    const bus = await Bus.create({ url: `tls://127.0.0.1:${nats.port}`, name: 'sec-nkey', logger, security: { nkeySeedFile: seedFile, tls: natsTls() } });
    ctx.defer('close bus', () => bus.close());
    await roundTrip(ctx, bus);
    logger.error({ err: new Error(`echo ${new TextDecoder().decode(nkeyUser.getSeed())}`) }, 'a library printing the seed');
    expect(lines.join('')).not.toContain(new TextDecoder().decode(nkeyUser.getSeed()));
  });

  test('NATS: a wrong password is one AuthenticationError naming the server, without the password', async () => {
    const error = await Bus.create({ url: `tls://app:${WRONG}@127.0.0.1:${nats.port}`, name: 'sec-wrong', logger: capturedLogger().logger, security: { tls: natsTls() } }).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(AuthenticationError);
    const shown = [String((error as Error).message), (error as Error).stack, JSON.stringify((error as AuthenticationError).context)].join('\n');
    expect((error as Error).message).toMatch(new RegExp(`^NATS at tls://app:\\*\\*\\*@127\\.0\\.0\\.1:${nats.port} refused the connection: authorization violation`));
    expect(shown).not.toContain(WRONG);
    expect((error as AuthenticationError).retriable).toBe(false);
  });

  test('NATS: a server certificate from another CA is refused as a TLS failure', async () => {
    const error = await Bus.create({
      url: `tls://127.0.0.1:${nats.port}`,
      name: 'sec-ca',
      logger: capturedLogger().logger,
      security: { user: 'app', password: PASSWORD, tls: { caFile: certs.otherCa, certFile: certs.clientCert, keyFile: certs.clientKey } },
    }).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toMatch(/TLS failed/);
    expect((error as Error).message).not.toContain(PASSWORD);
  });

  test('Redis: the gate claims through rediss:// with an ACL user and a CA file; the default user by requirepass too', async ({ ctx }) => {
    const pipeline = ctx.uniqueName('sec');
    const claim = (eventId: string, inputSeq: number) => ({ eventId, inputSeq, commitTs: '2026-12-04T21:00:00.000Z', seq: 0 });
    for (const [url, security] of [
      [`rediss://gate:${REDIS_PASSWORD}@127.0.0.1:${redis.port}`, { tls: { caFile: certs.ca } }],
      [`rediss://127.0.0.1:${redis.port}`, { password: REDIS_PASSWORD, tls: { caFile: certs.ca } }],
    ] as const) {
      const { logger, lines } = capturedLogger();
      const store = RedisDedupStore.create({ url, security, pipeline, windowMs: 60_000, logger });
      ctx.defer('close store', () => store.close());
      await waitFor(() => store.isReady(), { timeoutMs: 10_000, what: 'redis ready' });
      const first = await store.check([claim('a'.repeat(32), 1), claim('b'.repeat(32), 1)]);
      const again = await store.check([claim('a'.repeat(32), 2), claim('b'.repeat(32), 1)]);
      // The second store shares the first's keys: its first claims read back as redeliveries.
      expect(first).toEqual(url.includes('gate') ? ['new', 'new'] : ['redelivery', 'redelivery']);
      expect(again).toEqual(['duplicate', 'redelivery']);
      await store.close();
      expect(lines.join('')).not.toContain(REDIS_PASSWORD);
    }
  });

  test('Redis: a wrong password is logged as one AuthenticationError without the password; nothing is claimed', async ({ ctx }) => {
    const { logger, lines } = capturedLogger();
    const store = RedisDedupStore.create({ url: `rediss://gate:${WRONG}@127.0.0.1:${redis.port}`, security: { tls: { caFile: certs.ca } }, pipeline: ctx.uniqueName('sec'), windowMs: 60_000, logger });
    ctx.defer('close store', () => store.close());
    await waitFor(() => lines.some((line) => line.includes('AUTHENTICATION_FAILED')), { timeoutMs: 10_000, what: 'an authentication error line' });
    expect(store.isReady()).toBe(false);
    await expect(store.check([{ eventId: 'c'.repeat(32), inputSeq: 1, commitTs: '2026-12-04T21:00:00.000Z', seq: 0 }])).rejects.toThrow(/not reachable/);
    const text = lines.join('');
    expect(text).toMatch(/Redis at rediss:\/\/gate:\*\*\*@127\.0\.0\.1:\d+ refused the connection/);
    expect(text).not.toContain(WRONG);
  });

  test('etcd: checkpoints and source acks through https with a client certificate and a user of its own', async ({ ctx }) => {
    const pipeline = ctx.uniqueName('sec');
    const { logger, lines } = capturedLogger();
    const store = await CheckpointStore.create({
      url: `https://cdc:${ETCD_PASSWORD}@127.0.0.1:${etcd.port}`,
      logger,
      security: { tls: { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey } },
    });
    ctx.defer('close etcd', () => store.close());
    const checkpoint = { partition: 0, positions: { s1: '0/16B3748' }, lamport: '42', epoch: 3, updatedAt: new Date().toISOString() };
    await store.publishPartitions(pipeline, [checkpoint], 'postgres');
    expect((await store.readPartitions(pipeline, 'postgres')).get(0)).toEqual(checkpoint);
    await store.recordSourceAck(pipeline, 's1', { lsn: '0/16B3748', lamport: '42' });
    expect(await store.readSourceAcks(pipeline, 's1')).toEqual([{ lsn: '0/16B3748', lamport: '42' }]);
    await store.deletePipeline(pipeline);
    expect(lines.join('')).not.toContain(ETCD_PASSWORD);
  });

  test('etcd: user and password from ETCD_USER/ETCD_PASSWORD; a wrong one is one AuthenticationError without the password', async ({ ctx }) => {
    const tls = { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey };
    const store = await CheckpointStore.create({ url: `https://127.0.0.1:${etcd.port}`, logger: capturedLogger().logger, security: { user: 'cdc', password: ETCD_PASSWORD, tls } });
    ctx.defer('close etcd', () => store.close());
    expect(await store.readSourceAcks(ctx.uniqueName('sec'), 's1')).toEqual([]);

    const error = await CheckpointStore.create({ url: `https://cdc:${WRONG}@127.0.0.1:${etcd.port}`, logger: capturedLogger().logger, security: { tls } }).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toMatch(/^etcd at https:\/\/cdc:\*\*\*@127\.0\.0\.1:\d+ refused the connection: authentication failed/);
    expect([(error as Error).message, (error as Error).stack, JSON.stringify((error as AuthenticationError).context)].join('\n')).not.toContain(WRONG);
  });

  const built = (app: string) => (ctx: TestContext, env: Record<string, string>) => {
    const child = spawnBuiltApp(`apps/${app}/src/main.ts`, { env: { PIPELINE: ctx.uniqueName('sec'), PARTITIONS: '1', HEALTH_PORT: '0', LOG_LEVEL: 'debug', ...env } });
    ctx.defer(`stop ${app}`, () => child.stop(10_000));
    return child;
  };
  const natsEnv = () => ({ NATS_URL: `tls://127.0.0.1:${nats.port}`, NATS_TLS_CA_FILE: certs.ca, NATS_TLS_CERT_FILE: certs.clientCert, NATS_TLS_KEY_FILE: certs.clientKey });

  test('the dedup-gate app runs on the settings alone: NATS_USER/NATS_PASSWORD/NATS_TLS_*, REDIS_USER/REDIS_PASSWORD/REDIS_TLS_CA_FILE; SIGTERM exits 0', async ({ ctx }) => {
    const gate = built('dedup-gate')(ctx, {
      ...natsEnv(),
      NATS_USER: 'app',
      NATS_PASSWORD: PASSWORD,
      REDIS_URL: `rediss://127.0.0.1:${redis.port}`,
      REDIS_USER: 'gate',
      REDIS_PASSWORD,
      REDIS_TLS_CA_FILE: certs.ca,
    });
    await gate.waitForLine(/"msg":"redis ready"/, 30_000);
    await gate.waitForLine(/"msg":"dedup-gate running"/, 30_000);
    gate.kill('SIGTERM');
    expect((await gate.waitForExit(30_000)).code).toBe(0);
    const output = [...gate.stdout, ...gate.stderr].join('\n');
    expect(output).not.toContain(PASSWORD);
    expect(output).not.toContain(REDIS_PASSWORD);
  });

  test('apps with a wrong NATS or etcd password stop with one line naming the server and what failed, exit 1, no secret', async ({ ctx }) => {
    const reorderer = built('lamport-reorderer')(ctx, { ...natsEnv(), NATS_USER: 'app', NATS_PASSWORD: WRONG, SOURCES: 's1' });
    expect((await reorderer.waitForExit(30_000)).code).toBe(1);
    expect(reorderer.stderr.join('\n')).toMatch(new RegExp(`^lamport-reorderer: AUTHENTICATION_FAILED: NATS at tls://127\\.0\\.0\\.1:${nats.port} refused the connection: authorization violation`, 'm'));

    const committer = built('committer')(ctx, {
      ...natsEnv(),
      NATS_URL: `tls://app:${PASSWORD}@127.0.0.1:${nats.port}`,
      ETCD_URL: `https://cdc:${WRONG}@127.0.0.1:${etcd.port}`,
      ETCD_TLS_CA_FILE: certs.ca,
      ETCD_TLS_CERT_FILE: certs.clientCert,
      ETCD_TLS_KEY_FILE: certs.clientKey,
      SINK: 'postgres',
      SINK_DATABASE_URL: 'postgres://sink@127.0.0.1:1/sink',
    });
    expect((await committer.waitForExit(30_000)).code).toBe(1);
    expect(committer.stderr.join('\n')).toMatch(/^committer: AUTHENTICATION_FAILED: etcd at https:\/\/cdc:\*\*\*@127\.0\.0\.1:\d+ refused the connection: authentication failed/m);
    for (const app of [reorderer, committer]) {
      const output = [...app.stdout, ...app.stderr].join('\n');
      expect(output).not.toContain(WRONG);
      expect(output).not.toContain(PASSWORD);
    }
  });
});
