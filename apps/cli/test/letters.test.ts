import { describe, expect, test } from 'vitest';
import { InvalidArgumentError } from 'commander';
import { deadLetterId, type ChangeEvent, type DeadLetter } from '@cdc/core';
import { changeEvent } from '@cdc/testkit';
import { compareVersion, laterVerdict, letterSummary, listTable, positiveInteger, renderTable, replayDetail, replayableEvent, selectLetters, stageName, supersedes, type PartitionScan, type StoredLetter } from '../src/letters.ts';

function stored(event: ChangeEvent, overrides: Partial<DeadLetter> = {}, seq = 1): StoredLetter {
  const letter: DeadLetter = {
    stage: 'committer',
    sink: 'postgres',
    reason: 'new row for relation "t" violates check constraint "qty_small"',
    code: 'SINK_CONSTRAINT',
    table: event.table,
    lsn: event.commitLsn,
    eventId: event.eventId,
    partition: 0,
    payload: JSON.stringify(event),
    at: '2026-12-03T08:00:00.000Z',
    ...overrides,
  };
  return { seq, subject: 'cdc.p.dlq.committer', time: '2026-12-03T08:00:01.000Z', letter, id: deadLetterId(letter) };
}

const insert = changeEvent({ lamport: 1, commitLsn: '0/200', seq: 0, key: ['7'], table: 'public.t' });

describe('positiveInteger', () => {
  test('takes decimal integers from 1 and refuses the rest with the value named', () => {
    expect(positiveInteger('1')).toBe(1);
    expect(positiveInteger(' 42 ')).toBe(42);
    for (const bad of ['0', '-1', '1.5', 'abc', '', '1e3', String(2 ** 60)]) {
      expect(() => positiveInteger(bad)).toThrow(InvalidArgumentError);
    }
    expect(() => positiveInteger('lots')).toThrow('not a positive integer: "lots"');
  });
});

describe('stageName', () => {
  test('one subject token: no dots or wildcards', () => {
    expect(stageName('dedup-gate')).toBe('dedup-gate');
    for (const bad of ['*', '>', 'a.b', '', 'x y']) expect(() => stageName(bad)).toThrow(InvalidArgumentError);
  });
});

describe('replayableEvent', () => {
  test("a PostgreSQL committer letter of this sink gives back its event", () => {
    expect(replayableEvent(stored(insert), 'postgres')).toEqual({ event: insert });
  });

  test('letters of other stages, other sinks, cut payloads or without an event are not replayable, each with its reason', () => {
    const reason = (s: StoredLetter, sink = 'postgres'): string => {
      const result = replayableEvent(s, sink);
      return 'reason' in result ? result.reason : 'replayable';
    };
    expect(reason(stored(insert, { stage: 'reader', sink: undefined }))).toContain('never reached a sink');
    expect(reason(stored(insert, { sink: 'kafka' }))).toBe('a letter of sink kafka, not postgres');
    expect(reason(stored(insert), 'pg2')).toBe('a letter of sink postgres, not pg2');
    expect(reason(stored(insert, { payloadTruncated: true, payload: '{"kind":"chan' }))).toContain('cut to fit');
    expect(reason(stored(insert, { eventId: undefined }))).toBe('the letter has no event id');
    expect(reason(stored(insert, { payload: 'not json' }))).toContain('not JSON');
    expect(reason(stored(insert, { payload: '{"kind":"watermark"}' }))).toBe('its payload is not a change event');
    expect(reason(stored(insert, { payload: 'null' }))).toBe('its payload is not a change event');
    const other = changeEvent({ lamport: 2, commitLsn: '0/300', seq: 0 });
    expect(reason(stored(insert, { payload: JSON.stringify(other) }))).toContain(`the letter names ${insert.eventId}`);
  });
});

