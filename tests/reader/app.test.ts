import { TcpProxy, describe, expect, test, waitFor } from '../harness/index.ts';
import { readyz } from '../harness/health.ts';
import { ReaderWorld } from './support.ts';

/** The reader app's environment for `world` (table `orders`, 2 partitions, any free health port). */
function readerEnv(world: ReaderWorld, postgres: string): Record<string, string> {
  return {
    PIPELINE: world.pipeline,
    SOURCE_ID: world.source,
    SOURCE_DATABASE_URL: postgres,
    TABLES: world.table('orders'),
    PARTITIONS: '2',
    SLOT_NAME: world.slot,
    PUBLICATION_NAME: world.publication,
    HEALTH_PORT: '0',
  };
}

describe('reader app', () => {
  test('starts, reports ready on /readyz, logs progress, publishes, and drains on SIGTERM with exit 0', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { orders: '(id int PRIMARY KEY, v text)' } });
    const app = ctx.spawnApp('apps/reader/src/main.ts', { env: world.appEnv('orders', { HEARTBEAT_INTERVAL_MS: '200' }) });
    const listening = await app.waitForLine(/"msg":"health server listening"/, 30_000);
    const port = (JSON.parse(listening.line) as { port: number }).port;
    const ready = await waitFor(
      async () => {
        const response = await fetch(`http://127.0.0.1:${port}/readyz`);
        return response.status === 200 ? ((await response.json()) as { ready: boolean }) : undefined;
      },
      { what: '/readyz = 200', timeoutMs: 10_000 },
    );
    expect(ready.ready).toBe(true);

    await world.db.query(`INSERT INTO ${world.table('orders')} VALUES (1, 'a')`);
    const [change] = await world.waitForChanges(1);
    await world.waitForWatermark(BigInt(change!.message.lamport));

    const progress = await app.waitForLine(/"msg":"progress"/, 15_000);
    const fields = JSON.parse(progress.line) as Record<string, unknown>;
    expect(fields).toMatchObject({ captured: 1 });
    expect(fields).toHaveProperty('last_lsn');
    expect(fields).toHaveProperty('confirmed_lsn');

    app.kill('SIGTERM');
    const status = await app.waitForExit(20_000);
    expect(status.code).toBe(0);
    expect(app.stdout.some((line) => line.includes('"msg":"reader stopped"'))).toBe(true);
  });

  test('waits (retrying) while another connection holds the slot, and still stops promptly on SIGTERM', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { orders: '(id int PRIMARY KEY)' } });
    const holder = await world.start();
    const app = ctx.spawnApp('apps/reader/src/main.ts', { env: world.appEnv('orders') });
    await app.waitForLine(/replication did not start: replication slot \S+ is in use by another connection \(replication slot \S+ is active for PID \d+\); retrying/, 30_000);
    expect(holder.stats().state).toBe('running');
    const stoppedAt = Date.now();
    app.kill('SIGTERM');
    const status = await app.waitForExit(15_000);
    expect(status.code).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
  });

  test('/readyz goes false while NATS is unreachable (connection cut) and true again once it is back', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { orders: '(id int PRIMARY KEY)' } });
    const proxy = await TcpProxy.start(ctx.servers.nats);
    ctx.defer('close proxy', () => proxy.close());
    const app = ctx.spawnApp('apps/reader/src/main.ts', { env: { ...readerEnv(world, ctx.servers.postgres), NATS_URL: proxy.url('nats') } });
    const listening = await app.waitForLine(/"msg":"health server listening"/, 30_000);
    const port = (JSON.parse(listening.line) as { port: number }).port;
    await waitFor(async () => ((await readyz(port)).status === 200 ? true : undefined), { what: '/readyz = 200 before the cut', timeoutMs: 15_000 });

    await proxy.cut();
    const down = await waitFor(
      async () => {
        const answer = await readyz(port);
        return answer.status === 503 && answer.body.checks['nats']?.ok === false ? answer : undefined;
      },
      { what: '/readyz = 503 with nats not ok while NATS is cut', timeoutMs: 10_000 },
    );
    expect(down.body.ready).toBe(false);
    expect(down.body.checks['nats']).toEqual({ ok: false, detail: 'reconnecting' });

    await proxy.restore();
    const up = await waitFor(async () => {
      const answer = await readyz(port);
      return answer.status === 200 ? answer : undefined;
    }, { what: '/readyz = 200 after NATS is back', timeoutMs: 20_000 });
    expect(up.body.checks['nats']).toEqual({ ok: true });

    app.kill('SIGTERM');
    expect((await app.waitForExit(20_000)).code).toBe(0);
  });
});
