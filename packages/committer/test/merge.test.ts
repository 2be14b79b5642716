import { Lsn, compareOrderKeys, formatOrderKey, orderKeyOf, type ChangeEvent, type OrderKey, type OrderedMessage } from '@cdc/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PartitionMerger, sameTransaction, type LaneStart } from '../src/merge.ts';
import { changeEvent, prng, watermark as heartbeat } from '@cdc/testkit';

const fresh = (partitions: number): LaneStart[] => Array.from({ length: partitions }, (_, partition) => ({ partition, resumeSeq: 1 }));

describe('PartitionMerger', () => {
  it('releases nothing until every partition has shown a watermark', () => {
    const merger = new PartitionMerger(fresh(2));
    merger.push(0, 1, changeEvent({ lamport: 10, commitLsn: '0/100', seq: 0 }));
    merger.push(0, 2, heartbeat(10));
    const batch = merger.take(100);
    // The heartbeat of partition 0 is behind an unreleased event: nothing moves.
    expect(batch).toBeUndefined();
    merger.push(1, 3, heartbeat(10));
    expect(merger.take(100)?.events.map((e) => e.seq)).toEqual([1]);
  });

  it('releases only events with lamport <= the minimum watermark, in order-key order across partitions', () => {
    const merger = new PartitionMerger(fresh(2));
    merger.push(0, 1, changeEvent({ lamport: 10, commitLsn: '0/100', seq: 1 }));
    merger.push(1, 2, changeEvent({ lamport: 10, commitLsn: '0/100', seq: 0 }));
    merger.push(1, 3, changeEvent({ lamport: 20, commitLsn: '0/200', seq: 0 }));
    merger.push(0, 4, changeEvent({ lamport: 30, commitLsn: '0/300', seq: 0 }));
    merger.push(0, 5, heartbeat(30));
    merger.push(1, 6, heartbeat(20));
    const batch = merger.take(100);
    expect(batch?.events.map((e) => [e.partition, e.seq])).toEqual([
      [1, 2],
      [0, 1],
      [1, 3],
    ]);
    expect(batch?.transactions).toBe(2);
  });

  it('never splits a source transaction spanning partitions, whatever the batch size', () => {
    const merger = new PartitionMerger(fresh(4));
    let seq = 1;
    for (const [lamport, lsn] of [
      [10, '0/100'],
      [11, '0/200'],
    ] as const) {
      for (let i = 0; i < 8; i++) merger.push(i % 4, seq++, changeEvent({ lamport, commitLsn: lsn, seq: i }));
    }
    for (let p = 0; p < 4; p++) merger.push(p, seq++, heartbeat(11));
    const first = merger.take(3);
    expect(first?.events).toHaveLength(8);
    expect(first?.events.every((e) => e.event.commitLsn === '0/100')).toBe(true);
    const second = merger.take(3);
    expect(second?.events).toHaveLength(8);
    expect(merger.take(3)).toBeUndefined();
  });

  it('checkpoints the first unreleased sequence, the last released key and the last watermark with nothing pending before it', () => {
    const merger = new PartitionMerger(fresh(2));
    const e1 = changeEvent({ lamport: 10, commitLsn: '0/100', seq: 0 });
    const e2 = changeEvent({ lamport: 20, commitLsn: '0/200', seq: 0 });
    merger.push(0, 1, e1);
    merger.push(0, 2, heartbeat(10, { src: '0/108' }));
    merger.push(0, 3, e2);
    merger.push(0, 4, heartbeat(20, { src: '0/208' }));
    merger.push(1, 5, heartbeat(10, { src: '0/108' }));
    const batch = merger.take(100);
    expect(batch?.events.map((e) => e.seq)).toEqual([1]);
    const p0 = batch?.checkpoints.find((c) => c.partition === 0);
    expect(p0?.resumeSeq).toBe(3);
    expect(p0?.lastKey && formatOrderKey(p0.lastKey)).toBe(formatOrderKey(orderKeyOf(e1)));
    // The watermark at seq 4 is behind e2 (unreleased): only the one at seq 2 is applied.
    expect(p0?.watermark).toEqual({ lamport: 10n, positions: { src: '0/108' } });
    const p1 = batch?.checkpoints.find((c) => c.partition === 1);
    expect(p1).toEqual({ partition: 1, resumeSeq: 6, lastKey: undefined, watermark: { lamport: 10n, positions: { src: '0/108' } } });
  });

  it('a heartbeat alone moves the checkpoint (idle tables still advance the slot)', () => {
    const merger = new PartitionMerger([{ partition: 0, resumeSeq: 7, watermark: { lamport: 5n, positions: { src: '0/50' } } }]);
    expect(merger.take(10)).toBeUndefined();
    merger.push(0, 9, heartbeat(6, { src: '0/60' }));
    const batch = merger.take(10);
    expect(batch?.events).toEqual([]);
    expect(batch?.checkpoints).toEqual([{ partition: 0, resumeSeq: 10, lastKey: undefined, watermark: { lamport: 6n, positions: { src: '0/60' } } }]);
  });

  it('drops replays at or below the stored last key', () => {
    const e1 = changeEvent({ lamport: 10, commitLsn: '0/100', seq: 0 });
    const e2 = changeEvent({ lamport: 10, commitLsn: '0/100', seq: 1 });
    const merger = new PartitionMerger([{ partition: 0, resumeSeq: 1, lastKey: orderKeyOf(e1), watermark: { lamport: 9n, positions: {} } }]);
    expect(merger.push(0, 1, e1)).toBe('replay');
    expect(merger.push(0, 2, e2)).toBe('queued');
    expect(merger.push(0, 3, e2)).toBe('replay');
    merger.push(0, 4, heartbeat(10));
    const batch = merger.take(10);
    expect(batch?.events.map((e) => e.seq)).toEqual([2]);
    expect(batch?.checkpoints[0]?.resumeSeq).toBe(5);
  });

  it('keeps reading the partition that holds back the others even when they are full', () => {
    const merger = new PartitionMerger(fresh(2));
    for (let i = 1; i <= 5; i++) merger.push(0, i, changeEvent({ lamport: 100 + i, commitLsn: `0/${i}00`, seq: 0 }));
    merger.push(0, 6, heartbeat(105));
    // Partition 1 has shown nothing: it holds everything back, partition 0 need not be read on.
    expect(merger.wantsMore(0, 5)).toBe(false);
    expect(merger.wantsMore(1, 0)).toBe(true);
    merger.push(1, 7, changeEvent({ lamport: 50, commitLsn: '1/0', seq: 0, source: 'other' }));
    // Its stream is in order: nothing below its last event can come, so that event may go.
    expect(merger.wantsMore(0, 5)).toBe(false);
    expect(merger.releasableAtLeast(1)).toBe(true);
    expect(merger.releasableAtLeast(2)).toBe(false);
    merger.push(1, 8, heartbeat(60));
    expect(merger.wantsMore(0, 5)).toBe(false);
    expect(merger.wantsMore(1, 0)).toBe(true);
    expect(merger.releasableAtLeast(2)).toBe(false);
    merger.push(1, 9, heartbeat(105));
    expect(merger.releasableAtLeast(6)).toBe(true);
    expect(merger.wantsMore(0, 5)).toBe(true); // both at lamport 105: either may move the minimum
  });

  it('stops reading a partition at its byte bound too, unless it holds the others back', () => {
    const merger = new PartitionMerger(fresh(2));
    merger.push(0, 1, changeEvent({ lamport: 10, commitLsn: '0/100', seq: 0 }), 600);
    merger.push(0, 2, changeEvent({ lamport: 11, commitLsn: '0/200', seq: 0 }), 600);
    merger.push(1, 3, changeEvent({ lamport: 20, commitLsn: '0/300', seq: 0 }), 100);
    expect(merger.bufferedBytes(0)).toBe(1200);
    // Partition 0 is under 1,000 messages but over 1,000 bytes: partition 1 is ahead of it, so 0 holds the minimum.
    expect(merger.wantsMore(0, 1_000, 1_000)).toBe(true);
    expect(merger.wantsMore(1, 1_000, 50)).toBe(false);
    expect(merger.wantsMore(1, 1_000, 1_000)).toBe(true);
    merger.push(0, 4, heartbeat(20), 10);
    expect(merger.take(1)?.events.map((e) => e.seq)).toEqual([1]);
    expect(merger.bufferedBytes(0)).toBe(610);
    // Seq 3's transaction may go on in partition 1 until it shows a bound past it.
    expect(merger.take(10)?.events.map((e) => e.seq)).toEqual([2]);
    merger.push(1, 5, heartbeat(20), 10);
    expect(merger.take(10)?.events.map((e) => e.seq)).toEqual([3]);
    expect([merger.bufferedBytes(0), merger.bufferedBytes(1)]).toEqual([0, 0]);
  });

  it('streams a transaction larger than streamAbove in chunks, before its end is read', () => {
    const merger = new PartitionMerger(fresh(3));
    for (let p = 0; p < 3; p++) merger.push(p, 100 + p, heartbeat(9));
    let seq = 1;
    const pushRows = (from: number, to: number): void => {
      for (let i = from; i < to; i++) merger.push(i % 3, seq++, changeEvent({ lamport: 10, commitLsn: '0/A00', seq: i }));
    };
    pushRows(0, 25);
    // 25 rows read, the transaction is not over: whole-transaction mode waits.
    expect(merger.wouldRelease(10)).toBe(false);
    expect(merger.take(10)?.events ?? []).toEqual([]);
    const first = merger.take(10, { streamAbove: 20 });
    expect(first?.events.map((e) => e.event.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(first).toMatchObject({ startsInside: false, endsInside: true, transactions: 0 });
    // Row 24 is in partition 0 and row 23 in 2: partition 1's last key (row 22) bounds the release.
    const second = merger.take(10, { streamAbove: 20 });
    expect(second?.events.map((e) => e.event.seq)).toEqual([20, 21, 22]);
    expect(second).toMatchObject({ startsInside: true, endsInside: true });
    pushRows(25, 40);
    merger.push(0, seq++, changeEvent({ lamport: 11, commitLsn: '0/B00', seq: 0 }));
    for (let p = 0; p < 3; p++) merger.push(p, seq++, heartbeat(11));
    const third = merger.take(10, { streamAbove: 20 });
    expect(third?.events.map((e) => e.event.seq)).toEqual([23, 24, 25, 26, 27, 28, 29, 30, 31, 32]);
    expect(third).toMatchObject({ startsInside: true, endsInside: true, transactions: 0 });
    // The last chunk ends the big transaction and takes the next (small) one along.
    const last = merger.take(10, { streamAbove: 20 });
    expect(last?.events.map((e) => `${e.event.lamport}/${e.event.seq}`)).toEqual([33, 34, 35, 36, 37, 38, 39].map((i) => `10/${i}`).concat(['11/0']));
    expect(last).toMatchObject({ startsInside: true, endsInside: false, transactions: 2 });
  });

  it('releases whole transactions before a large unfinished one, and never appends it to them', () => {
    const merger = new PartitionMerger(fresh(1));
    merger.push(0, 1, changeEvent({ lamport: 5, commitLsn: '0/500', seq: 0 }));
    merger.push(0, 2, changeEvent({ lamport: 5, commitLsn: '0/500', seq: 1 }));
    for (let i = 0; i < 30; i++) merger.push(0, 3 + i, changeEvent({ lamport: 6, commitLsn: '0/600', seq: i }));
    const first = merger.take(100, { streamAbove: 10 });
    expect(first?.events.map((e) => e.event.lamport)).toEqual(['5', '5']);
    expect(first).toMatchObject({ startsInside: false, endsInside: false, transactions: 1 });
    expect(first?.checkpoints).toEqual([{ partition: 0, resumeSeq: 3, lastKey: orderKeyOf(changeEvent({ lamport: 5, commitLsn: '0/500', seq: 1 })), watermark: undefined }]);
    const second = merger.take(100, { streamAbove: 10 });
    expect(second?.events.map((e) => e.event.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i));
    expect(second).toMatchObject({ startsInside: false, endsInside: true, transactions: 0 });
    expect(second?.checkpoints[0]?.resumeSeq).toBe(13);
    const third = merger.take(100, { streamAbove: 10 });
    expect(third?.events).toHaveLength(20);
    // Nothing says the transaction is over yet: it "may go on".
    expect(third).toMatchObject({ startsInside: true, endsInside: true, transactions: 0 });
    merger.push(0, 33, heartbeat(6));
    const end = merger.take(100, { streamAbove: 10 });
    expect(end).toMatchObject({ events: [], startsInside: false, endsInside: false });
    expect(end?.checkpoints[0]?.watermark?.lamport).toBe(6n);
  });

  it('resumes inside a transaction from a checkpoint taken inside it', () => {
    const rows = Array.from({ length: 12 }, (_, i) => changeEvent({ lamport: 7, commitLsn: '0/700', seq: i }));
    const merger = new PartitionMerger([{ partition: 0, resumeSeq: 6, lastKey: orderKeyOf(rows[4]!), watermark: { lamport: 6n, positions: {} } }]);
    rows.forEach((row, i) => merger.push(0, i + 1, row));
    merger.push(0, 13, heartbeat(7));
    const batch = merger.take(100, { streamAbove: 3 });
    expect(batch?.events.map((e) => e.event.seq)).toEqual([5, 6, 7, 8, 9, 10, 11]);
    expect(batch).toMatchObject({ startsInside: true, endsInside: false, transactions: 1 });
  });
});

/**
 * Simulation: random transactions over P partitions, read in random chunks, batches of
 * random size, and crashes (everything in memory lost, restart from the committed
 * checkpoints). Whatever happens, the committed batches hold every event exactly once,
 * in order, and a committed watermark never claims an event that is not committed.
 * With `streamAbove`, large transactions come in chunks: an "atomic" sink commits only
 * once a transaction has ended (PostgreSQL: one sink transaction across the chunks), a
 * "chunked" sink commits every chunk (Kafka); either way only a transaction larger than
 * `streamAbove` is ever split.
 */
describe('PartitionMerger simulation', () => {
  // CPU-bound (hundreds of simulated runs): a bound for a loaded 2-core machine, not a speed claim.
  it('exactly once, in order, whole transactions, across crashes', { timeout: 120_000 }, () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.integer({ min: 1, max: 5 }), (seed, partitions) => {
        const random = prng(seed);
        const streams: { seq: number; message: OrderedMessage }[][] = Array.from({ length: partitions }, () => []);
        const all: ChangeEvent[] = [];
        const size = new Map<string, number>();
        let seq = 1;
        let lamport = 1000n;
        const sources = ['a', 'b'];
        const lsn = { a: 0x100n, b: 0x100n } as Record<string, bigint>;
        let previous: { lamport: bigint; positions: Record<string, string> } | undefined;
        for (let t = 0; t < 30; t++) {
          lamport += BigInt(1 + Math.floor(random() * 3));
          const source = sources[Math.floor(random() * 2)] ?? 'a';
          lsn[source] = (lsn[source] ?? 0n) + 0x100n;
          const commitLsn = Lsn.format(Lsn.fromBigInt(lsn[source] ?? 0n));
          const count = 1 + Math.floor(random() * (random() < 0.2 ? 20 : 6));
          for (let i = 0; i < count; i++) {
            const event = changeEvent({ lamport, source, commitLsn, seq: i, key: [`${t}-${i}`] });
            all.push(event);
            streams[Math.floor(random() * partitions)]?.push({ seq: seq++, message: event });
            // A heartbeat inside a transaction (the reorderer's, below its lamport): no end of anything.
            if (previous !== undefined && random() < 0.2) streams[Math.floor(random() * partitions)]?.push({ seq: seq++, message: heartbeat(previous.lamport, previous.positions) });
          }
          size.set(`${lamport}:${source}:${commitLsn}`, count);
          previous = { lamport, positions: { [source]: commitLsn } };
          for (const stream of streams) if (random() < 0.5 || t === 29) stream.push({ seq: seq++, message: heartbeat(lamport, { [source]: commitLsn }) });
        }

        const streamAbove = random() < 0.3 ? undefined : 1 + Math.floor(random() * 6);
        const sink = random() < 0.5 ? 'atomic' : 'chunked';
        const takeOptions = streamAbove === undefined ? {} : { streamAbove };
        let committed: LaneStart[] = fresh(partitions);
        const applied: ChangeEvent[] = [];
        let merger = new PartitionMerger(committed);
        let cursors = committed.map(() => 0);
        // A transaction is open across batches: in memory, and as last committed.
        let inside = false;
        let committedInside = false;
        let open: { events: ChangeEvent[]; checkpoints: LaneStart[] } = { events: [], checkpoints: [] };
        const txId = (key: OrderKey): string => `${key.lamport}:${key.source}:${Lsn.format(key.commitLsn)}`;
        const restart = (): void => {
          inside = committedInside;
          open = { events: [], checkpoints: [] };
          merger = new PartitionMerger(committed);
          cursors = committed.map((start) => streams[start.partition]?.findIndex((m) => m.seq >= start.resumeSeq) ?? -1).map((i) => (i < 0 ? Infinity : i));
        };
        restart();
        for (let step = 0; step < 20_000 && applied.length < all.length; step++) {
          const p = Math.floor(random() * partitions);
          const stream = streams[p] ?? [];
          for (let n = Math.floor(random() * 4); n > 0 && (cursors[p] ?? Infinity) < stream.length; n--) {
            const item = stream[cursors[p] ?? 0];
            cursors[p] = (cursors[p] ?? 0) + 1;
            if (item) merger.push(p, item.seq, item.message);
          }
          if (random() < 0.4) {
            const batch = merger.take(1 + Math.floor(random() * 8), takeOptions);
            if (batch === undefined) continue;
            // endsInside means "may go on": the next batch may start a new transaction.
            if (batch.startsInside && batch.events.length > 0) expect(inside).toBe(true);
            if (batch.events.length > 0) inside = batch.endsInside;
            if (random() < 0.15) {
              restart(); // crashed before COMMIT: the batch is lost with the memory
              continue;
            }
            const counts = new Map<string, number>();
            for (const { key } of batch.events) counts.set(txId(key), (counts.get(txId(key)) ?? 0) + 1);
            const ids = [...counts.keys()];
            for (const [index, [id, count]] of [...counts].entries()) {
              const split = (index === 0 && batch.startsInside) || (index === ids.length - 1 && batch.endsInside);
              // Whole transactions only, except a chunk of one larger than streamAbove.
              if (split) expect(size.get(id) ?? 0).toBeGreaterThan(streamAbove ?? Infinity);
              else expect(count).toBe(size.get(id));
            }
            open.events.push(...batch.events.map((e) => e.event));
            open.checkpoints.push(...batch.checkpoints);
            // An atomic sink keeps its transaction open until the source transaction ends
            // (as the PostgreSQL committer: a batch without events while nothing is open just commits).
            if (sink === 'atomic' && batch.endsInside && (batch.events.length > 0 || open.events.length > 0)) continue;
            if (sink === 'atomic') {
              // What it commits at once holds whole transactions only.
              const unit = new Map<string, number>();
              for (const event of open.events) unit.set(txId(orderKeyOf(event)), (unit.get(txId(orderKeyOf(event))) ?? 0) + 1);
              for (const [id, count] of unit) expect(count, `transaction ${id} committed in part`).toBe(size.get(id));
            }
            applied.push(...open.events);
            const next = new Map(committed.map((c) => [c.partition, c]));
            for (const checkpoint of open.checkpoints) next.set(checkpoint.partition, checkpoint);
            committed = [...next.values()];
            committedInside = inside;
            // A committed watermark is true: every event of its partition at or below it is applied.
            for (const checkpoint of open.checkpoints) {
              const w = checkpoint.watermark?.lamport;
              if (w === undefined) continue;
              for (const { message } of streams[checkpoint.partition] ?? []) {
                if (message.kind === 'change' && BigInt(message.lamport) <= w) expect(applied).toContain(message);
              }
            }
            open = { events: [], checkpoints: [] };
            if (random() < 0.1) restart(); // crash after COMMIT
          }
        }
        const expected = [...all].sort((a, b) => compareOrderKeys(orderKeyOf(a), orderKeyOf(b)));
        expect(applied.map((e) => e.eventId)).toEqual(expected.map((e) => e.eventId));
      }),
      { numRuns: 150 },
    );
  });

  it('sameTransaction compares lamport, source and commit LSN only', () => {
    const a = orderKeyOf(changeEvent({ lamport: 1, commitLsn: '0/10', seq: 0 }));
    const b = orderKeyOf(changeEvent({ lamport: 1, commitLsn: '0/10', seq: 5 }));
    const c = orderKeyOf(changeEvent({ lamport: 1, commitLsn: '0/11', seq: 0 }));
    expect(sameTransaction(a, b)).toBe(true);
    expect(sameTransaction(a, c)).toBe(false);
  });
});
