import { MultipleErrors, ProtocolError } from '@platformatic/kafka';
import { Lsn } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import { decodeCheckpoint, encodeCheckpoint } from '../src/checkpoint-topic.ts';
import { chunksByBytes } from '../src/producer.ts';
import { isFencedError, kafkaErrorTypes } from '../src/errors.ts';

describe('checkpoint record', () => {
  it('round-trips every lane: resume sequence, last order key, watermark and positions', () => {
    const text = encodeCheckpoint('orders', 'cdc.orders.kafka', [
      {
        partition: 1,
        resumeSeq: 42,
        lastKey: { lamport: 1_700_000_000_000_001n, source: 'src:1', commitLsn: Lsn.parse('1/A0'), seq: 3 },
        watermark: { lamport: 1_700_000_000_000_005n, positions: { 'src:1': '1/B0' } },
      },
      { partition: 0, resumeSeq: 7, lastKey: undefined, watermark: undefined },
    ]);
    const starts = decodeCheckpoint(text, 3);
    expect(starts).toEqual([
      { partition: 0, resumeSeq: 7, lastKey: undefined, watermark: undefined },
      {
        partition: 1,
        resumeSeq: 42,
        lastKey: { lamport: 1_700_000_000_000_001n, source: 'src:1', commitLsn: Lsn.parse('1/A0'), seq: 3 },
        watermark: { lamport: 1_700_000_000_000_005n, positions: { 'src:1': '1/B0' } },
      },
      // A partition the checkpoint does not know starts at the stream's beginning.
      { partition: 2, resumeSeq: 1 },
    ]);
  });

  it('without a checkpoint every partition starts at the beginning', () => {
    expect(decodeCheckpoint(undefined, 2)).toEqual([
      { partition: 0, resumeSeq: 1 },
      { partition: 1, resumeSeq: 1 },
    ]);
  });
});

describe('chunksByBytes', () => {
  it('keeps order and cuts before the chunk would pass the bound; an oversize record goes alone', () => {
    const records = [5, 5, 5, 20, 1, 1].map((bytes, i) => ({ bytes, i }));
    const chunks = [...chunksByBytes(records, 10)].map((chunk) => chunk.map((r) => r.i));
    expect(chunks).toEqual([[0, 1], [2], [3], [4, 5]]);
  });
});

describe('fencing errors', () => {
  it('finds INVALID_PRODUCER_EPOCH and PRODUCER_FENCED (code 90) inside the client\'s aggregate errors and causes', () => {
    const protocol = new ProtocolError('INVALID_PRODUCER_EPOCH');
    const wrapped = new MultipleErrors('Produce failed after 3 retries', [new Error('first attempt'), protocol]);
    expect(isFencedError(wrapped)).toBe(true);
    expect(isFencedError(new Error('outer', { cause: new ProtocolError(90) }))).toBe(true);
    expect(kafkaErrorTypes(wrapped).types).toEqual(['INVALID_PRODUCER_EPOCH']);
  });

  it('a timeout or a lost connection is not fencing (the producer is re-created instead)', () => {
    expect(isFencedError(new MultipleErrors('failed', [new ProtocolError('REQUEST_TIMED_OUT')]))).toBe(false);
    expect(isFencedError(new Error('Connection error: ECONNREFUSED'))).toBe(false);
  });
});
