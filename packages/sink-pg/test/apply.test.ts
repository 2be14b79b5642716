import { describe, expect, it } from 'vitest';
import { arrayLiteral, buildStatements, planEvent, textArray, type RowOp } from '../src/apply.ts';
import { SinkRefusedError, classifyPgError, fromPgError } from '../src/errors.ts';
import { parseTableMap, type SinkColumn, type SinkTable } from '../src/schema.ts';
import { changeEvent } from '@cdc/testkit';

function column(name: string, position: number, castType = 'text', extra: Partial<SinkColumn> = {}): SinkColumn {
  return { name, castType, fullType: castType, maxLength: undefined, generated: false, position, ...extra };
}

const items: SinkTable = {
  source: 'public.items',
  qualified: '"public"."items"',
  display: 'public.items',
  primaryKey: ['id'],
  columns: new Map([
    ['id', column('id', 1, 'integer')],
    ['name', column('name', 2)],
    ['body', column('body', 3)],
    ['total', column('total', 4, 'numeric')],
    ['_cdc_lsn', column('_cdc_lsn', 5, 'pg_lsn')],
    ['_cdc_seq', column('_cdc_seq', 6, 'integer')],
  ]),
};

const other: SinkTable = { ...items, source: 'public.other', qualified: '"public"."other"', display: 'public.other' };

function ops(result: RowOp[] | SinkRefusedError): RowOp[] {
  if (result instanceof SinkRefusedError) throw result;
  return result;
}

describe('planEvent', () => {
  it('an insert writes every column in table order, with the version', () => {
    const event = changeEvent({ lamport: 1, commitLsn: '0/100', seq: 3, key: ['7'], after: { total: '9.5', name: 'a', id: '7', body: 'x' } });
    const [op] = ops(planEvent(event, items, 0));
    expect(op).toMatchObject({ kind: 'upsert', columns: ['id', 'name', 'body', 'total'], values: ['7', 'a', 'x', '9.5'], lsn: '0/100', seq: 3 });
  });

  it('an update leaves unchanged-TOAST columns out (the sink keeps its value)', () => {
    const event = changeEvent({
      lamport: 1,
      commitLsn: '0/100',
      seq: 0,
      op: 'update',
      key: ['7'],
      after: { id: '7', name: 'b', body: null },
      unchanged: ['body'],
    });
    const [op] = ops(planEvent(event, items, 0));
    expect(op).toMatchObject({ kind: 'upsert', columns: ['id', 'name'] });
    const [statement] = buildStatements(ops(planEvent(event, items, 0)));
    expect(statement?.text).not.toContain('"body"');
  });

  it('a column the sink lacks is a refusal naming the column', () => {
    const event = changeEvent({ lamport: 1, commitLsn: '0/100', seq: 0, after: { id: '1', colour: 'red' } });
    const refusal = planEvent(event, items, 0);
    expect(refusal).toBeInstanceOf(SinkRefusedError);
    expect(refusal).toMatchObject({ kind: 'column_missing', code: 'SINK_COLUMN_MISSING', context: { column: 'colour', table: 'public.items' } });
  });

  it('a delete takes the key from the old row or the event key', () => {
    const event = changeEvent({ lamport: 1, commitLsn: '0/100', seq: 0, op: 'delete', key: ['7'], before: { id: '7' }, after: null });
    expect(ops(planEvent(event, items, 4))).toEqual([
      { kind: 'delete', table: items, item: 4, keyValues: ['7'], keyText: '["7"]', lsn: '0/100', seq: 0 },
    ]);
  });

  it('a primary-key change deletes the old key and upserts the new one', () => {
    const event = changeEvent({ lamport: 1, commitLsn: '0/100', seq: 0, op: 'update', key: ['8'], before: { id: '7' }, after: { id: '8', name: 'n' } });
    expect(ops(planEvent(event, items, 0)).map((op) => [op.kind, op.kind === 'truncate' ? '' : op.keyText])).toEqual([
      ['delete', '["7"]'],
      ['upsert', '["8"]'],
    ]);
  });
});

