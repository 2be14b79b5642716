import { Lsn, sleep } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { ReaderWorld } from './support.ts';

describe('reader: slot feedback', () => {
  test('confirms to PostgreSQL only what etcd checkpoints cover in every partition, and never beyond', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { orders: '(id int PRIMARY KEY, v text)' } });
    const reader = await world.start();
    const initial = await world.slotConfirmed();
    expect(initial).toBeDefined();
    const table = world.table('orders');

    await world.db.query(`INSERT INTO ${table} VALUES (1, 'a')`);
    await world.db.query(`INSERT INTO ${table} VALUES (2, 'b')`);
    const changes = await world.waitForChanges(2);
    const [hb] = await world.waitForWatermark(BigInt(changes[1]!.message.lamport));
    const x = hb!.lsn;
    expect(Lsn.parse(x) > initial!).toBe(true);

    // No checkpoints at all: heartbeats keep flowing, the slot stays put.
    await sleep(1_500);
    expect(await world.slotConfirmed()).toBe(initial);

    // One partition committed: still nothing (the other partition may hold events of these transactions).
    await world.commitThrough(x, [0]);
    await sleep(1_000);
    expect(await world.slotConfirmed()).toBe(initial);

    // Every partition committed through x: the slot reaches x exactly...
    await world.commitThrough(x);
    await waitFor(async () => (await world.slotConfirmed()) === Lsn.parse(x), { what: `confirmed_flush_lsn = ${x}`, timeoutMs: 10_000 });
    expect(reader.stats().confirmedLsn).toBe(x);
    // ... with the stamp stored in the ack ring first ...
    const ring = await world.checkpoints.readSourceAcks(world.pipeline, world.source);
    expect(ring.at(-1)).toEqual({ lsn: x, lamport: hb!.lamport });

    // ... and not beyond, while more transactions and heartbeats arrive.
    await world.db.query(`INSERT INTO ${table} VALUES (3, 'c')`);
    await world.waitForChanges(3);
    await sleep(1_500);
    expect(await world.slotConfirmed()).toBe(Lsn.parse(x));
    const heartbeats = await world.heartbeats();
    expect(heartbeats.some((h) => Lsn.parse(h.message.lsn) > Lsn.parse(x))).toBe(true);
  });

  test('idle watched tables do not pin WAL while another table writes a lot: heartbeats let the slot advance', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { watched: '(id int PRIMARY KEY)' } });
    const other = ctx.uniqueName('busy');
    await world.db.query(`CREATE TABLE public.${other} (id bigserial PRIMARY KEY, pad text)`);
    ctx.defer(`drop ${other}`, () => world.db.query(`DROP TABLE IF EXISTS public.${other}`));
    const reader = await world.start({ heartbeatIntervalMs: 200 });

    // A stand-in for the committer: every partition is "committed" through its newest heartbeat.
    let stop = false;
    const committer = (async () => {
      while (!stop) {
        const heartbeats = await world.heartbeats();
        const newest = new Map<number, string>();
        for (const h of heartbeats) newest.set(h.partition, h.message.lsn);
        if (newest.size === 2) {
          for (const [partition, lsn] of newest) await world.commitThrough(lsn, [partition]);
        }
        await sleep(150);
      }
    })();
    ctx.defer('stop committer', async () => {
      stop = true;
      await committer;
    });

    const before = await world.slotConfirmed();
    for (let round = 0; round < 4; round++) {
      await world.db.query(`INSERT INTO public.${other} (pad) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 4000) g`);
    }
    const end = Lsn.parse((await world.db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn);
    expect(end - before! > 1_000_000n).toBe(true); // > 1 MB of WAL the slot does not care about

    await waitFor(async () => ((await world.slotConfirmed())! >= end ? true : undefined), {
      what: `confirmed_flush_lsn past ${Lsn.format(end)} (the WAL written to the unwatched table)`,
      timeoutMs: 15_000,
      intervalMs: 100,
    });
    const stats = reader.stats();
    expect(stats.captured).toBe(0);
    expect(stats.heartbeatTransactions).toBeGreaterThan(0);
  });
});
