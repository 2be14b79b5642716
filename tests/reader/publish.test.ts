import { computeEventId, partitionOf, type ChangeEvent } from '@cdc/core';
import { describe, expect, test } from '../harness/index.ts';
import { ReaderWorld, inCommitOrder } from './support.ts';

describe('reader: what it publishes', () => {
  test('inserts, updates, deletes, a key change, TOAST and TRUNCATE become change events with the documented fields, then a watermark in every partition', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 3, tables: { orders: '(id int PRIMARY KEY, status text, doc text)' } });
    const table = world.table('orders');
    // EXTERNAL: store large values out of line uncompressed, so an update that does not touch
    // `doc` sends it as "unchanged TOAST".
    await world.db.query(`ALTER TABLE ${table} ALTER COLUMN doc SET STORAGE EXTERNAL`);
    const reader = await world.start();
    const { db } = world;

    // One transaction, several rows.
    await db.query('BEGIN');
    const xid = Number((await db.query<{ xid: string }>('SELECT txid_current()::text AS xid')).rows[0]?.xid);
    await db.query(`INSERT INTO ${table} VALUES (1, 'new', NULL), (2, 'new', NULL), (3, 'new', 'small')`);
    await db.query(`UPDATE ${table} SET status = 'paid' WHERE id = 1`);
    await db.query('COMMIT');
    await db.query(`UPDATE ${table} SET id = 20 WHERE id = 2`); // key change
    await db.query(`DELETE FROM ${table} WHERE id = 3`);
    const big = Array.from({ length: 200 }, (_, i) => `chunk-${i}-${'x'.repeat(20)}`).join('|');
    await db.query(`INSERT INTO ${table} VALUES (4, 'new', $1)`, [big]);
    await db.query(`UPDATE ${table} SET status = 'shipped' WHERE id = 4`); // doc unchanged (TOAST)
    await db.query(`TRUNCATE ${table}`);

    const records = inCommitOrder(await world.waitForChanges(10));
    const events = records.map((r) => r.message);
    expect(events.map((e) => [e.op, e.key])).toEqual([
      ['insert', ['1']],
      ['insert', ['2']],
      ['insert', ['3']],
      ['update', ['1']],
      ['delete', ['2']],
      ['insert', ['20']],
      ['delete', ['3']],
      ['insert', ['4']],
      ['update', ['4']],
      ['truncate', []],
    ]);

    // Exactly the documented shape.
    const first = events[0]!;
    expect(Object.keys(first).sort()).toEqual(
      ['after', 'before', 'columnTypes', 'commitLsn', 'commitTs', 'database', 'eventId', 'key', 'keyColumns', 'kind', 'lamport', 'lsn', 'op', 'seq', 'source', 'table', 'traceId', 'unchanged', 'xid'].sort(),
    );
    const database = (await db.query<{ name: string }>('SELECT current_database() AS name')).rows[0]?.name;
    expect(first).toMatchObject({
      kind: 'change',
      source: 'pg1',
      database,
      table,
      keyColumns: ['id'],
      before: null,
      after: { id: '1', status: 'new', doc: null },
      unchanged: [],
      columnTypes: { id: 23, status: 25, doc: 25 },
      xid,
    });
    expect(first.commitTs).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

    // The multi-row transaction: one commit LSN, one stamp, one trace id, positions 0..3.
    const txn = events.slice(0, 4);
    expect(new Set(txn.map((e) => e.commitLsn)).size).toBe(1);
    expect(new Set(txn.map((e) => e.lamport)).size).toBe(1);
    expect(new Set(txn.map((e) => e.traceId)).size).toBe(1);
    expect(txn.map((e) => e.seq)).toEqual([0, 1, 2, 3]);
    // Later transactions get larger stamps.
    const stamps = [...new Set(events.map((e) => BigInt(e.lamport)))];
    expect(stamps).toEqual([...stamps].sort((a, b) => (a < b ? -1 : 1)));

    // The key change: delete of the old key and insert of the new, same transaction, each in its own partition.
    const [removed, added] = [events[4]!, events[5]!];
    expect(removed.commitLsn).toBe(added.commitLsn);
    expect([removed.seq, added.seq]).toEqual([0, 1]);
    expect(added.after).toEqual({ id: '20', status: 'new', doc: null });

    // Unchanged TOAST: listed, and absent from `after` (never null).
    const toastUpdate = events[8]!;
    expect(toastUpdate.unchanged).toEqual(['doc']);
    expect(toastUpdate.after).toEqual({ id: '4', status: 'shipped' });
    expect(events[7]!.after?.doc).toBe(big);

    // Ids, subjects and headers.
    for (const record of records) {
      const e = record.message;
      expect(e.eventId).toBe(computeEventId({ source: e.source, table: e.table, key: e.key, lsn: e.lsn, commitLsn: e.commitLsn, seq: e.seq }));
      // An event alone keeps its id and trace header; a batch is named by its first and last positions.
      if (record.batch === 1) {
        expect(record.msgId).toBe(e.eventId);
        expect(record.traceHeader).toBe(e.traceId);
      } else {
        expect(record.msgId).toMatch(new RegExp(`^r:${record.partition}:pg1@[0-9A-F]+/[0-9A-F]+/\\d+\\.\\.pg1@[0-9A-F]+/[0-9A-F]+/\\d+$`));
      }
      expect(record.partition).toBe(e.op === 'truncate' ? 0 : partitionOf(e.table, e.key, 3));
    }
    expect(new Set(events.map((e) => e.eventId)).size).toBe(events.length);

    // A watermark covering the last transaction reaches every partition, after its events.
    const last = BigInt(events.at(-1)!.lamport);
    const watermarks = await world.waitForWatermark(last);
    expect(watermarks).toHaveLength(3);
    const raw = await world.raw();
    for (let partition = 0; partition < 3; partition++) {
      const hbIndex = raw.findIndex((r) => r.partition === partition && r.message.kind === 'heartbeat' && BigInt(r.message.lamport) >= last);
      const lastEventIndex = raw.findLastIndex((r) => r.partition === partition && r.message.kind === 'change');
      expect(hbIndex).toBeGreaterThan(lastEventIndex);
      const hb = raw[hbIndex]!;
      expect(hb.msgId).toBe(`hb:pg1:${(hb.message as { lamport: string }).lamport}:${partition}`);
    }
    expect(reader.stats()).toMatchObject({ state: 'running', captured: 10, deadLettered: 0, restarts: 0 });
  });
});

