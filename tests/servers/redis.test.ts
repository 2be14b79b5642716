/**
 * What the dedup gate relies on in Redis: `SET key value NX PX ttl` lets exactly one
 * writer claim a key, and the claim disappears by itself after the TTL (PITFALLS 15-17).
 */
import { describe, expect, test, waitFor } from '../harness/index.ts';

describe('Redis', () => {
  test('SET NX PX: the first writer wins, the second gets null, and after expiry a new claim succeeds', async ({ ctx }) => {
    const writer1 = await ctx.redis();
    const writer2 = await ctx.redis();
    const key = `cdc:test:${ctx.uniqueName('dedup')}`;
    ctx.defer(`del ${key}`, () => writer1.del(key));

    expect(await writer1.set(key, 'writer-1', 'PX', 300, 'NX')).toBe('OK');
    expect(await writer2.set(key, 'writer-2', 'PX', 300, 'NX')).toBeNull();
    expect(await writer2.get(key)).toBe('writer-1');
    const ttl = await writer2.pttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(300);

    const claimedAt = Date.now();
    await waitFor(async () => (await writer2.exists(key)) === 0, { what: `${key} to expire`, timeoutMs: 5_000, intervalMs: 25 });
    // Expired by the TTL, not before (allow the 300 ms minus what already passed).
    expect(Date.now() - claimedAt).toBeGreaterThanOrEqual(ttl - 50);

    expect(await writer2.set(key, 'writer-2', 'PX', 300, 'NX')).toBe('OK');
    expect(await writer1.get(key)).toBe('writer-2');
  });
});
