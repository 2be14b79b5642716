import { LamportClock, computeReadEventId, type ChangeEvent, type EventId } from '@cdc/core';
import type { Pgoutput } from 'pg-logical-replication';
import { describe, expect, it } from 'vitest';
import type { SourceTable } from '../src/catalog.ts';
import { PgoutputDecoder } from '../src/decoder.ts';
import { SNAPSHOT_PREFIX } from '../src/pgoutput.ts';
import { describeProgress, overlay, type SnapshotRead } from '../src/snapshot.ts';

const TABLE: SourceTable = {
  table: 'public.docs',
  schema: 'public',
  name: 'docs',
  oid: 1,
  keyColumns: ['id'],
  primaryKey: true,
  replicaIdentity: 'default',
  columns: ['id', 'n', 'doc'],
};

function read(index: number, id: string, n: string, doc: string): SnapshotRead {
  return { index, table: TABLE, key: [id], row: { id, n, doc }, columnTypes: { id: 23, n: 23, doc: 25 }, snapshot: 'initial' };
}

function change(op: ChangeEvent['op'], id: string, after: Record<string, string | null> | null, unchanged: string[] = []): ChangeEvent {
  return {
    kind: 'change',
    source: 'pg1',
    table: 'public.docs',
    keyColumns: ['id'],
    key: [id],
    op,
    before: null,
    after,
    unchanged,
    columnTypes: {},
    lsn: '0/1',
    commitLsn: '0/1',
    seq: 0,
    xid: 1,
    commitTs: '2026-01-01T00:00:00.000000Z',
    lamport: '1',
    eventId: 'x' as EventId,
    traceId: 't',
  };
}

const window = (changes: [string, ChangeEvent[]][], truncated = false) => ({ changes: new Map(changes.map(([id, list]) => [JSON.stringify([id]), list])), truncated });

describe('overlay: a chunk as of its high watermark', () => {
  const rows = [read(0, '1', '1', 'big-1'), read(1, '2', '2', 'big-2'), read(2, '3', '3', 'big-3')];

  it('keeps a row no window change touched as read, at its place', () => {
    expect(overlay(rows, window([]))).toEqual(rows);
  });

  it('lays an update that left the TOAST column unchanged over the read row: the row is whole', () => {
    const out = overlay(rows, window([['2', [change('update', '2', { id: '2', n: '20' }, ['doc'])]]]));
    expect(out.map((r) => r.row)).toEqual([
      { id: '1', n: '1', doc: 'big-1' },
      { id: '2', n: '20', doc: 'big-2' },
      { id: '3', n: '3', doc: 'big-3' },
    ]);
    expect(out.map((r) => r.index)).toEqual([0, 1, 2]);
  });

  it('applies several changes in order, whether the read saw them or not (the result is the same)', () => {
    const changes = [change('update', '1', { id: '1', n: '10', doc: 'new' }), change('update', '1', { id: '1', n: '11' }, ['doc'])];
    // The read came before both changes, or after the first: the result is the row after both.
    expect(overlay([read(0, '1', '1', 'big-1')], window([['1', changes]]))[0]?.row).toEqual({ id: '1', n: '11', doc: 'new' });
    expect(overlay([read(0, '1', '10', 'new')], window([['1', changes]]))[0]?.row).toEqual({ id: '1', n: '11', doc: 'new' });
  });

  it('leaves out a row deleted in the window, and keeps the places of the others', () => {
    const out = overlay(rows, window([['2', [change('delete', '2', null)]]]));
    expect(out.map((r) => [r.index, r.key[0]])).toEqual([
      [0, '1'],
      [2, '3'],
    ]);
  });

  it('a row deleted and inserted again in the window is the new row', () => {
    const out = overlay(rows, window([['3', [change('delete', '3', null), change('insert', '3', { id: '3', n: '30', doc: 'd' })]]]));
    expect(out[2]?.row).toEqual({ id: '3', n: '30', doc: 'd' });
  });

  it('leaves a row out when the window rebuilt it without every column (its changes carry it)', () => {
    const out = overlay(rows, window([['1', [change('delete', '1', null), change('update', '1', { id: '1', n: '5' }, ['doc'])]]]));
    expect(out.map((r) => r.key[0])).toEqual(['2', '3']);
  });

  it('a truncate in the window leaves the whole chunk out', () => {
    expect(overlay(rows, window([], true))).toEqual([]);
  });
});

