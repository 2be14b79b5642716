import type { BusMessage } from '@cdc/bus';
import { describe, expect, it } from 'vitest';
import { decodeOrdered, decodeRaw } from '../src/decode.ts';
import { parseAssignment } from '../src/assignment.ts';

const message = (value: unknown): BusMessage => {
  const data = new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));
  return { subject: 's', seq: 1, data, header: () => undefined, json: <T>() => JSON.parse(new TextDecoder().decode(data)) as T };
};

const change = { kind: 'change', source: 'pg1', table: 'public.t', key: ['1'], lamport: '17', commitLsn: '0/16', seq: 0, eventId: 'e1' };

describe('decodeRaw / decodeOrdered', () => {
  it('accepts the kinds of each stream and nothing else', () => {
    expect(decodeRaw(message(change)).ok).toBe(true);
    expect(decodeRaw(message({ kind: 'heartbeat', source: 'pg1', lamport: '5', lsn: '0/1' })).ok).toBe(true);
    expect(decodeRaw(message({ kind: 'watermark', lamport: '5', positions: {} }))).toMatchObject({ ok: false, code: 'UNKNOWN_KIND' });
    expect(decodeOrdered(message({ kind: 'watermark', lamport: '5', positions: { pg1: '0/1' } })).ok).toBe(true);
    expect(decodeOrdered(message({ kind: 'heartbeat', source: 'pg1', lamport: '5', lsn: '0/1' }))).toMatchObject({ ok: false, code: 'UNKNOWN_KIND' });
  });

  it('names what is wrong with a malformed message', () => {
    expect(decodeRaw(message('{'))).toMatchObject({ ok: false, code: 'INVALID_JSON' });
    expect(decodeRaw(message([1]))).toMatchObject({ ok: false, code: 'INVALID_MESSAGE' });
    expect(decodeRaw(message({ ...change, lamport: 17 }))).toMatchObject({ ok: false, reason: 'malformed change: lamport must be a decimal string' });
    expect(decodeRaw(message({ ...change, commitLsn: '16' }))).toMatchObject({ ok: false, reason: 'malformed change: commitLsn must be an LSN (X/Y)' });
    expect(decodeRaw(message({ ...change, seq: -1 }))).toMatchObject({ ok: false });
    expect(decodeOrdered(message({ kind: 'watermark', lamport: '5', positions: { pg1: 'x' } }))).toMatchObject({ ok: false, reason: 'malformed watermark: positions.pg1 must be an LSN (X/Y)' });
  });
});

describe('parseAssignment', () => {
  it('expands all and validates lists against the partition count', () => {
    expect(parseAssignment('all', 3)).toEqual({ partitions: [0, 1, 2] });
    expect(parseAssignment(' 2, 0 ,2', 3)).toEqual({ partitions: [0, 2] });
    expect(parseAssignment('3', 3)).toEqual({ problem: 'partition 3 is outside 0..2 (PARTITIONS=3)' });
    expect(parseAssignment('a', 3)).toMatchObject({ problem: expect.stringContaining("'a' is not a partition number") });
  });
});
