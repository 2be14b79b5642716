import { Lsn } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import { AckTracker, committedByEverySink, committedEverywhere } from '../src/ack.ts';

const at = (text: string): Lsn => Lsn.parse(text);

describe('committedEverywhere', () => {
  it('is undefined while any partition lacks a position for the source', () => {
    const checkpoints = new Map([
      [0, { positions: { pg1: '0/300' } }],
      [2, { positions: { pg1: '0/300' } }],
    ]);
    expect(committedEverywhere(checkpoints, 'pg1', 3)).toBeUndefined();
    expect(committedEverywhere(new Map([[0, { positions: { other: '0/1' } }]]), 'pg1', 1)).toBeUndefined();
  });

  it('is the minimum over all partitions, compared as LSNs not strings', () => {
    const checkpoints = new Map([
      [0, { positions: { pg1: '0/10' } }],
      [1, { positions: { pg1: '0/9' } }],
      [2, { positions: { pg1: '1/0' } }],
    ]);
    expect(committedEverywhere(checkpoints, 'pg1', 3)).toBe(at('0/9'));
  });
});

describe('committedByEverySink', () => {
  const full = (lsn: string) => new Map([0, 1].map((p) => [p, { positions: { pg1: lsn } }]));

  it('is the minimum over sinks: a PostgreSQL sink ahead of Kafka confirms only what Kafka has', () => {
    expect(committedByEverySink([full('0/500'), full('0/300')], 'pg1', 2)).toBe(at('0/300'));
    expect(committedByEverySink([full('0/300'), full('0/500')], 'pg1', 2)).toBe(at('0/300'));
  });

  it('is undefined while any sink has no position in some partition (a stopped committer)', () => {
    expect(committedByEverySink([full('0/500'), new Map()], 'pg1', 2)).toBeUndefined();
    expect(committedByEverySink([full('0/500'), new Map([[0, { positions: { pg1: '0/900' } }]])], 'pg1', 2)).toBeUndefined();
  });
});

describe('AckTracker', () => {
  it('confirms only commit ends it decoded, the newest one covered, never beyond', () => {
    const tracker = new AckTracker({ lsn: at('0/100'), lamport: 10n });
    tracker.committed(at('0/200'), 20n);
    tracker.committed(at('0/300'), 30n);
    expect(tracker.confirmable(at('0/150'))).toBeUndefined();
    expect(tracker.confirmable(at('0/2FF'))).toEqual({ lsn: at('0/200'), lamport: 20n });
    expect(tracker.confirmable(at('9/0'))).toEqual({ lsn: at('0/300'), lamport: 30n });
    tracker.confirm({ lsn: at('0/200'), lamport: 20n });
    expect(tracker.confirmable(at('0/200'))).toBeUndefined();
    expect(tracker.known().map((p) => Lsn.format(p.lsn))).toEqual(['0/200', '0/300']);
  });

  it('stays bounded and can still confirm while the committer lags', () => {
    const tracker = new AckTracker({ lsn: at('0/0'), lamport: 0n }, 16);
    for (let i = 1; i <= 1000; i++) tracker.committed(Lsn.fromBigInt(BigInt(i * 16)), BigInt(i));
    expect(tracker.size).toBeLessThanOrEqual(16);
    const target = tracker.confirmable(Lsn.fromBigInt(500n * 16n));
    expect(target).toBeDefined();
    expect(target!.lsn <= Lsn.fromBigInt(500n * 16n)).toBe(true);
    // The newest positions are always exact.
    expect(tracker.confirmable(Lsn.fromBigInt(1000n * 16n))?.lamport).toBe(1000n);
  });

  it('lowers its confirmed position to the slot after a reconnect and can confirm again', () => {
    const tracker = new AckTracker({ lsn: at('0/100'), lamport: 10n });
    tracker.committed(at('0/200'), 20n);
    tracker.confirm({ lsn: at('0/200'), lamport: 20n });
    tracker.resetConfirmed({ lsn: at('0/100'), lamport: 10n });
    expect(tracker.confirmable(at('0/200'))).toEqual({ lsn: at('0/200'), lamport: 20n });
  });
});