describe('reader: progress inside a large transaction', () => {
  test('every N events of an open transaction, a progress mark follows them in every partition, naming the last one published', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { items: '(id int PRIMARY KEY, v text)' } });
    const table = world.table('items');
    await world.start({ progressEveryEvents: 4 });
    await world.db.query(`INSERT INTO ${table} SELECT g, 'v' || g FROM generate_series(1, 10) g`); // one transaction, 10 events
    await world.db.query(`INSERT INTO ${table} VALUES (100, 'small')`); // 1 event: no progress

    const events = await world.waitForChanges(11);
    const big = events.slice(0, 10).map((r) => r.message);
    await world.waitForWatermark(BigInt(events.at(-1)!.message.lamport));
    const raw = await world.raw();
    const progress = raw.filter((r) => (r.message.kind as string) === 'progress');
    // After events seq 3 and seq 7 (the 4th and 8th): one mark per partition each, none for the small transaction.
    expect(progress).toHaveLength(4);
    for (const [i, seq] of [3, 3, 7, 7].entries()) {
      expect(progress[i]?.message).toEqual({ kind: 'progress', source: 'pg1', lamport: big[0]!.lamport, commitLsn: big[0]!.commitLsn, seq });
    }
    for (let partition = 0; partition < 2; partition++) {
      for (const seq of [3, 7]) {
        const markIndex = raw.findIndex((r) => r.partition === partition && (r.message.kind as string) === 'progress' && (r.message as unknown as { seq: number }).seq === seq);
        expect(progress.find((r) => r.partition === partition && (r.message as unknown as { seq: number }).seq === seq)?.msgId).toBe(`pg:pg1:${big[0]!.commitLsn}:${seq}:${partition}`);
        // Every event it covers (this transaction up to seq, in any partition) was stored before it.
        for (const covered of big.filter((e) => e.seq <= seq)) {
          expect(raw.findIndex((r) => r.message.kind === 'change' && (r.message as ChangeEvent).eventId === covered.eventId)).toBeLessThan(markIndex);
        }
      }
    }
  });
});
