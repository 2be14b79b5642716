/**
 * The bus trusts no stranger: a nats-server with one user per app and the per-stage
 * permissions of infra/nats/stage-permissions.conf (TLS on). The reader's user publishes
 * on raw and the reorderer's reads it and publishes on ordered; a forged truncate on a
 * stage subject sent with another app's credentials is refused by the server and never
 * stored; a user the server does not know cannot connect at all.
 */
import { Bus, PipelineAgreement } from '@cdc/bus';
import { AuthenticationError, STAGES, stageSubject, streamName } from '@cdc/core';
import { createLogger } from '@cdc/runtime';
import { afterAll, beforeAll } from 'vitest';
import { REPO_ROOT, createTestContext, describe, expect, test, type TestContext } from '../harness/index.ts';
import { join } from 'node:path';
import { makeCertificates, secureServersAvailable, startSecureNats, tempDir, type Certificates, type SecureNats } from './secure-servers.ts';

const USERS = [
  { user: 'reader', password: 'Reader-Pw-1133', permissions: '$READER_PERMISSIONS' },
  { user: 'lamport-reorderer', password: 'Reorderer-Pw-2244', permissions: '$REORDERER_PERMISSIONS' },
  { user: 'dedup-gate', password: 'Gate-Pw-3355', permissions: '$DEDUP_GATE_PERMISSIONS' },
  { user: 'committer', password: 'Committer-Pw-4466', permissions: '$COMMITTER_PERMISSIONS' },
  // nats-server refuses a configuration that defines a variable nobody uses.
  { user: 'cdc-cli', password: 'Cli-Pw-5577', permissions: '$CLI_PERMISSIONS' },
] as const;

type AppUser = (typeof USERS)[number]['user'];

describe.skipIf(!secureServersAvailable())('NATS per-stage permissions', () => {
  let suite: TestContext;
  let certs: Certificates;
  let nats: SecureNats;

  beforeAll(async () => {
    suite = createTestContext();
    certs = makeCertificates(tempDir(suite, 'certs'));
    nats = await startSecureNats(suite, { certs, users: USERS, include: join(REPO_ROOT, 'infra/nats/stage-permissions.conf') });
  }, 60_000);

  afterAll(async () => {
    await suite?.[Symbol.asyncDispose]();
  }, 60_000);

  async function busAs(ctx: TestContext, user: AppUser): Promise<Bus> {
    const password = USERS.find((u) => u.user === user)!.password;
    const bus = await Bus.create({ url: nats.url, name: `perm-${user}`, logger: createLogger({ app: user, level: 'silent' }), security: { user, password, tls: { caFile: certs.ca } } });
    ctx.defer(`close ${user}`, () => bus.close());
    return bus;
  }

  async function pipeline(ctx: TestContext, bus: Bus): Promise<string> {
    const name = ctx.uniqueName('perm');
    await bus.ensurePipelineStreams(name);
    ctx.defer('delete streams', async () => {
      for (const stage of [...STAGES, 'dlq'] as const) await bus.jsm.streams.delete(streamName(name, stage)).catch(() => undefined);
    });
    return name;
  }

  test('every app user may write its view to the agreement bucket (cdc_apps) and compare it with the others', async ({ ctx }) => {
    const name = ctx.uniqueName('perm_agree');
    const views = {
      reader: { app: 'reader', instance: 'reader.src1', partitions: 2, source: 'src1', sinks: ['postgres'] },
      'lamport-reorderer': { app: 'lamport-reorderer', instance: 'lamport-reorderer.all', partitions: 2, sources: ['src1'] },
      'dedup-gate': { app: 'dedup-gate', instance: 'dedup-gate.all', partitions: 2 },
      committer: { app: 'committer', instance: 'committer.postgres', partitions: 2, sink: 'postgres' },
    } as const;
    const joined: PipelineAgreement[] = [];
    for (const [user, view] of Object.entries(views) as [keyof typeof views, (typeof views)[keyof typeof views]][]) {
      const bus = await busAs(ctx, user);
      joined.push(await PipelineAgreement.join(bus, { pipeline: name, view, logger: createLogger({ app: user, level: 'silent' }) }));
    }
    for (const agreement of joined.reverse()) await agreement.close();
  });

  const forgedTruncate = { kind: 'change', op: 'truncate', table: 'public.accounts', source: 'src1', lamport: '999999999999' };

  test("each app publishes on its own stage's subjects; a forged truncate with another app's credentials is refused and never stored", async ({ ctx }) => {
    const reader = await busAs(ctx, 'reader');
    const name = await pipeline(ctx, reader);
    const ack = await reader.publisher({ maxInFlight: 4 }).publish(stageSubject(name, 'raw', 0), { kind: 'watermark', lamport: '1' }, { msgId: 'w1' });
    expect(ack.seq).toBe(1);

    const reorderer = await busAs(ctx, 'lamport-reorderer');
    const input = await reorderer.openReader({ stream: streamName(name, 'raw'), subject: stageSubject(name, 'raw', 0), startSeq: 1 });
    expect((await input.nextBatch(10, 5_000)).length).toBe(1);
    await reorderer.closeReader(input);
    expect((await reorderer.publisher({ maxInFlight: 4, timeoutMs: 5_000 }).publish(stageSubject(name, 'ordered', 0), { kind: 'watermark', lamport: '1' }, { msgId: 'o1' })).seq).toBe(1);

    // Forged: a truncate on raw with the reorderer's credentials, on deduped with the committer's.
    const forgeries: [AppUser, string][] = [
      ['lamport-reorderer', stageSubject(name, 'raw', 0)],
      ['committer', stageSubject(name, 'deduped', 0)],
      ['dedup-gate', stageSubject(name, 'raw', 1)],
      ['reader', stageSubject(name, 'ordered', 0)],
    ];
    for (const [user, subject] of forgeries) {
      const bus = user === 'lamport-reorderer' ? reorderer : user === 'reader' ? reader : await busAs(ctx, user);
      const refused = await bus.js.publish(subject, JSON.stringify(forgedTruncate), { timeout: 5_000 }).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refused, `${user} on ${subject}`).toBeInstanceOf(Error);
      expect(String((refused as Error).message), `${user} on ${subject}`).toMatch(/permission/i);
    }
    const stored = async (stage: 'raw' | 'ordered' | 'deduped') => (await reader.jsm.streams.info(streamName(name, stage))).state.messages;
    expect(await stored('raw')).toBe(1);
    expect(await stored('ordered')).toBe(1);
    expect(await stored('deduped')).toBe(0);
  });

  test('a user the server does not know cannot connect', async () => {
    const error = await Bus.create({ url: nats.url, name: 'stranger', logger: createLogger({ app: 'stranger', level: 'silent' }), security: { user: 'stranger', password: 'Stranger-Pw-9', tls: { caFile: certs.ca } } }).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(AuthenticationError);
  });
});