describe('compareVersion', () => {
  test('orders by commit LSN as a number, then by seq', () => {
    expect(compareVersion({ commitLsn: '0/10', seq: 0 }, { commitLsn: '0/9', seq: 5 })).toBeGreaterThan(0); // '0/10' < '0/9' as text
    expect(compareVersion({ commitLsn: '1/0', seq: 0 }, { commitLsn: '0/FFFFFFFF', seq: 0 })).toBeGreaterThan(0);
    expect(compareVersion({ commitLsn: '0/10', seq: 1 }, { commitLsn: '0/10', seq: 2 })).toBeLessThan(0);
    expect(compareVersion({ commitLsn: '0/10', seq: 2 }, { commitLsn: '0/10', seq: 2 })).toBe(0);
  });
});

describe('supersedes', () => {
  const later = (spec: { op: ChangeEvent['op']; key?: string[]; table?: string; commitLsn?: string; seq?: number }): ChangeEvent =>
    changeEvent({ lamport: 9, commitLsn: spec.commitLsn ?? '0/300', seq: spec.seq ?? 0, op: spec.op, key: spec.key ?? ['7'], table: spec.table ?? 'public.t', after: null });

  test('a newer delete of the same row, or a newer truncate of its table, supersedes an insert or update', () => {
    expect(supersedes(later({ op: 'delete' }), insert)).toBe(true);
    expect(supersedes(later({ op: 'truncate', key: [] }), insert)).toBe(true);
    expect(supersedes(later({ op: 'delete', commitLsn: '0/200', seq: 1 }), insert)).toBe(true); // same transaction, after it
    const update = { ...insert, op: 'update' as const };
    expect(supersedes(later({ op: 'delete' }), update)).toBe(true);
  });

  test('older changes, other rows, other tables and newer upserts do not (the version guard handles those)', () => {
    expect(supersedes(later({ op: 'delete', commitLsn: '0/100' }), insert)).toBe(false);
    expect(supersedes(later({ op: 'delete', commitLsn: '0/200', seq: 0 }), insert)).toBe(false); // itself
    expect(supersedes(later({ op: 'delete', key: ['8'] }), insert)).toBe(false);
    expect(supersedes(later({ op: 'delete', table: 'public.u' }), insert)).toBe(false);
    expect(supersedes(later({ op: 'update' }), insert)).toBe(false);
    expect(supersedes(later({ op: 'insert' }), insert)).toBe(false);
  });

  test('a delete letter is never superseded: applying it is guarded', () => {
    const del = { ...insert, op: 'delete' as const };
    expect(supersedes(later({ op: 'delete' }), del)).toBe(false);
    expect(supersedes(later({ op: 'truncate', key: [] }), del)).toBe(false);
  });
});

describe('output', () => {
  test('renderTable pads columns to their widest cell and trims line ends', () => {
    expect(renderTable([['a', 'bb'], ['ccc', 'd'], ['e', '']])).toBe('a    bb\nccc  d\ne');
    expect(renderTable([])).toBe('');
  });

  test('list shows seq, stage, sink, code, table, LSN, event id and the reason on one line', () => {
    const text = listTable([stored(insert, { reason: 'line one\nline two' }, 12)]);
    const [header, line] = text.split('\n');
    expect(header?.split(/\s+/)).toEqual(['seq', 'time', 'stage', 'sink', 'code', 'table', 'lsn', 'event', 'reason']);
    for (const cell of ['12', '2026-12-03T08:00:01', 'committer', 'postgres', 'SINK_CONSTRAINT', 'public.t', '0/200', insert.eventId, 'line one line two']) expect(line).toContain(cell);
  });

  test('with replay records, list says which letters were replayed and how', () => {
    const [done, open] = [stored(insert, {}, 1), stored(changeEvent({ lamport: 2, commitLsn: '0/300', seq: 0 }), {}, 2)];
    const replays = new Map([[done.id ?? '', { at: '2026-12-03T09:00:00.000Z', outcome: 'applied' }]]);
    const lines = listTable([done, open], replays).split('\n');
    expect(lines[0]).toContain('replayed');
    expect(lines[1]).toContain('applied 2026-12-03T09:00:00');
    expect(lines[2]).not.toContain('applied');
    expect(letterSummary(done, replays)).toMatchObject({ replay: { outcome: 'applied' } });
    expect(letterSummary(open, replays)).toMatchObject({ replay: null });
    expect(letterSummary(open)).not.toHaveProperty('replay');
    expect(listTable([done])).not.toContain('replayed');
  });

  test('the JSON summary names the letter id, reason and position', () => {
    expect(letterSummary(stored(insert, {}, 3))).toMatchObject({ seq: 3, id: `dlq:committer:postgres:${insert.eventId}`, code: 'SINK_CONSTRAINT', lsn: '0/200', partition: 0, sink: 'postgres', column: null });
  });

  test('replay details say what happened', () => {
    expect(replayDetail({ seq: 1, outcome: 'applied', rowsWritten: 1 })).toBe('1 row(s) written');
    expect(replayDetail({ seq: 1, outcome: 'applied', rowsWritten: 0 })).toContain('newer version');
    expect(replayDetail({ seq: 1, outcome: 'already-replayed', at: 'T', previous: 'superseded' })).toBe('replayed at T (superseded): nothing done');
    expect(replayDetail({ seq: 1, outcome: 'refused', reason: 'r' })).toBe('r');
  });

  test('selectLetters replays each sequence once, in stream order', () => {
    const [a, b, c] = [stored(insert, {}, 5), stored(insert, {}, 2), stored(insert, {}, 9)];
    expect(selectLetters([a, b], [c, a]).map((s) => s.seq)).toEqual([2, 5, 9]);
  });
});

