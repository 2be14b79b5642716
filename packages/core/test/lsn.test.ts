import { describe, expect, it } from 'vitest';
import { InvalidLsnError, Lsn, compareOrderKeys, formatOrderKey, parseOrderKey, LamportClock, partitionOf, computeEventId } from '../src/index.ts';

describe('Lsn', () => {
  it('compares as numbers, not text', () => {
    expect('0/10' < '0/9').toBe(true);
    expect(Lsn.compare(Lsn.parse('0/10'), Lsn.parse('0/9'))).toBe(1);
    expect(Lsn.parse('1/0') > Lsn.parse('0/FFFFFFFF')).toBe(true);
  });
  it('round-trips through its text form', () => {
    for (const text of ['0/0', '16/B374D848', 'FFFFFFFF/FFFFFFFF', '0/1']) {
      expect(Lsn.format(Lsn.parse(text))).toBe(text);
    }
  });
  it('rejects malformed text with a typed error', () => {
    for (const text of ['', '0', '0/', 'G/0', '123456789/0', '0/0/0']) {
      expect(() => Lsn.parse(text)).toThrow(InvalidLsnError);
    }
  });
});

describe('order key', () => {
  it('orders by lamport, then source, then commit LSN, then seq', () => {
    const a = { lamport: 5n, source: 'a', commitLsn: Lsn.parse('0/20'), seq: 1 };
    const b = { lamport: 5n, source: 'b', commitLsn: Lsn.parse('0/10'), seq: 0 };
    const c = { lamport: 5n, source: 'a', commitLsn: Lsn.parse('0/20'), seq: 2 };
    const d = { lamport: 4n, source: 'z', commitLsn: Lsn.parse('9/0'), seq: 9 };
    expect([a, b, c, d].sort(compareOrderKeys)).toEqual([d, a, c, b]);
  });
  it('round-trips its text form, even with ":" in the source', () => {
    const key = { lamport: 1732400000000123n, source: 'db:1', commitLsn: Lsn.parse('1/A'), seq: 7 };
    expect(parseOrderKey(formatOrderKey(key))).toEqual(key);
  });
});

describe('LamportClock', () => {
  it('never goes backwards, even when commit timestamps do', () => {
    const clock = new LamportClock();
    expect(clock.tick(100n)).toBe(100n);
    expect(clock.tick(90n)).toBe(101n);
    expect(clock.tick(200n)).toBe(200n);
    clock.observe(500n);
    expect(clock.tick(300n)).toBe(501n);
  });
});

describe('partition and event id', () => {
  it('are deterministic and spread keys', () => {
    const counts = new Array<number>(4).fill(0);
    for (let i = 0; i < 4000; i++) counts[partitionOf('public.t', [String(i)], 4)]! += 1;
    for (const count of counts) expect(count).toBeGreaterThan(800);
    expect(partitionOf('public.t', ['1'], 4)).toBe(partitionOf('public.t', ['1'], 4));
    const parts = { source: 's', table: 'public.t', key: ['1'], lsn: '0/10', commitLsn: '0/20', seq: 0 };
    expect(computeEventId(parts)).toBe(computeEventId({ ...parts }));
    expect(computeEventId(parts)).not.toBe(computeEventId({ ...parts, seq: 1 }));
  });

  it('partitions never change between versions: fixed vectors, ASCII and not', () => {
    // FNV-1a 32 of the UTF-8 bytes of "<table>\0<key JSON>", mod P.
    expect([partitionOf('public.t', ['1'], 1024), partitionOf('public.t', ['ä', null], 1024), partitionOf('public.orders', ['42', '7'], 1024)]).toEqual([55, 462, 242]);
  });

  it('event ids never change between versions (Redis claims and sink guards of a running pipeline keep matching): a fixed vector', () => {
    // sha256("pg1:public.t:[\"1\",null]:0/10:0/16/3"), first 32 hex digits.
    expect(computeEventId({ source: 'pg1', table: 'public.t', key: ['1', null], lsn: '0/10', commitLsn: '0/16', seq: 3 })).toBe('41ee6f0a005b290a4bfa8b3325171568');
  });
});
