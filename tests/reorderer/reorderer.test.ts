/**
 * The lamport-reorderer stage in-process against the real NATS server.
 */
import { StreamGapError } from '@cdc/bus';
import { Headers, decodeMessage, streamName } from '@cdc/core';
import { Reorderer } from '@cdc/reorder';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { T0, change, createPipeline, heartbeat, interleave, workload, type TestPipeline } from './support.ts';

const SOURCES = ['pg_a', 'pg_b'];

function start(p: TestPipeline, options: Partial<Parameters<typeof Reorderer.create>[0]> = {}): Reorderer {
  return Reorderer.create({
    bus: p.bus,
    pipeline: p.name,
    partition: 0,
    sources: SOURCES,
    maxBuffered: 50_000,
    batchMax: 50,
    batchLingerMs: 10,
    logger: p.logger,
    statsIntervalMs: 0,
    retry: { initialDelayMs: 50, maxDelayMs: 500 },
    ...options,
  });
}

describe('lamport-reorderer stage', () => {
  test('releases two sources in order-key order behind the min watermark, each output stamped with its checkpoint', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_order');
    const { perSource, expected } = workload(SOURCES, 40);
    await p.publishAll('raw', 0, interleave(perSource));
    const out = p.collect('ordered', 0);
    const reorderer = start(p);
    ctx.defer('stop reorderer', () => reorderer.close());

    await waitFor(() => out.eventIds().length >= expected.length, { what: 'every event on ordered.0', timeoutMs: 20_000 });
    expect(out.eventIds()).toEqual(expected);

    for (const message of out.messages) {
      expect(Number(message.header(Headers.ResumeSeq))).toBeGreaterThanOrEqual(1);
      expect(message.header(Headers.MsgId)).toBeDefined();
    }
    const events = out.events();
    const lastEvent = out.messages.filter((m) => decodeMessage(m.data, ['change', 'watermark'])[0]?.kind === 'change').at(-1);
    expect(lastEvent?.header(Headers.LastKey)).toMatch(new RegExp(`^${events.at(-1)?.lamport}:`));

    // The final watermark covers everything and names each source's newest heartbeat below it.
    const watermarks = out.watermarks();
    const lamports = watermarks.map((w) => BigInt(w.lamport));
    expect([...lamports].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(lamports);
    expect(new Set(lamports).size).toBe(lamports.length);
    const finalHeartbeats = SOURCES.map((s) => perSource[s]?.at(-1));
    const last = watermarks.at(-1);
    const minFinal = finalHeartbeats.map((hb) => BigInt(hb?.kind === 'heartbeat' ? hb.lamport : 0)).reduce((a, b) => (b < a ? b : a));
    expect(BigInt(last?.lamport ?? 0)).toBe(minFinal);
    expect(reorderer.stats().sources.pg_a).toMatchObject({ late: 0, duplicates: 0, outOfOrder: 0 });
  });

  test('holds every event back while one configured source has sent no heartbeat', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_hold');
    await p.publishAll('raw', 0, [change('pg_a', T0 + 10n, 0x10), heartbeat('pg_a', T0 + 100n, 0x20), change('pg_b', T0 + 20n, 0x30)]);
    const out = p.collect('ordered', 0);
    const reorderer = start(p);
    ctx.defer('stop reorderer', () => reorderer.close());
    await waitFor(() => reorderer.health().buffered === 2, { what: 'both events buffered', timeoutMs: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(out.messages).toHaveLength(0);
    expect(reorderer.health().waitingFor).toEqual(['pg_b']);

    await p.publishAll('raw', 0, [heartbeat('pg_b', T0 + 50n, 0x40)]);
    await waitFor(() => out.watermarks().length === 1, { what: 'the first watermark', timeoutMs: 10_000 });
    expect(out.events().map((e) => e.lamport)).toEqual([String(T0 + 10n), String(T0 + 20n)]);
    expect(out.watermarks()[0]).toEqual({ kind: 'watermark', lamport: String(T0 + 50n), positions: { pg_b: '0/40' } });
  });

  test('heartbeats alone advance the watermark: the first output may carry no last key yet', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_idle');
    await p.publishAll('raw', 0, [heartbeat('pg_a', T0 + 5n, 0x10), heartbeat('pg_b', T0 + 7n, 0x20)]);
    const out = p.collect('ordered', 0);
    const reorderer = start(p);
    ctx.defer('stop reorderer', () => reorderer.close());
    await waitFor(() => out.watermarks().length === 1, { what: 'a watermark from heartbeats only', timeoutMs: 10_000 });
    expect(out.watermarks()[0]).toEqual({ kind: 'watermark', lamport: String(T0 + 5n), positions: { pg_a: '0/10' } });
    const message = out.messages[0];
    expect(message?.header(Headers.LastKey)).toBeUndefined();
    expect(message?.header(Headers.MsgId)).toBe(`wm:0:${T0 + 5n}`);
    // Restarted on an output whose last message has no key: resumes and keeps going.
    await reorderer.close();
    const again = start(p);
    ctx.defer('stop second reorderer', () => again.close());
    await p.publishAll('raw', 0, [heartbeat('pg_a', T0 + 9n, 0x11)]);
    await waitFor(() => out.watermarks().length === 2, { what: 'the next watermark', timeoutMs: 10_000 });
    expect(out.watermarks()[1]?.lamport).toBe(String(T0 + 7n));
  });

  test('drops duplicates, dead-letters garbage, unknown sources and late events, and keeps the partition moving', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_poison');
    const a1 = change('pg_a', T0 + 10n, 0x10);
    const b1 = change('pg_b', T0 + 20n, 0x20);
    await p.publishAll('raw', 0, [a1, b1, heartbeat('pg_a', T0 + 30n, 0x11), heartbeat('pg_b', T0 + 30n, 0x21)]);
    const out = p.collect('ordered', 0);
    const reorderer = start(p);
    ctx.defer('stop reorderer', () => reorderer.close());
    await waitFor(() => out.watermarks().length === 1, { what: 'watermark 30 released', timeoutMs: 10_000 });

    // A replay past JetStream's duplicate window: same event, a new message (no Msg-Id).
    await p.publish('raw', 0, a1);
    await p.publish('raw', 0, '{not json');
    await p.publish('raw', 0, change('pg_x', T0 + 40n, 0x50), 'x1');
    // Below the released watermark (30) but above the last key: a reader bug, cannot be placed.
    const late = change('pg_b', T0 + 25n, 0x22);
    await p.publish('raw', 0, late, late.eventId);
    const a2 = change('pg_a', T0 + 40n, 0x12);
    await p.publishAll('raw', 0, [a2, heartbeat('pg_a', T0 + 50n, 0x13), heartbeat('pg_b', T0 + 50n, 0x23)]);

    await waitFor(() => out.eventIds().includes(a2.eventId), { what: 'the event after the poison', timeoutMs: 15_000 });
    expect(out.eventIds()).toEqual([a1.eventId, b1.eventId, a2.eventId]);
    const stats = reorderer.stats();
    expect(stats.sources.pg_a?.duplicates).toBe(1);
    expect(stats.sources.pg_b?.late).toBe(1);
    const letters = await p.deadLetters('lamport-reorderer');
    expect(letters.map((l) => l.code).sort()).toEqual(['INVALID_JSON', 'LATE_EVENT', 'UNKNOWN_SOURCE']);
    expect(letters.find((l) => l.code === 'LATE_EVENT')?.eventId).toBe(late.eventId);
  });

  test('a buffer bounded to 3 events refuses, re-reads and still releases everything once, in order', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_bounded');
    const { perSource, expected } = workload(SOURCES, 30, 4);
    await p.publishAll('raw', 0, interleave(perSource, 11));
    const out = p.collect('ordered', 0);
    const reorderer = start(p, { maxBuffered: 3, batchMax: 7 });
    ctx.defer('stop reorderer', () => reorderer.close());
    await waitFor(() => out.eventIds().length >= expected.length, { what: 'every event on ordered.0', timeoutMs: 30_000 });
    expect(out.eventIds()).toEqual(expected);
    expect(reorderer.stats().reopens).toBeGreaterThan(0);
    const refused = Object.values(reorderer.stats().sources).reduce((n, s) => n + s.refused + s.evicted, 0);
    expect(refused).toBeGreaterThan(0);
  });

  test('a stopped reorderer restarted later resumes from the checkpoint in its output, without loss or repeat', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_resume');
    const { perSource, expected } = workload(SOURCES, 60, 3);
    const input = interleave(perSource, 3);
    const half = Math.floor(input.length / 2);
    await p.publishAll('raw', 0, input.slice(0, half));
    const out = p.collect('ordered', 0);
    const first = start(p);
    await waitFor(() => out.eventIds().length > 0 && first.health().buffered >= 0 && first.relay.health().batches > 0, { what: 'first output', timeoutMs: 15_000 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await first.close();
    expect(await first.closed()).toBeUndefined();
    const before = out.messages.length;

    await p.publishAll('raw', 0, input.slice(half));
    const second = start(p);
    ctx.defer('stop reorderer', () => second.close());
    await waitFor(() => out.eventIds().length >= expected.length, { what: 'every event on ordered.0', timeoutMs: 20_000 });
    expect(before).toBeGreaterThan(0);
    expect(out.eventIds()).toEqual(expected);
    // Whatever the second one re-read below its checkpoint was recognised as a replay.
    expect(second.stats().sources.pg_a?.duplicates).toBe(0);
  });

  test('a retention gap in the input stops the stage loudly instead of skipping messages', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_gap');
    await p.publishAll('raw', 0, [change('pg_a', T0 + 1n, 0x10), heartbeat('pg_a', T0 + 2n, 0x11)]);
    await p.bus.jsm.streams.purge(streamName(p.name, 'raw'));
    const reorderer = start(p);
    const fatal = await reorderer.closed();
    expect(fatal).toBeInstanceOf(StreamGapError);
    expect(reorderer.relay.state).toBe('closed');
  });
});