describe('a moved row with unchanged TOAST columns', () => {
  it('copies the unchanged columns from the row at the old key, in its own statement', () => {
    const event = changeEvent({
      lamport: 1,
      commitLsn: '0/100',
      seq: 0,
      op: 'insert',
      key: ['8'],
      before: { id: '7' },
      after: { id: '8', name: 'n' },
      unchanged: ['body'],
    });
    const planned = ops(planEvent(event, items, 0));
    expect(planned).toHaveLength(1);
    expect(planned[0]).toMatchObject({ kind: 'upsert', columns: ['id', 'name'], copyFrom: { keyValues: ['7'], columns: ['body'] } });
    const neighbour = ops(planEvent(changeEvent({ lamport: 1, commitLsn: '0/100', seq: 1, key: ['9'], after: { id: '9', name: 'm' } }), items, 1));
    const statements = buildStatements([...planned, ...neighbour]);
    expect(statements).toHaveLength(2);
    expect(statements[0]?.text).toContain('SELECT');
    expect(statements[0]?.text).toContain('old."body"');
    expect(statements[0]?.text).toMatch(/FROM "public"\."items" AS old WHERE old\."id" = \$\d+::integer/);
    expect(statements[0]?.values).toEqual(['8', 'n', '0/100', 0, '7']);
  });
});

