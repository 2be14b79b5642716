/**
 * Debezium's PostgreSQL connector records as its documentation describes them
 * (debezium.io, "Debezium connector for PostgreSQL": change event values, truncate events,
 * transaction metadata), written out here by field name and JSON type with our own sample
 * values, as they look through the JsonConverter with schemas.enable=false.
 *
 * Where the page and the connector disagree we follow the connector and say so:
 *  - source.snapshot: an example shows `true`, but the field is an Enum string
 *    ("true"/"false"/"last"/…) since Debezium 1.x;
 *  - transaction.total_order/data_collection_order and ts_ms are int64 in the schema,
 *    although one example quotes them.
 */

/** Value of a create event for `CREATE TABLE customers (id SERIAL PRIMARY KEY, first_name …)`. */
export const documentedCreateValue = {
  before: null,
  after: { id: 1, first_name: 'Anne', last_name: 'Kretchmar', email: 'annek@noanswer.org' },
  source: {
    version: '2.7.0.Final',
    connector: 'postgresql',
    name: 'PostgreSQL_server',
    ts_ms: 1559033904863,
    ts_us: 1559033904863123,
    ts_ns: 1559033904863123000,
    snapshot: 'false',
    db: 'postgres',
    sequence: '["24023119","24023128"]',
    schema: 'public',
    table: 'customers',
    txId: 555,
    lsn: 24023128,
    xmin: null,
  },
  op: 'c',
  ts_ms: 1559033904863,
  ts_us: 1559033904863841,
  ts_ns: 1559033904863841257,
  transaction: null,
};

/** A truncate's value: the same envelope, no row on either side (its key is null). */
export const documentedTruncateValue = {
  ...documentedCreateValue,
  after: null,
  op: 't',
};

/** The `transaction` block of an event when provide.transaction.metadata=true. */
export const documentedTransactionBlock = {
  id: '571:53195832',
  total_order: 1,
  data_collection_order: 1,
};

export const documentedTransactionBegin = {
  status: 'BEGIN',
  id: '571:53195829',
  ts_ms: 1486500577125,
  event_count: null,
  data_collections: null,
};

export const documentedTransactionEnd = {
  status: 'END',
  id: '571:53195832',
  ts_ms: 1486500577691,
  event_count: 2,
  data_collections: [
    { data_collection: 's1.a', event_count: 1 },
    { data_collection: 's2.a', event_count: 1 },
  ],
};

/** JSON type of a value, integers apart from other numbers ('integer' | 'number' | …). */
export function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

/** Field name → JSON type, keys sorted, for comparing a record's shape with the documented one. */
export function shapeOf(value: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, jsonType(value[key])]),
  );
}
