/**
 * PITFALLS 25: a row larger than NATS `max_payload` (1 MiB by default) can never be
 * published. Before the fix the publish failed the session for good, the reader resumed
 * from the slot, met the same row again, and the pipeline stalled behind it. Now the
 * change is dead-lettered with its size and the limit, and everything else goes on.
 */
import { Lsn } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { ReaderWorld, inCommitOrder } from './support.ts';

const BIG = 3 * 1024 * 1024;
/** Room the reader leaves in max_payload for the headers the stages add (HEADER_ROOM_BYTES). */
const HEADER_ROOM = 4096;

describe('reader: a change larger than the bus limit (PITFALLS 25)', () => {
  test('a 3 MB row is dead-lettered naming its size and the limit; its transaction, later ones and the slot go on; a replay repeats no letter', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { docs: '(id int PRIMARY KEY, body text)' } });
    const table = world.table('docs');
    // The real server's limit, not a test knob: the 3 MB value is over it.
    const maxPayload = world.bus.nc.info?.max_payload ?? 0;
    expect(maxPayload).toBeGreaterThan(0);
    expect(BIG).toBeGreaterThan(maxPayload);
    const reader = await world.start();

    await world.db.query('BEGIN');
    await world.db.query(`INSERT INTO ${table} VALUES (1, 'small')`);
    await world.db.query(`INSERT INTO ${table} VALUES (2, repeat('x', ${BIG}))`);
    await world.db.query(`INSERT INTO ${table} VALUES (3, 'small')`);
    await world.db.query('COMMIT');
    await world.db.query(`INSERT INTO ${table} VALUES (4, 'after')`);
    await world.db.query(`UPDATE ${table} SET body = 'after' WHERE id = 1`);

    const changes = inCommitOrder(await world.waitForChanges(4));
    expect(changes.map((c) => [c.message.after?.id, c.message.seq])).toEqual([
      ['1', 0],
      ['3', 2],
      ['4', 0],
      ['1', 0],
    ]);
    const bigTxn = changes[0]!.message;
    const last = changes.at(-1)!.message;
    const [hb] = await world.waitForWatermark(BigInt(last.lamport));

    const letters = await world.deadLetters();
    expect(letters).toHaveLength(1);
    const letter = letters[0]!;
    expect(letter).toMatchObject({
      stage: 'reader',
      code: 'EVENT_TOO_LARGE',
      table,
      commitLsn: bigTxn.commitLsn,
      seq: 1,
      limit: maxPayload - HEADER_ROOM,
      maxPayload,
    });
    expect(letter.bytes as number).toBeGreaterThan(BIG);
    expect(letter.reason).toContain(`is ${letter.bytes as number} bytes encoded, over the bus limit of ${maxPayload - HEADER_ROOM} bytes`);
    expect(letter.reason).toContain('raise max_payload');
    expect(changes.map((c) => c.message.eventId)).not.toContain(letter.eventId);
    // The letter names the row and its columns' sizes, not the huge value: it fits itself.
    expect(letter.storedBytes).toBeLessThan(4096);
    const payload = JSON.parse(letter.payload) as Record<string, unknown>;
    expect(payload).toMatchObject({
      table,
      op: 'insert',
      keyColumns: ['id'],
      key: ['2'],
      commitLsn: bigTxn.commitLsn,
      seq: 1,
      eventId: letter.eventId,
      columnBytes: { before: null, after: { id: 1, body: BIG } },
    });
    expect(reader.stats()).toMatchObject({ state: 'running', captured: 4, deadLettered: 1, tooLarge: 1, restarts: 0 });

    // Nothing is confirmed yet: a restarted reader replays all of it from the slot. The
    // letter keeps its id (the event's), so JetStream absorbs the repeat.
    await reader.close();
    const again = await world.start();
    await waitFor(
      async () => {
        const stats = again.stats();
        return stats.tooLarge === 1 && stats.committedLsn !== undefined && Lsn.parse(stats.committedLsn) >= Lsn.parse(last.commitLsn);
      },
      { what: 'the restarted reader re-read the big row and everything after it', timeoutMs: 20_000 },
    );
    expect(again.stats()).toMatchObject({ restarts: 0, deadLettered: 1, tooLarge: 1 });
    await world.waitForWatermark(BigInt(last.lamport));
    expect(await world.deadLetters()).toHaveLength(1);
    expect(await world.changes()).toHaveLength(4); // the replayed events were absorbed too

    // The slot moves past the big row once the sink has committed what follows it.
    await world.commitThrough(hb!.lsn);
    await waitFor(async () => (await world.slotConfirmed()) === Lsn.parse(hb!.lsn), { what: `slot confirmed at ${hb!.lsn}`, timeoutMs: 10_000 });
    expect(Lsn.parse(hb!.lsn)).toBeGreaterThan(Lsn.parse(bigTxn.commitLsn));
    expect(again.stats().restarts).toBe(0);
  });
});
