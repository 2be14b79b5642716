import { PartitionMerger, type MergeBatch } from '@cdc/committer';
import { describe, expect, it } from 'vitest';
// The merger's own event fixtures: the batches here come from the real merger.
import { changeEvent, watermark as heartbeat } from '@cdc/testkit';
import { decodeOpenTransaction, encodeCheckpoint } from '../src/checkpoint-topic.ts';
import { buildRecords, type RecordOptions, type TransactionProgress } from '../src/records.ts';

const options: RecordOptions & { maxMessageBytes: number } = {
  topicPrefix: 'shop',
  tombstones: false,
  transactionMetadata: true,
  database: 'shop',
  maxMessageBytes: 10_000,
};

interface Written {
  readonly topic: string;
  readonly value: Record<string, unknown>;
}

function written(batch: MergeBatch, progress: TransactionProgress | undefined): { records: Written[]; progress: TransactionProgress | undefined; refused: number } {
  const built = buildRecords(batch, options, progress);
  return {
    records: built.records.map((record) => ({ topic: record.topic, value: JSON.parse(String(record.value)) as Record<string, unknown> })),
    progress: built.progress,
    refused: built.refusals.length,
  };
}

/** What a reader of the topics sees: BEGIN/END by status, events by table and total_order. */
function summary(records: readonly Written[]): string[] {
  return records.map(({ topic, value }) => {
    if (topic === 'shop.transaction') {
      const collections = (value['data_collections'] as { data_collection: string; event_count: number }[] | null) ?? [];
      return `${value['status']}${value['status'] === 'END' ? ` ${value['event_count']} ${collections.map((c) => `${c.data_collection}=${c.event_count}`).join(',')}` : ''}`;
    }
    const tx = value['transaction'] as { total_order: number; data_collection_order: number };
    return `${topic.replace('shop.public.', '')}#${tx.total_order}/${tx.data_collection_order}`;
  });
}

describe('records of a source transaction streamed in chunks', () => {
  const bigTx = (count: number, lamport = 10, lsn = '0/A00') =>
    Array.from({ length: count }, (_, seq) => changeEvent({ lamport, commitLsn: lsn, seq, table: seq % 3 === 2 ? 'public.lines' : 'public.orders' }));

  it('writes BEGIN once, numbers on across chunks and a restart, and counts the whole transaction in END', () => {
    const merger = new PartitionMerger([{ partition: 0, resumeSeq: 1 }]);
    let seq = 1;
    for (const event of bigTx(7)) merger.push(0, seq++, event);
    for (const event of bigTx(2, 11, '0/B00')) merger.push(0, seq++, event);
    merger.push(0, seq++, heartbeat(11));

    const first = merger.take(3, { streamAbove: 3 });
    const one = written(first!, undefined);
    expect(summary(one.records)).toEqual(['BEGIN', 'orders#1/1', 'orders#2/2', 'lines#3/1']);
    expect(one.progress).toMatchObject({ seen: 3, begun: true });

    const second = merger.take(3, { streamAbove: 3 });
    expect(second).toMatchObject({ startsInside: true, endsInside: true });
    const two = written(second!, one.progress);
    expect(summary(two.records)).toEqual(['orders#4/3', 'orders#5/4', 'lines#6/2']);

    // The progress travels in the checkpoint: a restarted committer numbers on from it.
    const restored = decodeOpenTransaction(encodeCheckpoint('shop', 'cdc.shop.kafka', [], two.progress));
    expect(restored).toEqual(two.progress);
    const third = merger.take(3, { streamAbove: 3 });
    expect(third).toMatchObject({ startsInside: true, endsInside: false, transactions: 2 });
    const three = written(third!, restored);
    expect(summary(three.records)).toEqual(['orders#7/5', 'END 7 public.orders=5,public.lines=2', 'BEGIN', 'orders#1/1', 'orders#2/2', 'END 2 public.orders=2']);
    expect(three.progress).toBeUndefined();
  });

  it('ends a transaction whose last chunk could not know it was the last when the next batch starts another', () => {
    const merger = new PartitionMerger([{ partition: 0, resumeSeq: 1, watermark: { lamport: 9n, positions: {} } }]);
    let seq = 1;
    for (const event of bigTx(6)) merger.push(0, seq++, event);
    const one = written(merger.take(3, { streamAbove: 3 })!, undefined);
    const last = merger.take(3, { streamAbove: 3 });
    // Nothing after row 5 is read yet: the chunk may not be the last.
    expect(last).toMatchObject({ startsInside: true, endsInside: true });
    const two = written(last!, one.progress);
    expect(summary(two.records)).toEqual(['orders#4/3', 'orders#5/4', 'lines#6/2']);
    merger.push(0, seq++, heartbeat(10));
    const idle = merger.take(3, { streamAbove: 3 });
    expect(idle).toMatchObject({ events: [], startsInside: false, endsInside: false });
    const three = written(idle!, two.progress);
    expect(summary(three.records)).toEqual(['END 6 public.orders=4,public.lines=2']);
    expect(three.progress).toBeUndefined();
  });

  it('a batch of watermarks only, inside the transaction (a heartbeat below it), neither ends nor restarts it', () => {
    const merger = new PartitionMerger([{ partition: 0, resumeSeq: 1, watermark: { lamport: 9n, positions: {} } }]);
    let seq = 1;
    const rows = bigTx(9);
    for (const event of rows.slice(0, 6)) merger.push(0, seq++, event);
    const one = written(merger.take(3, { streamAbove: 3 })!, undefined);
    const two = written(merger.take(3, { streamAbove: 3 })!, one.progress);
    merger.push(0, seq++, heartbeat(9));
    const idle = merger.take(3, { streamAbove: 3 });
    expect(idle).toMatchObject({ events: [], startsInside: true, endsInside: true });
    const three = written(idle!, two.progress);
    expect(three.records).toEqual([]);
    expect(three.progress).toEqual(two.progress);
    for (const event of rows.slice(6)) merger.push(0, seq++, event);
    merger.push(0, seq++, heartbeat(10));
    const four = written(merger.take(3, { streamAbove: 3 })!, three.progress);
    expect(summary(four.records)).toEqual(['orders#7/5', 'orders#8/6', 'lines#9/3', 'END 9 public.orders=6,public.lines=3']);
  });

  it('a refused event keeps its place in total_order and is not counted in END', () => {
    const merger = new PartitionMerger([{ partition: 0, resumeSeq: 1 }]);
    const events = bigTx(5);
    events[3] = changeEvent({ lamport: 10, commitLsn: '0/A00', seq: 3, table: 'public.orders', after: { id: '3', note: 'x'.repeat(20_000) } });
    events.forEach((event, i) => merger.push(0, i + 1, event));
    merger.push(0, 6, heartbeat(10));
    const one = written(merger.take(2, { streamAbove: 2 })!, undefined);
    const two = written(merger.take(2, { streamAbove: 2 })!, one.progress);
    expect(two.refused).toBe(1);
    const three = written(merger.take(2, { streamAbove: 2 })!, two.progress);
    expect(summary([...one.records, ...two.records, ...three.records])).toEqual([
      'BEGIN',
      'orders#1/1',
      'orders#2/2',
      'lines#3/1',
      'orders#5/4',
      'END 4 public.orders=3,public.lines=1',
    ]);
  });
});
