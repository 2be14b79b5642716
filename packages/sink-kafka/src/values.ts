/**
 * PostgreSQL text values → the JSON values Debezium's PostgreSQL connector emits with its
 * default settings and `value.converter.schemas.enable=false`.
 *
 * Input is what pgoutput sends in text mode: the type's output function, with the server
 * defaults DateStyle=ISO, IntervalStyle=postgres, bytea_output=hex (the only bytea format
 * Debezium supports too). A value a converter cannot read is a poison value
 * (InvalidColumnValueError), never a silently wrong number.
 *
 * Mappings (Debezium literal type → our JSON), by type OID:
 *   bool → boolean · int2/int4/oid → number · int8 → exact integer (bigint, see below)
 *   float4/float8 → number, NaN/±Infinity as the strings "NaN"/"Infinity"/"-Infinity"
 *     (Kafka's JsonConverter writes them through Jackson, which quotes non-finite numbers)
 *   numeric → DecimalHandlingMode ('string' default, or 'double')
 *   text, varchar, bpchar, char, name, uuid, json, jsonb, xml, inet, cidr, macaddr(8),
 *     ranges → string (PostgreSQL text form)
 *   date → Date: days since 1970-01-01
 *   time → MicroTime: µs since midnight
 *   timestamp → MicroTimestamp: µs since the epoch, read as UTC; ±infinity as the
 *     PostgreSQL JDBC driver's sentinels, which Debezium documents
 *   timestamptz → ZonedTimestamp: ISO-8601 in UTC ('Z'), fraction without trailing zeros
 *   timetz → ZonedTime: ISO-8601 time in UTC ('Z')
 *   interval → MicroDuration: approximate µs, a month being 365.25/12 days
 *   bytea → base64 string (binary.handling.mode=bytes: the JsonConverter writes BYTES as base64)
 *   one-dimensional (or nested) arrays of the above → JSON arrays of converted elements
 *   anything else → the PostgreSQL text unchanged
 *
 * int8: emitted exactly. Debezium's INT64 is a Java long and JVM consumers read it exactly;
 * turning 2^53+1 into 2^53 before it leaves us would corrupt ids (snowflake keys) with no
 * trace. A JavaScript consumer using JSON.parse still loses precision — that is its parser's
 * limit, and it can choose a big-number parser; we cannot undo a rounding we did.
 *
 * What the OID alone cannot tell (no type modifier in a ChangeEvent): TIME(0..3) and
 * TIMESTAMP(0..3), which Debezium's adaptive mode emits in milliseconds, are emitted in µs
 * here (as `adaptive_time_microseconds` does for TIME); BIT(1), a boolean in Debezium, stays
 * text like every bit string; timestamptz keeps no fixed fraction width.
 */
import { CdcError } from '@cdc/core';

/** Built-in type OIDs (pg_type.dat); user types (enum, citext, hstore, ltree) have none fixed. */
export const PgType = {
  bool: 16,
  bytea: 17,
  char: 18,
  name: 19,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  json: 114,
  xml: 142,
  cidr: 650,
  float4: 700,
  float8: 701,
  macaddr8: 774,
  money: 790,
  macaddr: 829,
  inet: 869,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  timestamptz: 1184,
  interval: 1186,
  timetz: 1266,
  numeric: 1700,
  uuid: 2950,
  jsonb: 3802,
  int4range: 3904,
  numrange: 3906,
  tsrange: 3908,
  tstzrange: 3910,
  daterange: 3912,
  int8range: 3926,
} as const;

const INT8_ARRAY = 1016;

