import { Lsn, type ChangeEvent } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { ReaderWorld, inCommitOrder } from './support.ts';

describe('reader: replays are identical', () => {
  test('a new reader resuming from the confirmed slot position (ack ring) republishes the same events with the same ids and Lamport stamps', async ({ ctx }) => {
    const first = await ReaderWorld.create(ctx, { partitions: 2, tables: { orders: '(id int PRIMARY KEY, v text)' } });
    const table = first.table('orders');
    const a = await first.start();

    // Before the confirmed point.
    await first.db.query(`INSERT INTO ${table} VALUES (1, 'a')`);
    await first.db.query(`INSERT INTO ${table} VALUES (2, 'b')`);
    const early = await first.waitForChanges(2);
    const [hb] = await first.waitForWatermark(BigInt(early[1]!.message.lamport));
    const x = hb!.lsn;
    await first.commitThrough(x);
    await waitFor(async () => (await first.slotConfirmed()) === Lsn.parse(x), { what: `slot confirmed at ${x}`, timeoutMs: 10_000 });

    // After it: these must come again, identical.
    await first.db.query(`UPDATE ${table} SET v = 'a2' WHERE id = 1`);
    await first.db.query('BEGIN');
    await first.db.query(`DELETE FROM ${table} WHERE id = 2`);
    await first.db.query(`INSERT INTO ${table} VALUES (5, 'e'), (6, 'f')`);
    await first.db.query(`UPDATE ${table} SET id = 7 WHERE id = 5`);
    await first.db.query('COMMIT');
    const all = await first.waitForChanges(2 + 1 + 5);
    const replayable = inCommitOrder(all).map((r) => r.message).filter((e) => Lsn.parse(e.commitLsn) > Lsn.parse(x));
    expect(replayable).toHaveLength(6);
    const lastStamp = BigInt(replayable.at(-1)!.lamport);
    await first.waitForWatermark(lastStamp);
    await a.close(); // nothing more is committed: the slot stays at x

    // A second reader on the same slot, publishing into a fresh pipeline so every message is visible
    // (the same pipeline would absorb them as duplicates), with the first pipeline's ack ring.
    const second = await ReaderWorld.create(ctx, { partitions: 2, tables: {}, slotOf: first });
    for (const ack of await first.checkpoints.readSourceAcks(first.pipeline, first.source)) {
      await second.checkpoints.recordSourceAck(second.pipeline, second.source, ack);
    }
    const b = await second.start({ tables: [table] });
    const replayed = inCommitOrder(await second.waitForChanges(6)).map((r) => r.message);
    expect(replayed).toEqual(replayable);

    // Heartbeat transactions replayed from the WAL get the same stamps as the first time.
    await second.waitForWatermark(lastStamp);
    const stampsA = new Map((await first.heartbeats()).map((h) => [h.message.lsn, h.message.lamport]));
    const common = (await second.heartbeats()).filter((h) => stampsA.has(h.message.lsn));
    expect(common.length).toBeGreaterThan(0);
    for (const h of common) expect(h.message.lamport).toBe(stampsA.get(h.message.lsn));
    expect(b.stats().restarts).toBe(0);
    await b.close();

    // The clock really resumes from the ring entry at the slot position: with a (fabricated)
    // stamp far above the commit times, the replay continues from it, previous + 1.
    const third = await ReaderWorld.create(ctx, { partitions: 2, tables: {}, slotOf: first });
    const fabricated = BigInt(hb!.lamport) + 10n ** 12n;
    await third.checkpoints.recordSourceAck(third.pipeline, third.source, { lsn: x, lamport: fabricated.toString() });
    await third.start({ tables: [table] });
    const shifted = inCommitOrder(await third.waitForChanges(6)).map((r) => r.message);
    expect(shifted.map((e) => e.eventId)).toEqual(replayable.map((e) => e.eventId));
    const firstShifted = BigInt(shifted[0]!.lamport);
    expect(firstShifted > fabricated).toBe(true);
    expect(firstShifted - fabricated < 100n).toBe(true);
  });

  test('after a broken replication connection the reader reconnects and replays the same events (same ids and stamps), losing none', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { orders: '(id int PRIMARY KEY, v text)' } });
    const table = world.table('orders');
    const reader = await world.start();
    await world.db.query(`INSERT INTO ${table} SELECT g, 'v' || g FROM generate_series(1, 20) g`);
    await world.db.query(`UPDATE ${table} SET v = 'w' WHERE id <= 5`);
    const before = (await world.waitForChanges(25)).map((r) => r.message);
    await world.waitForWatermark(BigInt(before.at(-1)!.lamport));
    const captured = reader.stats().captured;

    // Kill the walsender: the old one may hold the slot for a moment ("active for PID", PITFALLS 9).
    await world.db.query('SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1', [world.slot]);
    await waitFor(() => (reader.stats().restarts >= 1 && reader.stats().state === 'running' && reader.stats().captured >= captured + 25 ? true : undefined), {
      what: 'the reader to reconnect and replay from the slot',
      timeoutMs: 20_000,
      intervalMs: 100,
    });
    await world.db.query(`INSERT INTO ${table} VALUES (100, 'after')`);
    // The replay is cut into other messages than the first time (batches are not
    // reproducible, PITFALLS 26), so JetStream may store its events again: every copy must
    // be the very same event (id, stamp, values), so the reorderer absorbs it by event id.
    const stored = await waitFor(
      async () => {
        const changes = (await world.changes()).map((r) => r.message);
        return new Set(changes.map((e) => e.eventId)).size >= 26 ? changes : undefined;
      },
      { what: 'the new change after the replay', timeoutMs: 20_000, intervalMs: 100 },
    );
    const firstCopies = new Map<string, ChangeEvent>();
    for (const event of stored) {
      const first = firstCopies.get(event.eventId);
      if (first) expect(event).toEqual(first);
      else firstCopies.set(event.eventId, event);
    }
    const after = inCommitOrder([...firstCopies.values()].map((message) => ({ message }))).map((r) => r.message);
    expect(after.slice(0, 25)).toEqual(inCommitOrder(before.map((message) => ({ message }))).map((r) => r.message));
    expect(after).toHaveLength(26);
    expect(after[25]).toMatchObject({ op: 'insert', key: ['100'] });
    expect(BigInt(after[25]!.lamport) > BigInt(before.at(-1)!.lamport)).toBe(true);
  });
});
