/**
 * What checkpoints and ownership rely on in etcd: a key put with a lease disappears when
 * the lease expires without keep-alives (the owner died or stalled; PITFALLS 21-22).
 */
import { describe, expect, test, waitFor } from '../harness/index.ts';

describe('etcd', () => {
  test('a key attached to a 2 s lease that is not kept alive disappears after the TTL', async ({ ctx }) => {
    const etcd = ctx.etcd();
    const key = `/cdc-test/${ctx.uniqueName('owner')}`;
    const lease = etcd.lease(2, { autoKeepAlive: false });
    ctx.defer('release lease', () => lease.release());
    ctx.defer(`delete ${key}`, () => etcd.delete().key(key));

    await lease.put(key).value('owner-1');
    const leaseId = await lease.grant();
    const granted = Date.now();
    const stored = await etcd.get(key).exec();
    expect(stored.kvs[0]?.value.toString()).toBe('owner-1');
    // The key is bound to the lease (etcd reports the lease id as a decimal string).
    expect(stored.kvs[0]?.lease).toBe(leaseId);

    // Still there well inside the TTL...
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await etcd.get(key).string()).toBe('owner-1');

    // ...and gone once the lease expires (etcd checks expiry about every 500 ms).
    await waitFor(async () => (await etcd.get(key).string()) === null, {
      what: `${key} to vanish with its lease`,
      timeoutMs: 8_000,
      intervalMs: 100,
    });
    expect(Date.now() - granted).toBeGreaterThanOrEqual(1_500);
    expect(lease.revoked()).toBe(false); // without keep-alives the client never learns it (PITFALLS 22)
  });
});
