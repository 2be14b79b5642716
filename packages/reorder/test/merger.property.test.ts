import { Lsn, compareOrderKeys, orderKeyOf, type ChangeEvent, type OrderKey, type PartitionHeartbeat, type RawMessage } from '@cdc/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LamportMerger, createCounters, type MergerCounters, type Released } from '../src/merger.ts';
import { buildSource, interleave, sourcePlan, type SourceStream } from './model.ts';

const SOURCES = ['alpha', 'beta', 'gamma'];

const scenario = fc.record({
  sources: fc.integer({ min: 1, max: 3 }),
  plans: fc.array(sourcePlan(), { minLength: 3, maxLength: 3 }),
  picks: fc.array(fc.nat(1000), { minLength: 1, maxLength: 64 }),
});

function build(s: { sources: number; plans: readonly Parameters<typeof buildSource>[1][]; picks: readonly number[] }) {
  const names = SOURCES.slice(0, s.sources);
  const streams = names.map((name, i) => buildSource(name, s.plans[i] as Parameters<typeof buildSource>[1]));
  const input = interleave(streams, s.picks);
  const expected = streams
    .flatMap((stream) => stream.events)
    .sort((a, b) => compareOrderKeys(orderKeyOf(a), orderKeyOf(b)))
    .map((e) => e.eventId);
  return { names, streams, input, expected };
}

/** Checks the whole output: the expected events once each, in order, under increasing watermarks. */
function checkOutput(output: readonly Released<undefined>[], expected: readonly string[], streams: readonly SourceStream[]): void {
  const events = output.filter((item) => item.kind === 'change').map((item) => item.event);
  expect(events.map((e) => e.eventId)).toEqual(expected);
  let watermark = -1n;
  const positions = new Map<string, bigint>();
  const hbLamportByLsn = new Map<string, bigint>();
  for (const stream of streams) {
    for (const m of stream.messages) if (m.kind === 'heartbeat') hbLamportByLsn.set(`${m.source}@${m.lsn}`, BigInt(m.lamport));
  }
  for (const item of output) {
    if (item.kind === 'watermark') {
      const w = BigInt(item.watermark.lamport);
      expect(w).toBeGreaterThan(watermark);
      watermark = w;
      for (const [source, lsn] of Object.entries(item.watermark.positions)) {
        // A position is a heartbeat of that source at or below the watermark, never moving back.
        const hb = hbLamportByLsn.get(`${source}@${lsn}`);
        expect(hb).toBeDefined();
        expect(hb as bigint).toBeLessThanOrEqual(w);
        const previous = positions.get(source) ?? -1n;
        expect(hb as bigint).toBeGreaterThanOrEqual(previous);
        positions.set(source, hb as bigint);
      }
    } else {
      // Nothing at or below a published watermark may follow it.
      expect(BigInt(item.event.lamport)).toBeGreaterThan(watermark);
    }
  }
}

function totals(counters: MergerCounters) {
  const all = Object.values(counters.sources);
  const sum = (f: (s: (typeof all)[number]) => number) => all.reduce((n, s) => n + f(s), 0);
  return { duplicates: sum((s) => s.duplicates), replayed: sum((s) => s.replayed), late: sum((s) => s.late), outOfOrder: sum((s) => s.outOfOrder) };
}

