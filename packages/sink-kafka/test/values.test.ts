import { describe, expect, it } from 'vitest';
import { stringifyJson } from '../src/envelope.ts';
import {
  DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER,
  InvalidColumnValueError,
  PgType,
  convertValue,
  epochDay,
  parseArrayLiteral,
  unavailableValue,
  type DebeziumValue,
  type ValueOptions,
} from '../src/values.ts';

/** Days since 1970-01-01 computed independently, through Date (proleptic Gregorian, year 0 = 1 BC). */
function daysViaDate(year: number, month: number, day: number): number {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return Math.round(date.getTime() / 86_400_000);
}

const INT4_ARRAY = 1007;
const INT8_ARRAY = 1016;
const TEXT_ARRAY = 1009;
const BYTEA_ARRAY = 1001;
const TIMESTAMP_ARRAY = 1115;

type Row = readonly [name: string, typeOid: number, text: string | null, expected: DebeziumValue, options?: ValueOptions];

const conversions: readonly Row[] = [
  ['SQL NULL stays null', PgType.int4, null, null],
  ['bool true', PgType.bool, 't', true],
  ['bool false', PgType.bool, 'f', false],
  ['int2', PgType.int2, '-32768', -32768],
  ['int4', PgType.int4, '2147483647', 2147483647],
  ['oid (Debezium INT64, always small)', PgType.oid, '16384', 16384],
  ['int8 small', PgType.int8, '42', 42n],
  ['int8 beyond 2^53 stays exact', PgType.int8, '9007199254740993', 9007199254740993n],
  ['int8 minimum', PgType.int8, '-9223372036854775808', -9223372036854775808n],
  ['float8', PgType.float8, '1.5', 1.5],
  ['float8 exponent', PgType.float8, '1e+100', 1e100],
  ['float4 shortest form', PgType.float4, '0.1', 0.1],
  ['float8 NaN as Jackson writes it', PgType.float8, 'NaN', 'NaN'],
  ['float8 Infinity', PgType.float8, 'Infinity', 'Infinity'],
  ['float4 -Infinity', PgType.float4, '-Infinity', '-Infinity'],
  ['numeric defaults to string mode, scale kept', PgType.numeric, '1234.5600', '1234.5600'],
  ['numeric beyond double precision stays exact', PgType.numeric, '12345678901234567890.123456789', '12345678901234567890.123456789'],
  ['numeric NaN in string mode is NAN', PgType.numeric, 'NaN', 'NAN'],
  ['numeric double mode', PgType.numeric, '1234.5600', 1234.56, { decimalHandlingMode: 'double' }],
  ['numeric NaN in double mode', PgType.numeric, 'NaN', 'NaN', { decimalHandlingMode: 'double' }],
  ['text', PgType.text, 'héllo', 'héllo'],
  ['varchar', PgType.varchar, 'a', 'a'],
  ['bpchar keeps its padding', PgType.bpchar, 'ab  ', 'ab  '],
  ['uuid', PgType.uuid, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
  ['json stays its text', PgType.json, '{"a": 1}', '{"a": 1}'],
  ['jsonb stays its text', PgType.jsonb, '{"a": 1}', '{"a": 1}'],
  ['xml', PgType.xml, '<a/>', '<a/>'],
  ['inet', PgType.inet, '192.168.0.1/24', '192.168.0.1/24'],
  ['int4range', PgType.int4range, '[1,5)', '[1,5)'],
  ['date epoch', PgType.date, '1970-01-01', 0],
  ['date', PgType.date, '2018-06-20', 17702],
  ['date before the epoch', PgType.date, '1969-12-31', -1],
  ['date year 1', PgType.date, '0001-01-01', daysViaDate(1, 1, 1)],
  ['date BC (44 BC is ISO year -43)', PgType.date, '0044-03-15 BC', daysViaDate(-43, 3, 15)],
  ['date leap day', PgType.date, '2000-02-29', daysViaDate(2000, 2, 29)],
  // Debezium's documentation: TIMESTAMP "2018-06-20 15:13:16.945104" is MicroTimestamp 1529507596945104.
  ['timestamp (documented example)', PgType.timestamp, '2018-06-20 15:13:16.945104', 1529507596945104],
  ['timestamp without fraction', PgType.timestamp, '1970-01-01 00:00:01', 1_000_000],
  ['timestamp before the epoch', PgType.timestamp, '1969-12-31 23:59:59.999999', -1],
  ['timestamp beyond 2^53 µs is exact', PgType.timestamp, '294276-12-31 23:59:59.999999', 9224318015999999999n],
  ['timestamp infinity (JDBC sentinel)', PgType.timestamp, 'infinity', 9223372036825200000n],
  ['timestamp -infinity (JDBC sentinel)', PgType.timestamp, '-infinity', -9223372036832400000n],
  ['timestamptz to UTC', PgType.timestamptz, '2018-06-20 17:13:16.945104+02', '2018-06-20T15:13:16.945104Z'],
  ['timestamptz half-hour offset', PgType.timestamptz, '2018-06-20 05:30:00+05:30', '2018-06-20T00:00:00Z'],
  ['timestamptz crosses midnight', PgType.timestamptz, '2018-06-20 23:00:00-02', '2018-06-21T01:00:00Z'],
  ['timestamptz fraction without trailing zeros', PgType.timestamptz, '2018-06-20 15:13:16.5+00', '2018-06-20T15:13:16.5Z'],
  ['timestamptz BC', PgType.timestamptz, '0044-03-15 12:00:00+00 BC', '-0043-03-15T12:00:00Z'],
  ['time', PgType.time, '15:13:16.945104', 54796945104],
  ['time midnight', PgType.time, '00:00:00', 0],
  ['time 24:00:00', PgType.time, '24:00:00', 86_400_000_000],
  ['timetz to UTC', PgType.timetz, '04:05:06.789+02', '02:05:06.789Z'],
  ['timetz negative offset', PgType.timetz, '01:00:00-03', '04:00:00Z'],
  ['timetz wraps past midnight', PgType.timetz, '23:30:00-01', '00:30:00Z'],
  ['interval days', PgType.interval, '3 days', 3 * 86_400_000_000],
  ['interval month is 365.25/12 days', PgType.interval, '1 mon', 2_629_800_000_000],
  ['interval year', PgType.interval, '1 year', 31_557_600_000_000],
  ['interval mixed signs', PgType.interval, '-1 days +02:00:00', -79_200_000_000],
  ['interval fraction', PgType.interval, '00:00:00.5', 500_000],
  ['interval full', PgType.interval, '1 year 2 mons 3 days 04:05:06.78', 37_091_106_780_000],
  ['bytea hex → base64', PgType.bytea, '\\x48656c6c6f', 'SGVsbG8='],
  ['bytea empty', PgType.bytea, '\\x', ''],
  ['int4[] with NULL', INT4_ARRAY, '{1,2,NULL}', [1, 2, null]],
  ['int4[] empty', INT4_ARRAY, '{}', []],
  ['int4[] two-dimensional', INT4_ARRAY, '{{1,2},{3,4}}', [[1, 2], [3, 4]]],
  ['int4[] with lower bounds', INT4_ARRAY, '[0:1]={7,8}', [7, 8]],
  ['int8[] exact', INT8_ARRAY, '{9007199254740993,-1}', [9007199254740993n, -1n]],
  ['text[] quoting', TEXT_ARRAY, '{"a,b",c,"NULL",NULL,"say \\"hi\\"","back\\\\slash"," sp "}', ['a,b', 'c', 'NULL', null, 'say "hi"', 'back\\slash', ' sp ']],
  ['bytea[]', BYTEA_ARRAY, '{"\\\\x4869"}', ['SGk=']],
  ['timestamp[]', TIMESTAMP_ARRAY, '{"1970-01-01 00:00:01"}', [1_000_000]],
  ['unknown OID: text unchanged', 999_999, 'whatever (1,2)', 'whatever (1,2)'],
  ['money is not converted (locale-dependent text)', PgType.money, '$1,234.56', '$1,234.56'],
];

describe('convertValue', () => {
  for (const [name, typeOid, text, expected, options] of conversions) {
    it(name, () => {
      expect(convertValue(text, typeOid, options)).toEqual(expected);
    });
  }

  it('writes int8 beyond 2^53 with all its digits', () => {
    const value = convertValue('9223372036854775807', PgType.int8);
    expect(stringifyJson([value])).toBe('[9223372036854775807]');
  });

  it.each([
    ['bool', PgType.bool, 'yes'],
    ['int4', PgType.int4, '1.5'],
    ['int8', PgType.int8, '12abc'],
    ['float8', PgType.float8, 'abc'],
    ['numeric', PgType.numeric, '1,5'],
    ['date in another DateStyle', PgType.date, '06/20/2018'],
    ['timestamp in another DateStyle', PgType.timestamp, 'Wed Jun 20 15:13:16 2018'],
    ['timetz without offset', PgType.timetz, '04:05:06'],
    ['interval in another IntervalStyle', PgType.interval, 'P1Y2M'],
    ['bytea escape format', PgType.bytea, 'Hello'],
    ['bytea odd hex', PgType.bytea, '\\x123'],
    ['unterminated array', INT4_ARRAY, '{1,2'],
    ['array with trailing text', INT4_ARRAY, '{1}x'],
  ])('refuses a %s it cannot read, with a typed error', (_name, typeOid, text) => {
    expect(() => convertValue(text, typeOid)).toThrow(InvalidColumnValueError);
  });

  it('names the type but not a long value in full', () => {
    const long = 'x'.repeat(500);
    try {
      convertValue(long, PgType.bool);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidColumnValueError);
      expect((error as InvalidColumnValueError).message).toContain('type OID 16');
      expect((error as InvalidColumnValueError).message.length).toBeLessThan(200);
      expect((error as InvalidColumnValueError).retriable).toBe(false);
    }
  });
});

