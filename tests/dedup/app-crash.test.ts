/**
 * The real dedup-gate process: SIGKILLed mid-stream and restarted, every event passes
 * exactly once — including any the dead process had claimed in Redis but not forwarded.
 */
import { sleep } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { T0, change, createPipeline } from '../reorderer/support.ts';

describe('dedup-gate app', () => {
  test('killed with SIGKILL mid-stream and restarted, it forwards every event exactly once', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_app');
    const redis = await ctx.redis();
    ctx.defer('delete dedup keys', async () => {
      const keys = await redis.keys(`cdc:dedup:${p.name}:*`);
      if (keys.length > 0) await redis.del(...keys);
    });
    const input = Array.from({ length: 400 }, (_, i) => change('pg_a', T0 + BigInt(i + 1) * 10n, 0x100 + i * 0x10));
    const env = {
      PIPELINE: p.name,
      PARTITIONS: '1',
      ASSIGNED_PARTITIONS: 'all',
      DEDUP_WINDOW_MS: '60000',
      BATCH_MAX: '8',
      BATCH_LINGER_MS: '5',
      HEALTH_PORT: '0',
      LOG_LEVEL: 'info',
    };
    const out = p.collect('deduped', 0);
    const first = ctx.spawnApp('apps/dedup-gate/src/main.ts', { env });
    await first.waitForLine(/"msg":"health server listening"/, 30_000);
    const publishing = (async () => {
      for (const e of input) await p.publish('ordered', 0, e, e.eventId);
    })();
    await waitFor(() => out.eventIds().length >= 100, { what: '100 events through the gate', timeoutMs: 20_000 });
    first.kill('SIGKILL');
    await first.waitForExit(10_000);
    const atKill = out.eventIds().length;
    await publishing;

    const second = ctx.spawnApp('apps/dedup-gate/src/main.ts', { env });
    await waitFor(() => out.eventIds().length >= input.length, { what: 'every event through the gate', timeoutMs: 30_000 });
    await sleep(300);
    expect(atKill).toBeLessThan(input.length);
    expect(out.eventIds()).toEqual(input.map((e) => e.eventId));
    second.kill('SIGTERM');
    expect((await second.waitForExit(15_000)).code).toBe(0);
  });
});