describe('laterVerdict', () => {
  const del = changeEvent({ lamport: 9, commitLsn: '0/300', seq: 0, op: 'delete', key: ['7'], table: 'public.t', after: null });
  const trunc = changeEvent({ lamport: 9, commitLsn: '0/300', seq: 0, op: 'truncate', key: [], table: 'public.t', after: null });
  const older = changeEvent({ lamport: 0, commitLsn: '0/100', seq: 0, key: ['1'], table: 'public.t' });
  const newer = changeEvent({ lamport: 9, commitLsn: '0/400', seq: 0, key: ['1'], table: 'public.t' });
  const scan = (parts: Record<number, Partial<PartitionScan>>, trimmed = false) => ({
    partitions: new Map(Object.entries(parts).map(([p, v]) => [Number(p), { lastSeq: 10, seen: false, ...v }])),
    trimmed,
  });

  test("the letter's own event not found in its partition: not covered (retention may have taken what followed)", () => {
    expect(laterVerdict(scan({ 1: { seen: false }, 0: { first: older } }), insert, 1)).toEqual({ covered: false });
    expect(laterVerdict(scan({}), insert, 1)).toEqual({ covered: false });
  });

  test('a superseding change in its partition, or a truncate in partition 0, is the verdict', () => {
    expect(laterVerdict(scan({ 1: { seen: true, superseding: del }, 0: {} }), insert, 1)).toEqual({ covered: true, superseding: del });
    expect(laterVerdict(scan({ 1: { seen: true }, 0: { superseding: trunc } }, true), insert, 1)).toEqual({ covered: true, superseding: trunc });
    expect(laterVerdict(scan({ 0: { seen: true, superseding: del } }), insert, 0)).toEqual({ covered: true, superseding: del });
  });

  test('partition 0 proves no truncate when it starts at or before the letter, or the stream was never trimmed', () => {
    expect(laterVerdict(scan({ 1: { seen: true }, 0: { first: older } }, true), insert, 1)).toEqual({ covered: true });
    expect(laterVerdict(scan({ 1: { seen: true }, 0: { first: newer } }, false), insert, 1)).toEqual({ covered: true });
    expect(laterVerdict(scan({ 1: { seen: true }, 0: {} }, false), insert, 1)).toEqual({ covered: true });
    expect(laterVerdict(scan({ 1: { seen: true }, 0: { first: newer } }, true), insert, 1)).toEqual({ covered: false });
    expect(laterVerdict(scan({ 1: { seen: true }, 0: {} }, true), insert, 1)).toEqual({ covered: false });
  });
});