describe('decoder: snapshot watermarks and reads', () => {
  const T0 = 1_700_000_000_123_456n;
  const decoder = new PgoutputDecoder({ source: 'pg1', tables: [{ table: 'public.docs', keyColumns: ['id'] }], clock: new LamportClock(0n), snapshotPending: (table) => table === 'public.docs' });
  const message = (content: string): Pgoutput.MessageMessage => ({ tag: 'message', flags: 1, transactional: true, messageLsn: '0/20', prefix: SNAPSHOT_PREFIX, content: Buffer.from(content) });

  it('hands a watermark message to the reader and numbers reads by their place in the chunk', () => {
    decoder.decode({ tag: 'begin', commitLsn: '0/30', commitTime: T0, xid: 9 }, '0/10');
    const decoded = decoder.decode(message('{"v":1,"mark":"high"}'), '0/20');
    expect(decoded).toEqual([{ type: 'snapshot', content: '{"v":1,"mark":"high"}', lsn: '0/20' }]);
    const first = decoder.reserveSeqs(3, '0/20');
    const a = decoder.readEvent({ table: TABLE, key: ['1'], row: { id: '1' }, columnTypes: { id: 23 }, lsn: '0/20', seq: first + 0, snapshot: 'incremental' });
    const c = decoder.readEvent({ table: TABLE, key: ['3'], row: { id: '3' }, columnTypes: { id: 23 }, lsn: '0/20', seq: first + 2, snapshot: 'incremental' });
    expect([a.seq, c.seq]).toEqual([0, 2]);
    expect(a).toMatchObject({ op: 'read', snapshot: 'incremental', commitLsn: '0/30', before: null, after: { id: '1' } });
    // One id per key per high watermark, whatever its seq.
    expect(a.eventId).toBe(computeReadEventId({ source: 'pg1', table: 'public.docs', key: ['1'], commitLsn: '0/30' }));
    expect(a.eventId).not.toBe(c.eventId);
    const commit = decoder.decode({ tag: 'commit', flags: 0, commitLsn: '0/30', commitEndLsn: '0/40', commitTime: T0 }, '0/30');
    expect(commit[0]).toMatchObject({ type: 'commit', changes: 2, heartbeat: false });
  });

  it('marks streamed changes of a table whose snapshot is pending', () => {
    decoder.decode(
      { tag: 'relation', relationOid: 5, schema: 'public', name: 'docs', replicaIdentity: 'default', keyColumns: [], columns: [{ name: 'id', flags: 1, typeOid: 23, typeMod: -1, typeSchema: null, typeName: null, parser: (raw: unknown) => raw }] },
      '0/50',
    );
    decoder.decode({ tag: 'begin', commitLsn: '0/60', commitTime: T0 + 1n, xid: 10 }, '0/51');
    const [item] = decoder.decode({ tag: 'insert', relation: { relationOid: 5 } as Pgoutput.MessageRelation, new: { id: '7' } }, '0/52');
    expect(item?.type === 'change' && item.event.snapshotPending).toBe(true);
  });
});

describe('progress text', () => {
  it('says rows, share, rate and time left', () => {
    expect(describeProgress({ job: 1, kind: 'initial', table: 't', status: 'running', chunks: 3, rowsRead: 120_000, rowsEstimated: 1_000_000, rate: 9_500, etaSeconds: 93 })).toBe(
      '120,000 / ~1,000,000 rows (12 %), 9,500 rows/s, about 93 s left',
    );
  });
});