describe('epochDay', () => {
  it('agrees with Date over four centuries of first and last days of months', () => {
    for (let year = 1800; year <= 2200; year += 7) {
      for (let month = 1; month <= 12; month++) {
        expect(epochDay(year, month, 1)).toBe(daysViaDate(year, month, 1));
        expect(epochDay(year, month, 28)).toBe(daysViaDate(year, month, 28));
      }
    }
  });
});

describe('parseArrayLiteral', () => {
  it('keeps a quoted NULL as text and a bare NULL as SQL NULL', () => {
    expect(parseArrayLiteral('{"NULL",null}')).toEqual(['NULL', null]);
  });
});

describe('unavailableValue (unchanged TOAST)', () => {
  const placeholderBytes = [...Buffer.from(DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER)];
  it.each([
    ['text', PgType.text, DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER],
    ['jsonb', PgType.jsonb, DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER],
    ['bytea: the placeholder bytes, base64', PgType.bytea, 'X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=='],
    ['text[]: a one-element list', TEXT_ARRAY, [DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER]],
    ['int4[]: the placeholder bytes as numbers', INT4_ARRAY, placeholderBytes],
    ['int8[]: the placeholder bytes as int64', INT8_ARRAY, placeholderBytes.map((b) => BigInt(b))],
  ] as const)('%s', (_name, typeOid, expected) => {
    expect(unavailableValue(typeOid)).toEqual(expected);
  });

  it('uses a configured placeholder', () => {
    expect(unavailableValue(PgType.text, { unavailableValuePlaceholder: '?toast?' })).toBe('?toast?');
  });
});