/** Array type OID → element type OID, for the arrays we convert element by element. */
const ARRAY_ELEMENT_TYPES: ReadonlyMap<number, number> = new Map([
  [1000, PgType.bool],
  [1001, PgType.bytea],
  [1002, PgType.char],
  [1003, PgType.name],
  [1005, PgType.int2],
  [1007, PgType.int4],
  [INT8_ARRAY, PgType.int8],
  [1028, PgType.oid],
  [1009, PgType.text],
  [1014, PgType.bpchar],
  [1015, PgType.varchar],
  [1021, PgType.float4],
  [1022, PgType.float8],
  [1231, PgType.numeric],
  [2951, PgType.uuid],
  [199, PgType.json],
  [3807, PgType.jsonb],
  [143, PgType.xml],
  [1041, PgType.inet],
  [651, PgType.cidr],
  [1040, PgType.macaddr],
  [1182, PgType.date],
  [1183, PgType.time],
  [1115, PgType.timestamp],
  [1185, PgType.timestamptz],
  [1270, PgType.timetz],
  [1187, PgType.interval],
]);

const INTEGER_ARRAY_TYPES = new Set([1005, 1007, INT8_ARRAY]);

const STRING_TYPES: ReadonlySet<number> = new Set([
  PgType.char,
  PgType.name,
  PgType.text,
  PgType.json,
  PgType.xml,
  PgType.cidr,
  PgType.macaddr8,
  PgType.macaddr,
  PgType.inet,
  PgType.bpchar,
  PgType.varchar,
  PgType.uuid,
  PgType.jsonb,
  PgType.int4range,
  PgType.numrange,
  PgType.tsrange,
  PgType.tstzrange,
  PgType.daterange,
  PgType.int8range,
]);

/**
 * A JSON value as Debezium would emit it. `bigint` is an integer that must reach the JSON
 * text exactly (int8, LSNs, nanosecond times); the envelope's serializer writes its digits.
 */
export type DebeziumValue = null | boolean | number | bigint | string | readonly DebeziumValue[];

/**
 * How NUMERIC/DECIMAL values are written (Debezium's `decimal.handling.mode`).
 *
 * Debezium's own default is 'precise': Kafka Connect's Decimal logical type, i.e. the
 * unscaled two's-complement bytes, base64 in JSON — and for NUMERIC without a declared
 * scale a {scale, value} struct. Without the schema block (schemas.enable=false) a consumer
 * cannot even know the scale of a fixed-scale column, so 'precise' JSON is unreadable;
 * every schemaless Debezium setup we know switches to 'string'. So 'string' is our default:
 * exact, readable, and the same text PostgreSQL printed. 'double' trades exactness for a
 * JSON number. 'precise' is not implemented.
 */
export type DecimalHandlingMode = 'string' | 'double';

export interface ValueOptions {
  /** Default 'string'. */
  readonly decimalHandlingMode?: DecimalHandlingMode;
  /** Debezium's `unavailable.value.placeholder`, for unchanged TOAST columns. */
  readonly unavailableValuePlaceholder?: string;
}

export const DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER = '__debezium_unavailable_value';

/** PostgreSQL JDBC's stand-ins for timestamp '±infinity', which Debezium passes on (µs). */
export const TIMESTAMP_POSITIVE_INFINITY_MICROS = 9223372036825200000n;
export const TIMESTAMP_NEGATIVE_INFINITY_MICROS = -9223372036832400000n;

/** A value in a form its type's converter cannot read: poison, not retriable. */
export class InvalidColumnValueError extends CdcError {
  constructor(
    readonly typeOid: number,
    readonly text: string,
    reason: string,
  ) {
    // Values can be large or sensitive: the message carries a short prefix only.
    const shown = text.length > 40 ? `${text.slice(0, 40)}…` : text;
    super(`cannot convert ${JSON.stringify(shown)} (type OID ${typeOid}): ${reason}`, {
      code: 'INVALID_COLUMN_VALUE',
      retriable: false,
      context: { typeOid },
    });
  }
}

