/**
 * The gate killed between its Redis claim and its publish, with many events per message:
 * the restarted gate finds its own claims (same input sequence) and forwards them again —
 * nothing lost — while the last-key filter and the claims keep everything else once.
 */
import { batchMsgId, encodeItem, joinItems, orderKeyOf, type ChangeEvent } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { T0, change, createPipeline } from '../reorderer/support.ts';

describe('dedup-gate: killed between claim and publish', () => {
  test('batches claimed in Redis but never published pass once after the restart; nothing is lost, nothing twice', { timeout: 120_000 }, async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_kill');
    const redis = await ctx.redis();
    ctx.defer('delete dedup keys', async () => {
      const keys = await redis.keys(`cdc:dedup:${p.name}:*`);
      if (keys.length > 0) await redis.del(...keys);
    });
    // 40 messages of 10 events on ordered.0, as the reorderer writes them.
    const events: ChangeEvent[] = Array.from({ length: 400 }, (_, i) => change('pg_a', T0 + BigInt(i + 1) * 10n, 0x100 + i * 0x10));
    for (let m = 0; m < 40; m++) {
      const part = events.slice(m * 10, m * 10 + 10);
      const bounds = { count: part.length, firstKey: orderKeyOf(part[0]!), lastKey: orderKeyOf(part.at(-1)!) };
      await p.publish('ordered', 0, new TextDecoder().decode(joinItems(part.map(encodeItem))), batchMsgId('o:0', bounds));
    }
    const out = p.collect('deduped', 0);
    const env = { PIPELINE: p.name, CDC_TEST_KILL_AFTER_CLAIMS: '4', LOG_LEVEL: 'info' };
    const first = ctx.spawnApp('tests/dedup/gate-with-failpoint.ts', { env });
    await first.waitForLine(/failpoint: claimed, killed before publishing/, 30_000);
    await first.waitForExit(10_000);
    const forwardedBeforeKill = out.eventIds().length;
    // The killed batch's claims are in Redis and its events are not on deduped.0.
    expect(forwardedBeforeKill).toBeLessThan(events.length);

    const second = ctx.spawnApp('apps/dedup-gate/src/main.ts', {
      env: { PIPELINE: p.name, PARTITIONS: '1', ASSIGNED_PARTITIONS: 'all', BATCH_MAX: '3', BATCH_LINGER_MS: '5', HEALTH_PORT: '0', LOG_LEVEL: 'info' },
    });
    await waitFor(() => out.eventIds().length >= events.length, { what: 'every event through the gate', timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(out.eventIds()).toEqual(events.map((e) => e.eventId));
    second.kill('SIGTERM');
    const stats = await second.waitForLine(/"msg":"dedup stats"/, 15_000);
    // The restart met its predecessor's claims: they were redeliveries, none was taken for a duplicate.
    expect(JSON.parse(stats.line)).toMatchObject({ duplicates: 0, redeliveries: expect.any(Number) });
    expect((JSON.parse(stats.line) as { redeliveries: number }).redeliveries).toBeGreaterThan(0);
    expect((await second.waitForExit(15_000)).code).toBe(0);
  });
});