describe('LamportMerger (property)', () => {
  it('any interleaving of the sources yields the order-key-sorted events, once each, never above the min watermark', () => {
    fc.assert(
      fc.property(scenario, fc.integer({ min: 1, max: 7 }), (s, releaseEvery) => {
        const { names, streams, input, expected } = build(s);
        const merger = new LamportMerger({ sources: names, maxBuffered: 1_000_000 });
        // What each source has promised so far: its newest heartbeat (everything <= lamport)
        // and its newest progress inside a transaction (everything of its own <= key).
        const newest = new Map<string, bigint>();
        const progress = new Map<string, OrderKey>();
        const output: Released<undefined>[] = [];
        input.forEach((message, index) => {
          merger.accept(message, index + 1, undefined);
          if (message.kind === 'heartbeat') {
            newest.set(message.source, BigInt(message.lamport) > (newest.get(message.source) ?? -1n) ? BigInt(message.lamport) : (newest.get(message.source) as bigint));
          }
          if (message.kind === 'progress') {
            const key = { lamport: BigInt(message.lamport), source: message.source, commitLsn: Lsn.parse(message.commitLsn), seq: message.seq };
            const current = progress.get(message.source);
            if (!current || compareOrderKeys(key, current) > 0) progress.set(message.source, key);
          }
          if ((index + 1) % releaseEvery === 0 || index === input.length - 1) {
            // Released only below every source's promise: lamport <= its heartbeat, or key <= its progress.
            const promised = (source: string, key: OrderKey): boolean => {
              const w = newest.get(source);
              const p = progress.get(source);
              return (w !== undefined && key.lamport <= w) || (p !== undefined && compareOrderKeys(key, p) <= 0);
            };
            const released = merger.release();
            for (const item of released) {
              if (item.kind === 'change') {
                const key = orderKeyOf(item.event);
                for (const n of names) expect(promised(n, key)).toBe(true);
              }
            }
            output.push(...released);
          }
        });
        checkOutput(output, expected, streams);
        const t = totals(merger.stats());
        expect(t.duplicates).toBe(streams.reduce((n, stream) => n + stream.injectedDuplicates, 0));
        expect(t.late).toBe(0);
        expect(t.outOfOrder).toBe(0);
        expect(merger.buffered).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('a bounded buffer that refuses and re-reads releases the same sequence and always makes progress', () => {
    fc.assert(
      fc.property(scenario, fc.integer({ min: 1, max: 6 }), fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 8 }), (s, maxBuffered, batchSizes) => {
        const { names, streams, input, expected } = build(s);
        const merger = new LamportMerger({ sources: names, maxBuffered });
        const output = drive(input, batchSizes, () => merger, () => undefined);
        checkOutput(output, expected, streams);
        expect(totals(merger.stats()).late).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('a merger restarted from the checkpoint in its last stored output (even mid-release) continues without loss or repeat', () => {
    fc.assert(
      fc.property(
        scenario,
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(40), { minLength: 1, maxLength: 6 }),
        (s, maxBuffered, batchSizes, crashes) => {
          const { names, streams, input, expected } = build(s);
          const counters = createCounters(names);
          let merger = new LamportMerger<undefined>({ sources: names, maxBuffered, counters });
          const crashAt = new Set(crashes.map((c, i) => c + i * 7));
          const output = drive(input, batchSizes, () => merger, (stored) => {
            // The process dies; a new one reads the last stored output and starts over from it.
            const last = stored.at(-1);
            merger = new LamportMerger<undefined>({ sources: names, maxBuffered, counters });
            if (last) {
              merger.restore({
                resumeSeq: last.resumeSeq,
                lastKey: last.lastKey,
                lastWatermark: last.kind === 'watermark' ? (last.watermark as PartitionHeartbeat) : undefined,
              });
              return last.resumeSeq;
            }
            return 1;
          }, crashAt);
          checkOutput(output, expected, streams);
          expect(totals(counters).late).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });
});

/**
 * Plays the stage: reads batches from a position, releases after each, re-reads from
 * `reopenFrom()` when asked; optionally crashes after the k-th stored output.
 */
function drive(
  input: readonly RawMessage[],
  batchSizes: readonly number[],
  current: () => LamportMerger<undefined>,
  restart: (stored: readonly Released<undefined>[]) => number | undefined,
  crashAt: ReadonlySet<number> = new Set(),
): Released<undefined>[] {
  const stored: Released<undefined>[] = [];
  let pos = 1;
  let step = 0;
  let outputs = 0;
  while (pos <= input.length) {
    step += 1;
    if (step > 200_000) throw new Error('no progress: the merger livelocked');
    const size = batchSizes[step % batchSizes.length] as number;
    const end = Math.min(input.length, pos + size - 1);
    const merger = current();
    for (let seq = pos; seq <= end; seq++) merger.accept(input[seq - 1] as RawMessage, seq, undefined);
    const released = merger.release();
    let crashed = false;
    for (const item of released) {
      stored.push(item);
      outputs += 1;
      if (crashAt.has(outputs)) {
        crashed = true;
        break;
      }
    }
    if (crashed) {
      pos = restart(stored) ?? 1;
      continue;
    }
    const reopen = merger.reopenFrom();
    if (reopen !== undefined) {
      merger.rewind(reopen);
      pos = reopen;
    } else {
      pos = end + 1;
    }
  }
  return stored;
}

describe('LamportMerger (examples)', () => {
  const e = (source: string, lamport: number, commit: number, seq = 0): ChangeEvent =>
    ({ ...baseEvent, source, lamport: String(lamport), commitLsn: `0/${commit.toString(16)}`, seq, eventId: `${source}:${lamport}:${commit}:${seq}` }) as unknown as ChangeEvent;
  const hb = (source: string, lamport: number, lsn = lamport) => ({ kind: 'heartbeat', source, lamport: String(lamport), lsn: `0/${lsn.toString(16)}` }) as const;

  it('holds everything back until every configured source has a watermark', () => {
    const m = new LamportMerger({ sources: ['a', 'b'], maxBuffered: 10 });
    m.accept(e('a', 5, 1), 1, undefined);
    m.accept(hb('a', 10), 2, undefined);
    expect(m.release()).toEqual([]);
    expect(m.health().waitingFor).toEqual(['b']);
    m.accept(hb('b', 7), 3, undefined);
    const out = m.release();
    expect(out.map((r) => r.kind)).toEqual(['change', 'watermark']);
    expect(out[1]).toMatchObject({ kind: 'watermark', watermark: { lamport: '7', positions: { b: '0/7' } } });
    // a's only heartbeat (10) is above 7: no position for a yet.
    expect(out[1]?.kind === 'watermark' && out[1].watermark.positions.a).toBeUndefined();
  });

  it('a progress mark releases the start of an open transaction without a watermark; its heartbeat releases the rest', () => {
    const m = new LamportMerger({ sources: ['a'], maxBuffered: 100 });
    const pr = (lamport: number, commit: number, seq: number) => ({ kind: 'progress', source: 'a', lamport: String(lamport), commitLsn: `0/${commit.toString(16)}`, seq }) as const;
    for (let seq = 0; seq < 6; seq++) m.accept(e('a', 7, 32, seq), seq + 1, undefined);
    expect(m.release()).toEqual([]); // no promise from a yet
    expect(m.accept(pr(7, 32, 2), 7, undefined)).toBe('heartbeat');
    const first = m.release();
    expect(first.map((r) => (r.kind === 'change' ? r.event.seq : r.kind))).toEqual([0, 1, 2, 'watermark']);
    // The watermark stays below the open transaction's lamport.
    expect(first.at(-1)).toMatchObject({ kind: 'watermark', watermark: { lamport: '6' } });
    expect(m.buffered).toBe(3);
    // A replayed event of the released part is a replay, not a new event; an older progress is stale.
    expect(m.accept(e('a', 7, 32, 1), 2, undefined)).toBe('duplicate');
    expect(m.accept(pr(7, 32, 1), 8, undefined)).toBe('stale-heartbeat');
    m.accept(hb('a', 7, 40), 9, undefined);
    const rest = m.release();
    expect(rest.map((r) => (r.kind === 'change' ? r.event.seq : r.kind))).toEqual([3, 4, 5, 'watermark']);
    expect(rest.at(-1)).toMatchObject({ kind: 'watermark', watermark: { lamport: '7', positions: { a: '0/28' } } });
    expect(m.accept(pr(7, 32, 5), 10, undefined)).toBe('stale-heartbeat'); // below the heartbeat
  });

  it('with two sources, a progress of one releases only what the other has promised too', () => {
    const m = new LamportMerger({ sources: ['a', 'b'], maxBuffered: 100 });
    const pr = (lamport: number, commit: number, seq: number) => ({ kind: 'progress', source: 'a', lamport: String(lamport), commitLsn: `0/${commit.toString(16)}`, seq }) as const;
    for (let seq = 0; seq < 4; seq++) m.accept(e('a', 7, 32, seq), seq + 1, undefined);
    m.accept(e('b', 5, 16), 5, undefined);
    m.accept(pr(7, 32, 3), 6, undefined);
    expect(m.release()).toEqual([]); // b never promised anything
    m.accept(hb('b', 6), 7, undefined);
    // b: nothing <= 6 still to come; a: nothing <= (7,a,32,3). The bound is b's 6.
    expect(m.release().map((r) => (r.kind === 'change' ? `${r.event.source}${r.event.lamport}` : r.kind))).toEqual(['b5', 'watermark']);
    m.accept(hb('b', 9), 8, undefined);
    // Now a's progress is the smaller bound: a's open transaction up to seq 3, no watermark past 6.
    expect(m.release().map((r) => (r.kind === 'change' ? `${r.event.source}${r.event.seq}` : r.kind))).toEqual(['a0', 'a1', 'a2', 'a3']);
  });

  it('counts duplicates, out-of-order arrivals and late events per source', () => {
    const m = new LamportMerger({ sources: ['a', 'b'], maxBuffered: 10 });
    expect(m.accept(e('a', 5, 2), 1, undefined)).toBe('accepted');
    expect(m.accept(e('a', 4, 1), 2, undefined)).toBe('accepted');
    expect(m.accept(e('a', 5, 2), 3, undefined)).toBe('duplicate');
    m.accept(hb('a', 6), 4, undefined);
    m.accept(hb('b', 6), 5, undefined);
    expect(m.release().filter((r) => r.kind === 'change').map((r) => r.kind === 'change' && r.event.lamport)).toEqual(['4', '5']);
    expect(m.accept(e('b', 6, 9), 6, undefined)).toBe('late'); // above the last key, at or below the watermark
    expect(m.accept(e('a', 4, 1), 7, undefined)).toBe('duplicate');
    const stats = m.stats().sources;
    expect(stats.a).toMatchObject({ duplicates: 2, outOfOrder: 1, late: 0 });
    expect(stats.b).toMatchObject({ late: 1 });
  });

  it('resumeSeq covers buffered events and each source\'s anchoring heartbeat', () => {
    const m = new LamportMerger({ sources: ['a', 'b'], maxBuffered: 10 });
    m.accept(hb('a', 1), 10, undefined);
    m.accept(e('a', 8, 1), 11, undefined);
    m.accept(hb('b', 3), 12, undefined);
    expect(m.resumeSeq()).toBe(10);
    const out = m.release();
    // watermark 1: a's heartbeat@10 anchors a, b has nothing <= 1 yet (its oldest, @12, anchors it).
    expect(out).toHaveLength(1);
    expect(out[0]?.resumeSeq).toBe(10);
  });

  it('refuses when full, evicts the highest for a lower key, and asks to re-read from the first refused sequence', () => {
    const m = new LamportMerger({ sources: ['a', 'b'], maxBuffered: 2 });
    m.accept(e('a', 10, 1), 1, undefined);
    m.accept(e('a', 11, 2), 2, undefined);
    expect(m.accept(e('a', 12, 3), 3, undefined)).toBe('full');
    expect(m.accept(e('b', 5, 1), 4, undefined)).toBe('accepted'); // evicts a@11 (seq 2)
    expect(m.stats().sources.a?.evicted).toBe(1);
    m.accept(hb('a', 20), 5, undefined);
    m.accept(hb('b', 20), 6, undefined);
    const out = m.release();
    // Only keys below the lowest refused key (a@11) go out; the watermark stops below 11.
    expect(out.filter((r) => r.kind === 'change').map((r) => r.kind === 'change' && r.event.lamport)).toEqual(['5', '10']);
    expect(out.at(-1)).toMatchObject({ kind: 'watermark', watermark: { lamport: '10' } });
    expect(m.reopenFrom()).toBe(2);
    m.rewind(2);
    expect(m.buffered).toBe(0);
    expect(m.health().status).toBe('idle');
  });
});

const baseEvent = {
  kind: 'change',
  table: 'public.t',
  keyColumns: ['id'],
  key: ['1'],
  op: 'insert',
  before: null,
  after: { id: '1' },
  unchanged: [],
  columnTypes: {},
  lsn: '0/1',
  xid: 1,
  commitTs: '1970-01-01T00:00:00.000Z',
  traceId: 't',
};