/** Converts one column value; SQL NULL stays null. */
export function convertValue(text: string | null, typeOid: number, options: ValueOptions = {}): DebeziumValue {
  if (text === null) return null;
  const elementType = ARRAY_ELEMENT_TYPES.get(typeOid);
  if (elementType !== undefined) return convertArray(text, typeOid, elementType, options);
  if (STRING_TYPES.has(typeOid)) return text;
  switch (typeOid) {
    case PgType.bool:
      return parseBoolean(text, typeOid);
    case PgType.int2:
    case PgType.int4:
    case PgType.oid:
      return Number(parseIntegerText(text, typeOid));
    case PgType.int8:
      return parseIntegerText(text, typeOid);
    case PgType.float4:
    case PgType.float8:
      return floatValue(parseFloatText(text, typeOid));
    case PgType.numeric:
      return convertNumeric(text, options.decimalHandlingMode ?? 'string');
    case PgType.date:
      return convertDate(text);
    case PgType.time:
      return Number(parseTimeOfDay(text, typeOid).micros);
    case PgType.timetz:
      return convertTimeTz(text);
    case PgType.timestamp:
      return convertTimestamp(text);
    case PgType.timestamptz:
      return convertTimestampTz(text);
    case PgType.interval:
      return convertInterval(text);
    case PgType.bytea:
      return convertBytea(text);
    default:
      return text;
  }
}

/**
 * What Debezium writes for a column sent as "unchanged TOAST" (value unknown): the
 * placeholder, shaped to fit the column's type — bytes of the placeholder for bytea, a
 * one-element list for text-like arrays, the placeholder's bytes as numbers for integer
 * arrays (Debezium's UnchangedToastedPlaceholder does the same).
 */
export function unavailableValue(typeOid: number, options: ValueOptions = {}): DebeziumValue {
  const placeholder = options.unavailableValuePlaceholder ?? DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER;
  if (typeOid === PgType.bytea) return Buffer.from(placeholder, 'utf8').toString('base64');
  if (INTEGER_ARRAY_TYPES.has(typeOid)) {
    const bytes = [...Buffer.from(placeholder, 'utf8')];
    return typeOid === INT8_ARRAY ? bytes.map((byte) => BigInt(byte)) : bytes;
  }
  if (ARRAY_ELEMENT_TYPES.has(typeOid)) return [placeholder];
  return placeholder;
}

// ---------------------------------------------------------------------------------------
// Numbers

function parseBoolean(text: string, typeOid: number): boolean {
  if (text === 't') return true;
  if (text === 'f') return false;
  throw new InvalidColumnValueError(typeOid, text, "expected 't' or 'f'");
}

function parseIntegerText(text: string, typeOid: number): bigint {
  if (!/^-?\d+$/.test(text)) throw new InvalidColumnValueError(typeOid, text, 'not an integer');
  return BigInt(text);
}

function parseFloatText(text: string, typeOid: number): number {
  const value = Number(text);
  if (Number.isNaN(value) && text !== 'NaN') throw new InvalidColumnValueError(typeOid, text, 'not a number');
  return value;
}

/** JSON has no NaN/Infinity; Jackson (Kafka's JsonConverter) writes them as quoted names. */
function floatValue(value: number): number | string {
  if (Number.isFinite(value)) return value;
  if (Number.isNaN(value)) return 'NaN';
  return value > 0 ? 'Infinity' : '-Infinity';
}

function convertNumeric(text: string, mode: DecimalHandlingMode): number | string {
  if (mode === 'double') return floatValue(parseFloatText(text, PgType.numeric));
  // Debezium documents the string constant NAN for a NaN decimal in 'string' mode.
  if (text === 'NaN') return 'NAN';
  if (!/^-?(\d+(\.\d*)?|Infinity)$/.test(text)) throw new InvalidColumnValueError(PgType.numeric, text, 'not a numeric');
  return text;
}

// ---------------------------------------------------------------------------------------
// Dates and times. All arithmetic is in bigint µs: PostgreSQL timestamps reach year
// 294276, far past 2^53 µs (year ~2255); results that fit become plain numbers.