describe('buildStatements', () => {
  const upsert = (id: string, seq: number, table = items): RowOp => ({
    kind: 'upsert',
    table,
    item: seq,
    columns: ['id', 'name'],
    values: [id, `n${id}`],
    keyText: `["${id}"]`,
    lsn: '0/100',
    seq,
    unchanged: [],
  });

  it('groups consecutive rows of one table and shape into one guarded set-based upsert, one array per column', () => {
    const statements = buildStatements([upsert('1', 0), upsert('2', 1), upsert('3', 2)]);
    expect(statements).toHaveLength(1);
    const [statement] = statements;
    expect(statement?.items).toEqual([0, 1, 2]);
    expect(statement?.values).toEqual([textArray(['1', '2', '3']), textArray(['n1', 'n2', 'n3']), '{"0/100","0/100","0/100"}', '{0,1,2}']);
    expect(statement?.text).toContain(
      'INSERT INTO "public"."items" AS t ("id", "name", "_cdc_lsn", "_cdc_seq") ' +
        'SELECT v.c0::integer, v.c1, v._cdc_lsn, v._cdc_seq FROM unnest($1::text[], $2::text[], $3::pg_lsn[], $4::integer[]) AS v(c0, c1, _cdc_lsn, _cdc_seq)',
    );
    expect(statement?.text).toContain('ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "_cdc_lsn" = EXCLUDED."_cdc_lsn", "_cdc_seq" = EXCLUDED."_cdc_seq"');
    expect(statement?.text).toContain('WHERE (t._cdc_lsn IS NULL OR (t._cdc_lsn, t._cdc_seq) < (EXCLUDED._cdc_lsn, EXCLUDED._cdc_seq))');
  });

  it('starts a new statement when a key repeats, the table changes or the kind changes (order is kept)', () => {
    const del: RowOp = { kind: 'delete', table: items, item: 9, keyValues: ['1'], keyText: '["1"]', lsn: '0/200', seq: 0 };
    const statements = buildStatements([upsert('1', 0), upsert('1', 1), upsert('2', 2, other), del, { kind: 'truncate', table: items, item: 10 }]);
    expect(statements.map((s) => [s.table, s.items])).toEqual([
      ['public.items', [0]],
      ['public.items', [1]],
      ['public.other', [2]],
      ['public.items', [9]],
      ['public.items', [10]],
    ]);
    expect(statements[3]?.text).toBe(
      'DELETE FROM "public"."items" AS t USING unnest($1::text[], $2::pg_lsn[], $3::integer[]) AS v(c0, _cdc_lsn, _cdc_seq) ' +
        'WHERE t."id" = v.c0::integer AND t."id" = ANY($1::text[]::integer[]) AND (t._cdc_lsn IS NULL OR (t._cdc_lsn, t._cdc_seq) < (v._cdc_lsn, v._cdc_seq))',
    );
    expect(statements[3]?.values).toEqual([textArray(['1']), '{"0/200"}', '{0}']);
    expect(statements[4]?.text).toBe('TRUNCATE "public"."items"');
  });

  it('names each statement by its shape: the same for the same table, op and columns, another when a column type changes', () => {
    const [a] = buildStatements([upsert('1', 0)]);
    const [b] = buildStatements([upsert('2', 1), upsert('3', 2)]);
    expect(a?.name).toMatch(/^cdc_[0-9a-f]{40}$/);
    expect(b?.name).toBe(a?.name);
    expect(b?.text).toBe(a?.text);
    const retyped: SinkTable = { ...items, columns: new Map([...items.columns, ['name', column('name', 2, 'character varying')]]) };
    const [c] = buildStatements([upsert('1', 0, retyped)]);
    expect(c?.text).toContain('v.c1::character varying');
    expect(c?.name).not.toBe(a?.name);
    const [d] = buildStatements([{ kind: 'delete', table: items, item: 0, keyValues: ['1'], keyText: '["1"]', lsn: '0/1', seq: 0 }]);
    expect(d?.name).not.toBe(a?.name);
  });

  it('writes column values as binary text[] (NULL as length -1) and LSNs as array literals; array-typed columns are cast per value', () => {
    expect(textArray(['ab', null, 'é'])).toEqual(
      Buffer.from([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0x61, 0x62, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0xc3, 0xa9]),
    );
    expect(arrayLiteral(['a', null, 'NULL', 'say "hi"', 'C:\\dir', '{1,2}', ''])).toBe('{"a",NULL,"NULL","say \\"hi\\"","C:\\\\dir","{1,2}",""}');
    const tags: SinkTable = { ...items, columns: new Map([...items.columns, ['name', column('name', 2, 'integer[]')]]) };
    const [statement] = buildStatements([upsert('1', 0, tags)]);
    expect(statement?.text).toContain('SELECT v.c0::integer, v.c1::integer[], v._cdc_lsn');
    expect(statement?.text).toContain('$2::text[]');
  });

  it('splits at the bind-parameter limit', () => {
    const many = Array.from({ length: 10 }, (_, i) => upsert(String(i), i));
    expect(buildStatements(many, { maxParams: 8, maxRows: 100 }).map((s) => s.items.length)).toEqual([2, 2, 2, 2, 2]);
    expect(buildStatements(many, { maxParams: 1000, maxRows: 3 }).map((s) => s.items.length)).toEqual([3, 3, 3, 1]);
  });
});

describe('sink errors', () => {
  it('classifies by SQLSTATE: data and schema errors are refusals, connection and serialization errors are retried', () => {
    expect(classifyPgError({ code: '22P02' })).toBe('refusal');
    expect(classifyPgError({ code: '42703' })).toBe('refusal');
    expect(classifyPgError({ code: '23502' })).toBe('refusal');
    expect(classifyPgError({ code: '40001' })).toBe('retriable');
    expect(classifyPgError({ code: '57P01' })).toBe('retriable');
    expect(classifyPgError(new Error('Connection terminated unexpectedly'))).toBe('retriable');
    expect(classifyPgError({ code: '42601' })).toBe('bug');
  });

  it('a refusal keeps the SQLSTATE and the column the server named', () => {
    const error = fromPgError({ code: '23502', column: 'name', message: 'null value in column "name"' }, { table: 'public.items' });
    expect(error).toMatchObject({ code: 'SINK_CONSTRAINT', retriable: false, context: { sqlstate: '23502', column: 'name', table: 'public.items' } });
    expect(fromPgError({ code: '40P01', message: 'deadlock' }, {})).toMatchObject({ code: 'SINK_UNAVAILABLE', retriable: true });
  });

  it('TABLE_MAP maps source to sink names and rejects malformed entries', () => {
    expect([...parseTableMap('orders=sink.orders_copy, app.users = app.users_v2')]).toEqual([
      ['public.orders', 'sink.orders_copy'],
      ['app.users', 'app.users_v2'],
    ]);
    expect(() => parseTableMap('orders')).toThrow(/source_table=sink_table/);
  });
});

