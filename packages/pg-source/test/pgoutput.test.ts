/**
 * What pg-logical-replication's pgoutput parser hands the decoder, checked on real
 * protocol bytes (https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html).
 */
import { describe, expect, it } from 'vitest';
import { TextPgoutputPlugin, type SourceMessage } from '../src/pgoutput.ts';

class Bytes {
  readonly #parts: Buffer[] = [];
  u8(value: number): this {
    this.#parts.push(Buffer.from([value]));
    return this;
  }
  i16(value: number): this {
    const b = Buffer.alloc(2);
    b.writeInt16BE(value);
    this.#parts.push(b);
    return this;
  }
  i32(value: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32BE(value);
    this.#parts.push(b);
    return this;
  }
  str(value: string): this {
    this.#parts.push(Buffer.from(`${value}\0`, 'utf8'));
    return this;
  }
  text(value: string): this {
    const data = Buffer.from(value, 'utf8');
    return this.u8(0x74).i32(data.length).raw(data);
  }
  raw(data: Buffer): this {
    this.#parts.push(data);
    return this;
  }
  build(): Buffer {
    return Buffer.concat(this.#parts);
  }
}

const OID = 16_500;
// Relation: id int4 (key), at timestamptz, amount numeric, doc text
const relationBytes = new Bytes()
  .u8(0x52).i32(OID).str('public').str('pay').u8(0x64).i16(4)
  .u8(1).str('id').i32(23).i32(-1)
  .u8(0).str('at').i32(1184).i32(-1)
  .u8(0).str('amount').i32(1700).i32(-1)
  .u8(0).str('doc').i32(25).i32(-1)
  .build();

describe('TextPgoutputPlugin', () => {
  it('keeps values in PostgreSQL text form (no Date, no float) and reports unchanged TOAST as undefined', () => {
    const plugin = new TextPgoutputPlugin('pub');
    plugin.parse(relationBytes);
    const insert = plugin.parse(
      new Bytes().u8(0x49).i32(OID).u8(0x4e).i16(4)
        .text('1').text('2024-01-02 03:04:05.123456+00').text('12345678901234567890.12').text('long')
        .build(),
    ) as SourceMessage;
    expect(insert).toMatchObject({ tag: 'insert', new: { id: '1', at: '2024-01-02 03:04:05.123456+00', amount: '12345678901234567890.12', doc: 'long' } });

    // UPDATE without old tuple; 'doc' sent as 'u' (unchanged TOAST), 'amount' as NULL.
    const update = plugin.parse(
      new Bytes().u8(0x55).i32(OID).u8(0x4e).i16(4).text('1').text('2024-01-02 03:04:05+00').u8(0x6e).u8(0x75).build(),
    ) as SourceMessage;
    expect(update.tag).toBe('update');
    if (update.tag !== 'update') return;
    expect(update.new.amount).toBeNull();
    expect('doc' in update.new).toBe(true);
    expect(update.new.doc).toBeUndefined();
  });

  it('turns a change for an unknown relation into an invalid message instead of throwing', () => {
    const plugin = new TextPgoutputPlugin('pub');
    const message = plugin.parse(new Bytes().u8(0x49).i32(777).u8(0x4e).i16(1).text('1').build()) as SourceMessage;
    expect(message).toMatchObject({ tag: 'invalid', relationOid: 777 });
  });
});