const MICROS_PER_SECOND = 1_000_000n;
const MICROS_PER_DAY = 86_400n * MICROS_PER_SECOND;

/** A bigint as a JSON-exact value: a number when it is safe, otherwise the bigint. */
function exactInteger(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

/** Days from 1970-01-01 to a proleptic Gregorian date (Hinnant's days_from_civil). */
export function epochDay(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146097 + dayOfEra - 719468;
}

/** The inverse of epochDay. */
function civilFromEpochDay(days: number): { year: number; month: number; day: number } {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const dayOfEra = z - era * 146097;
  const yearOfEra = Math.floor((dayOfEra - Math.floor(dayOfEra / 1460) + Math.floor(dayOfEra / 36524) - Math.floor(dayOfEra / 146096)) / 365);
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const mp = Math.floor((5 * dayOfYear + 2) / 153);
  const day = dayOfYear - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return { year: yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day };
}

/** 'YYYY-MM-DD[ BC]' → days since the epoch; 1 BC is year 0 (ISO proleptic years). */
function parseDate(text: string, typeOid: number): number {
  const match = /^(\d{4,})-(\d{2})-(\d{2})( BC)?$/.exec(text);
  if (!match) throw new InvalidColumnValueError(typeOid, text, 'expected an ISO date (DateStyle=ISO)');
  const year = Number(match[1]);
  return epochDay(match[4] ? 1 - year : year, Number(match[2]), Number(match[3]));
}

function convertDate(text: string): number | string {
  // Debezium documents no mapping for date ±infinity; the text at least says what it is.
  if (text === 'infinity' || text === '-infinity') return text;
  return parseDate(text, PgType.date);
}

/** Fraction digits ('5', '000001') → µs, rounding digits beyond the sixth away. */
function fractionMicros(digits: string | undefined): bigint {
  if (!digits) return 0n;
  return BigInt(digits.padEnd(6, '0').slice(0, 6));
}

/** 'HH:MM:SS[.ffffff]' (24:00:00 allowed, as PostgreSQL allows it) → µs since midnight. */
function parseTimeOfDay(text: string, typeOid: number): { micros: bigint; rest: string } {
  const match = /^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(.*)$/.exec(text);
  if (!match) throw new InvalidColumnValueError(typeOid, text, 'expected HH:MM:SS[.ffffff]');
  const seconds = BigInt(Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]));
  return { micros: seconds * MICROS_PER_SECOND + fractionMicros(match[4]), rest: match[5] ?? '' };
}

