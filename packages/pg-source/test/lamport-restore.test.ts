import { Lsn } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import { restoreLamport, slotAheadOfRing } from '../src/lamport-restore.ts';

const ring = [
  { lsn: '0/100', lamport: '1000' },
  { lsn: '0/200', lamport: '2000' },
  { lsn: '0/A00', lamport: '9000' },
];

describe('restoreLamport', () => {
  it('resumes exactly at the entry for the slot position', () => {
    expect(restoreLamport(Lsn.parse('0/200'), ring)).toEqual({ how: 'exact', lamport: 2000n, lsn: '0/200' });
  });

  it('falls back to the newest entry below the slot position, comparing LSNs as numbers', () => {
    // As text '0/A00' < '0/900' is false but '0/1000' < '0/900' is true: only numbers are right.
    expect(restoreLamport(Lsn.parse('0/900'), ring)).toEqual({ how: 'nearest-below', lamport: 2000n, lsn: '0/200' });
    expect(restoreLamport(Lsn.parse('0/1000'), ring)).toEqual({ how: 'nearest-below', lamport: 9000n, lsn: '0/A00' });
  });

  it('starts from zero for a new slot', () => {
    expect(restoreLamport(Lsn.parse('0/50'), ring)).toEqual({ how: 'none', lamport: 0n });
    expect(restoreLamport(Lsn.parse('0/50'), [])).toEqual({ how: 'none', lamport: 0n });
  });

  it('ignores damaged entries', () => {
    expect(restoreLamport(Lsn.parse('0/200'), [{ lsn: 'zz', lamport: '1' }, { lsn: '0/200', lamport: 'x' }, ...ring])).toMatchObject({ how: 'exact', lamport: 2000n });
  });
});

describe('slotAheadOfRing', () => {
  it('flags a slot confirmed past everything the reader recorded (recreated slot)', () => {
    expect(slotAheadOfRing(Lsn.parse('0/B00'), ring)).toBe(true);
    expect(slotAheadOfRing(Lsn.parse('0/A00'), ring)).toBe(false);
    expect(slotAheadOfRing(Lsn.parse('0/150'), ring)).toBe(false);
    expect(slotAheadOfRing(Lsn.parse('5/0'), [])).toBe(false);
  });
});