describe('planEvent on a table whose row layout it has seen (the cached fast path)', () => {
  const withGenerated: SinkTable = {
    ...items,
    columns: new Map([...items.columns, ['upper_name', column('upper_name', 7, 'text', { generated: true })]]),
  };
  // A fresh copy of the table each time: no layout cached for it, so planEvent takes the full path.
  const reference = (event: Parameters<typeof planEvent>[0], table: SinkTable): ReturnType<typeof planEvent> => planEvent(event, { ...table }, 0);
  const cases: Parameters<typeof planEvent>[0][] = [
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 0, key: ['1'], after: { id: '1', name: 'a', body: 'x', total: '1.5' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 1, key: ['2'], after: { id: '2', name: null, body: '', total: '2' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 2, op: 'update', key: ['3'], before: { id: '9' }, after: { id: '3', name: 'moved', body: 'b', total: '3' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 3, op: 'update', key: ['4'], before: { id: '4' }, after: { id: '4', name: 'same key', body: 'b', total: '4' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 4, op: 'read', key: ['5'], after: { id: '5', name: 'r', body: 'b', total: '5' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 5, key: ['6'], after: { name: 'other order', id: '6', body: 'b', total: '6' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 6, key: ['7'], after: { id: '7', name: 'fewer columns' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 7, key: ['8'], after: { id: '8', name: 'n', body: 'b', total: '8', colour: 'red' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 8, key: ['9'], after: { name: 'key only in the event', body: 'b', total: '9' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 9, key: ['10'], after: { id: '10', name: 'n', body: 'b', total: '10', _cdc_lsn: '0/1' } }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 10, op: 'update', key: ['11'], after: { id: '11', name: 'toast', body: null, total: '11' }, unchanged: ['body'] }),
    changeEvent({ lamport: 1, commitLsn: '0/10', seq: 11, op: 'delete', key: ['12'], before: { id: '12' }, after: null }),
  ];

  for (const table of [items, withGenerated]) {
    it(`gives exactly the ops of the full path, in every order of ${table.columns.size} columns' events`, () => {
      const warm: SinkTable = { ...table };
      const withUpper = (event: (typeof cases)[number]): (typeof cases)[number] =>
        table === withGenerated && event.after && !('colour' in event.after) ? { ...event, after: { ...event.after, upper_name: 'G' } } : event;
      const events = cases.map(withUpper);
      // Every case after every other (the layout left by one is the cache the next meets).
      for (const first of events) {
        for (const second of events) {
          for (const event of [first, second, second]) {
            const got = planEvent(event, warm, 0);
            const want = reference(event, warm);
            if (want instanceof SinkRefusedError) {
              expect(got).toBeInstanceOf(SinkRefusedError);
              expect(got).toMatchObject({ kind: want.kind, message: want.message });
            } else {
              expect(JSON.parse(JSON.stringify(got).replaceAll(JSON.stringify(warm.display), '"t"'))).toEqual(
                JSON.parse(JSON.stringify(want).replaceAll(JSON.stringify(warm.display), '"t"')),
              );
              for (const op of got as RowOp[]) expect(op.table).toBe(warm);
            }
          }
        }
      }
      const generatedWritten = events.flatMap((event) => {
        const planned = planEvent(event, warm, 0);
        return planned instanceof SinkRefusedError ? [] : planned.flatMap((op) => (op.kind === 'upsert' ? op.columns : []));
      });
      expect(generatedWritten).not.toContain('upper_name');
      expect(generatedWritten).not.toContain('_cdc_lsn');
    });
  }
});
