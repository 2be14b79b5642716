/**
 * A PostgreSQL log sequence number.
 *
 * Grammar (as printed by PostgreSQL): `XXXXXXXX/YYYYYYYY`, two hex numbers of at most
 * 32 bits each; the value is `(X << 32) | Y`. LSNs are compared as numbers, never as
 * strings: '0/10' < '0/9' as text, but 0x10 > 0x9.
 */
import { CdcError } from './errors.ts';

declare const lsnBrand: unique symbol;
export type Lsn = bigint & { readonly [lsnBrand]: true };

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;
const MAX_LSN = (1n << 64n) - 1n;

export class InvalidLsnError extends CdcError {
  constructor(readonly text: string) {
    super(`not a PostgreSQL LSN: ${JSON.stringify(text)} (expected hex 'X/Y')`, {
      code: 'INVALID_LSN',
      retriable: false,
    });
  }
}

export const Lsn = {
  ZERO: 0n as Lsn,

  parse(text: string): Lsn {
    const match = LSN_TEXT.exec(text.trim());
    if (!match) throw new InvalidLsnError(text);
    return ((BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)) as Lsn;
  },

  fromBigInt(value: bigint): Lsn {
    if (value < 0n || value > MAX_LSN) throw new InvalidLsnError(String(value));
    return value as Lsn;
  },

  format(lsn: Lsn): string {
    const hi = lsn >> 32n;
    const lo = lsn & 0xffffffffn;
    return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
  },

  compare(a: Lsn, b: Lsn): -1 | 0 | 1 {
    return a < b ? -1 : a > b ? 1 : 0;
  },

  max(a: Lsn, b: Lsn): Lsn {
    return a >= b ? a : b;
  },

  min(a: Lsn, b: Lsn): Lsn {
    return a <= b ? a : b;
  },
};