/** '+HH', '-HH:MM', '+HH:MM:SS' → offset in seconds east of UTC. */
function parseOffsetSeconds(text: string, typeOid: number, whole: string): number {
  if (text === 'Z') return 0;
  const match = /^([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?$/.exec(text);
  if (!match) throw new InvalidColumnValueError(typeOid, whole, 'expected a UTC offset');
  const seconds = Number(match[2]) * 3600 + Number(match[3] ?? 0) * 60 + Number(match[4] ?? 0);
  return match[1] === '-' ? -seconds : seconds;
}

/**
 * 'YYYY-MM-DD HH:MM:SS[.f][offset][ BC]' (PostgreSQL) or 'YYYY-MM-DDTHH:MM:SS[.f](Z|offset)'
 * (ISO-8601) → µs since the epoch in UTC. Without an offset the time is read as UTC, which is
 * how Debezium reads TIMESTAMP WITHOUT TIME ZONE.
 */
export function parseTimestampMicros(text: string, typeOid: number = PgType.timestamptz): bigint {
  const match = /^(\d{4,})-(\d{2})-(\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)(Z|[+-][\d:]+)?( BC)?$/.exec(text);
  if (!match) throw new InvalidColumnValueError(typeOid, text, 'expected an ISO timestamp (DateStyle=ISO)');
  const year = Number(match[1]);
  const days = epochDay(match[6] ? 1 - year : year, Number(match[2]), Number(match[3]));
  const { micros } = parseTimeOfDay(match[4] ?? '', typeOid);
  const offset = match[5] === undefined ? 0 : parseOffsetSeconds(match[5], typeOid, text);
  return BigInt(days) * MICROS_PER_DAY + micros - BigInt(offset) * MICROS_PER_SECOND;
}

function convertTimestamp(text: string): number | bigint {
  if (text === 'infinity') return TIMESTAMP_POSITIVE_INFINITY_MICROS;
  if (text === '-infinity') return TIMESTAMP_NEGATIVE_INFINITY_MICROS;
  return exactInteger(parseTimestampMicros(text, PgType.timestamp));
}

function convertTimestampTz(text: string): string {
  if (text === 'infinity' || text === '-infinity') return text;
  return formatUtcTimestamp(parseTimestampMicros(text, PgType.timestamptz));
}

/** '.945104' → '.945104', '.500000' → '.5', 0 → '' (java.time's ISO formatters do the same). */
function isoFraction(micros: bigint): string {
  if (micros === 0n) return '';
  return `.${micros.toString().padStart(6, '0').replace(/0+$/, '')}`;
}

function pad2(value: number | bigint): string {
  return value.toString().padStart(2, '0');
}

function isoTimeOfDay(micros: bigint): string {
  const seconds = micros / MICROS_PER_SECOND;
  return `${pad2(seconds / 3600n)}:${pad2((seconds / 60n) % 60n)}:${pad2(seconds % 60n)}${isoFraction(micros % MICROS_PER_SECOND)}`;
}

/** µs since the epoch → 'YYYY-MM-DDTHH:MM:SS[.f]Z', years outside 0..9999 signed like java.time. */
export function formatUtcTimestamp(micros: bigint): string {
  let days = micros / MICROS_PER_DAY;
  let ofDay = micros % MICROS_PER_DAY;
  if (ofDay < 0n) {
    ofDay += MICROS_PER_DAY;
    days -= 1n;
  }
  const { year, month, day } = civilFromEpochDay(Number(days));
  const yearText = year >= 0 && year <= 9999 ? String(year).padStart(4, '0') : `${year < 0 ? '-' : '+'}${String(Math.abs(year)).padStart(4, '0')}`;
  return `${yearText}-${pad2(month)}-${pad2(day)}T${isoTimeOfDay(ofDay)}Z`;
}

/** '04:05:06.789+02' → '02:05:06.789Z': ZonedTime is documented in GMT. */
function convertTimeTz(text: string): string {
  const { micros, rest } = parseTimeOfDay(text, PgType.timetz);
  const offset = BigInt(parseOffsetSeconds(rest, PgType.timetz, text)) * MICROS_PER_SECOND;
  const utc = (((micros - offset) % MICROS_PER_DAY) + MICROS_PER_DAY) % MICROS_PER_DAY;
  return `${isoTimeOfDay(utc)}Z`;
}

/** Debezium's MicroDuration uses an average month of 365.25/12 days. */
const DAYS_PER_MONTH_AVERAGE = 365.25 / 12;

/**
 * IntervalStyle=postgres text ('1 year 2 mons 3 days 04:05:06.78', '-1 days +02:00:00',
 * '00:00:00.5') → approximate µs, in doubles like Debezium, truncated toward zero.
 */
function convertInterval(text: string): number {
  const pattern = /^\s*(?:(-?\d+) (years?|mons?|days?)|([+-])?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?)/;
  let rest = text;
  let months = 0;
  let days = 0;
  let seconds = 0;
  let matched = false;
  while (rest.trim() !== '') {
    const match = pattern.exec(rest);
    if (!match) throw new InvalidColumnValueError(PgType.interval, text, 'expected IntervalStyle=postgres');
    matched = true;
    rest = rest.slice(match[0].length);
    if (match[1] !== undefined) {
      const amount = Number(match[1]);
      const unit = match[2] ?? '';
      if (unit.startsWith('year')) months += amount * 12;
      else if (unit.startsWith('mon')) months += amount;
      else days += amount;
    } else {
      const sign = match[3] === '-' ? -1 : 1;
      const fraction = Number(`0.${match[7] ?? '0'}`);
      seconds += sign * (Number(match[4]) * 3600 + Number(match[5]) * 60 + Number(match[6]) + fraction);
    }
  }
  if (!matched) throw new InvalidColumnValueError(PgType.interval, text, 'empty interval');
  const totalDays = months * DAYS_PER_MONTH_AVERAGE + days;
  const micros = Math.trunc((totalDays * 86_400 + seconds) * 1_000_000);
  return micros === 0 ? 0 : micros; // never -0, which a test or a consumer might tell apart
}

// ---------------------------------------------------------------------------------------
// Binary and arrays

/** bytea_output=hex '\x48656c6c6f' → base64. Debezium supports the hex output only, as do we. */
function convertBytea(text: string): string {
  const match = /^\\x((?:[0-9a-fA-F]{2})*)$/.exec(text);
  if (!match) throw new InvalidColumnValueError(PgType.bytea, text, 'expected bytea_output=hex');
  return Buffer.from(match[1] ?? '', 'hex').toString('base64');
}

type ArrayItem = string | null | readonly ArrayItem[];

function convertArray(text: string, typeOid: number, elementType: number, options: ValueOptions): DebeziumValue {
  const convertItem = (item: ArrayItem): DebeziumValue =>
    typeof item === 'string' || item === null ? convertValue(item, elementType, options) : item.map(convertItem);
  return parseArrayLiteral(text, typeOid).map(convertItem);
}

/**
 * PostgreSQL array output:
 *   array   := [ dims '=' ] '{' [ item { ',' item } ] '}'      dims := ('[' lo ':' hi ']')+
 *   item    := array | '"' { char | '\' char } '"' | bare       bare NULL (any case) is SQL NULL
 * (',' is the delimiter of every type we convert; only box uses ';'.)
 */
export function parseArrayLiteral(text: string, typeOid: number = 0): readonly ArrayItem[] {
  let position = 0;
  const invalid = (reason: string): InvalidColumnValueError =>
    new InvalidColumnValueError(typeOid, text, `${reason} at offset ${position}`);
  const dimensions = /^(\[-?\d+:-?\d+\])+=/.exec(text);
  if (dimensions) position = dimensions[0].length;

  const parseArray = (): ArrayItem[] => {
    if (text[position] !== '{') throw invalid("expected '{'");
    position++;
    const items: ArrayItem[] = [];
    if (text[position] === '}') {
      position++;
      return items;
    }
    for (;;) {
      items.push(parseItem());
      const next = text[position++];
      if (next === '}') return items;
      if (next !== ',') throw invalid("expected ',' or '}'");
    }
  };

  const parseItem = (): ArrayItem => {
    const first = text[position];
    if (first === '{') return parseArray();
    if (first === '"') {
      position++;
      let value = '';
      for (;;) {
        const char = text[position++];
        if (char === undefined) throw invalid('unterminated quoted element');
        if (char === '"') return value;
        if (char === '\\') {
          const escaped = text[position++];
          if (escaped === undefined) throw invalid('unterminated escape');
          value += escaped;
        } else {
          value += char;
        }
      }
    }
    const end = text.slice(position).search(/[,}]/);
    if (end < 0) throw invalid('unterminated element');
    const bare = text.slice(position, position + end).trim();
    position += end;
    if (bare === '') throw invalid('empty element');
    return bare.toUpperCase() === 'NULL' ? null : bare;
  };

  const result = parseArray();
  if (position !== text.length) throw invalid('trailing characters');
  return result;
}
