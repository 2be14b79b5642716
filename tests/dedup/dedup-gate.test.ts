/**
 * The dedup-gate stage in-process against real NATS and Redis.
 */
import { sleep, type ChangeEvent } from '@cdc/core';
import { RedisDedupStore, dedupSlot, type DedupGate } from '@cdc/dedup';
import type { Redis } from 'ioredis';
import { TcpProxy, describe, expect, test, waitFor, type TestContext } from '../harness/index.ts';
import { T0, change, createPipeline, type TestPipeline } from '../reorderer/support.ts';
import { gateOver } from './support.ts';

const WINDOW_MS = 60_000;

function startGate(ctx: TestContext, p: TestPipeline, redisUrl = ctx.servers.redis): { gate: DedupGate; store: RedisDedupStore } {
  const store = RedisDedupStore.create({ url: redisUrl, pipeline: p.name, windowMs: WINDOW_MS, logger: p.logger, commandTimeoutMs: 1_000 });
  // Registered after the pipeline: runs before the streams are deleted (the gate first, then its store).
  ctx.defer('close store', () => store.close());
  return { gate: gateOver(ctx, p, store), store };
}

async function redisFor(ctx: TestContext, pipeline: string): Promise<Redis> {
  const redis = await ctx.redis();
  ctx.defer(`delete dedup keys of ${pipeline}`, async () => {
    const keys = await redis.keys(`cdc:dedup:${pipeline}:*`);
    if (keys.length > 0) await redis.del(...keys);
  });
  return redis;
}

/** Where the gate keeps an event's claim (bucket hash, field). */
const slotOf = (pipeline: string, e: ChangeEvent | undefined) => dedupSlot(pipeline, { eventId: e?.eventId ?? '', commitTs: e?.commitTs ?? '', seq: e?.seq ?? 0 });

const events = (n: number, from = 0): ChangeEvent[] =>
  Array.from({ length: n }, (_, i) => change('pg_a', T0 + BigInt((from + i + 1) * 10), 0x100 + (from + i) * 0x10));

describe('dedup-gate stage', () => {
  test('forwards each event once, watermarks always, and marks each event with its input sequence', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_pass');
    const redis = await redisFor(ctx, p.name);
    const [e1, e2] = events(2);
    const s1 = await p.publish('ordered', 0, e1, e1?.eventId);
    await p.publish('ordered', 0, { kind: 'watermark', lamport: String(T0 + 10n), positions: { pg_a: '0/10' } }, 'wm:0:1');
    await p.publish('ordered', 0, e2, e2?.eventId);
    const out = p.collect('deduped', 0);
    const { gate } = startGate(ctx, p);
    await waitFor(() => out.messages.length === 3, { what: '3 messages on deduped.0', timeoutMs: 15_000 });
    expect(out.eventIds()).toEqual([e1?.eventId, e2?.eventId]);
    expect(out.watermarks()).toHaveLength(1);
    const slot = slotOf(p.name, e1);
    expect(await redis.hget(slot.key, slot.field)).toBe(String(s1));
    expect(await redis.pttl(slot.key)).toBeGreaterThan(WINDOW_MS - 10_000);
    expect(gate.stats()).toMatchObject({ forwarded: 2, watermarks: 1, duplicates: 0 });
  });

  test('(a) a true duplicate — same eventId claimed by a different input message — is dropped and counted', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_dup');
    const redis = await redisFor(ctx, p.name);
    const [e1, e2, e3] = events(3);
    // e2 was forwarded earlier from another input message (sequence 999 of some earlier run).
    const slot = slotOf(p.name, e2);
    await redis.hset(slot.key, slot.field, '999');
    await redis.pexpire(slot.key, WINDOW_MS);
    for (const e of [e1, e2, e3]) await p.publish('ordered', 0, e, e?.eventId);
    // And the same event again in the stream, as a replay past JetStream's window would put it.
    await p.publish('ordered', 0, e3);
    const e4 = events(1, 3)[0];
    await p.publish('ordered', 0, e4, e4?.eventId);
    const out = p.collect('deduped', 0);
    const { gate } = startGate(ctx, p);
    await waitFor(() => out.eventIds().includes(e4?.eventId ?? ''), { what: 'the last event forwarded', timeoutMs: 15_000 });
    await sleep(200);
    expect(out.eventIds()).toEqual([e1?.eventId, e3?.eventId, e4?.eventId]);
    expect(gate.stats()).toMatchObject({ forwarded: 3, duplicates: 1, belowLastKey: 1 });
  });

  test('(b) a gate that died between SET and forward: the redelivered message passes', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_redeliver');
    const redis = await redisFor(ctx, p.name);
    const [e1, e2] = events(2);
    await p.publish('ordered', 0, e1, e1?.eventId);
    const s2 = await p.publish('ordered', 0, e2, e2?.eventId);
    // What the dead gate left behind: e2 claimed with its own input sequence, never forwarded.
    const slot = slotOf(p.name, e2);
    await redis.hset(slot.key, slot.field, String(s2));
    await redis.pexpire(slot.key, WINDOW_MS);
    const out = p.collect('deduped', 0);
    const { gate } = startGate(ctx, p);
    await waitFor(() => out.eventIds().length === 2, { what: 'both events forwarded', timeoutMs: 15_000 });
    expect(out.eventIds()).toEqual([e1?.eventId, e2?.eventId]);
    expect(gate.stats()).toMatchObject({ forwarded: 2, redeliveries: 1, duplicates: 0 });
  });

  test('(c) with Redis unreachable nothing is forwarded; when it is back everything passes exactly once', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_down');
    await redisFor(ctx, p.name);
    const proxy = await TcpProxy.start(ctx.servers.redis);
    ctx.defer('close proxy', () => proxy.close());
    const out = p.collect('deduped', 0);
    const { gate, store } = startGate(ctx, p, proxy.url());
    const first = events(5);
    for (const e of first) await p.publish('ordered', 0, e, e.eventId);
    await waitFor(() => out.eventIds().length === 5, { what: 'the first 5 events', timeoutMs: 15_000 });

    await proxy.cut();
    await waitFor(() => !store.isReady(), { what: 'the gate to notice Redis is gone', timeoutMs: 10_000 });
    const second = events(10, 5);
    for (const e of second) await p.publish('ordered', 0, e, e.eventId);
    await sleep(1_500);
    expect(out.eventIds()).toHaveLength(5);
    expect(gate.relay.health().consecutiveFailures).toBeGreaterThan(0);

    await proxy.restore();
    await waitFor(() => out.eventIds().length >= 15, { what: 'everything after Redis is back', timeoutMs: 20_000 });
    await sleep(300);
    expect(out.eventIds()).toEqual([...first, ...second].map((e) => e.eventId));
    expect(gate.stats()).toMatchObject({ duplicates: 0 });
    expect(gate.relay.health().failingSince).toBeUndefined();
  });

  test('an input that fits the stream but not max_payload once the gate adds its headers is dead-lettered with its size and the limit; the partition goes on (PITFALLS 25)', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_big');
    await redisFor(ctx, p.name);
    const maxPayload = p.bus.nc.info?.max_payload ?? 0;
    expect(maxPayload).toBeGreaterThan(0);
    const [before, big, after] = events(3);
    // The input carries only Nats-Msg-Id (~60 bytes of headers); the gate's output adds
    // Cdc-Resume-Seq, Cdc-Last-Key and Cdc-Trace-Id, which no longer fit.
    const target = maxPayload - 80;
    const padded = { ...big!, after: { ...big!.after, note: '' } };
    const note = 'x'.repeat(target - Buffer.byteLength(JSON.stringify(padded)));
    const bigEvent = { ...padded, after: { ...padded.after, note } };
    expect(Buffer.byteLength(JSON.stringify(bigEvent))).toBe(target);
    for (const e of [before, bigEvent, after]) await p.publish('ordered', 0, e, e?.eventId);
    const out = p.collect('deduped', 0);
    const { gate } = startGate(ctx, p);
    await waitFor(() => out.eventIds().includes(after!.eventId), { what: 'the event after the big one forwarded', timeoutMs: 15_000 });
    expect(out.eventIds()).toEqual([before!.eventId, after!.eventId]);
    const letters = await p.deadLetters('dedup-gate');
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({
      code: 'MESSAGE_TOO_LARGE',
      eventId: big!.eventId,
      table: 'public.items',
      lsn: big!.lsn,
      limit: maxPayload,
      payloadTruncated: true,
      payloadBytes: target,
    });
    expect((letters[0] as unknown as { bytes: number }).bytes).toBeGreaterThan(maxPayload);
    expect(letters[0]?.reason).toContain(`over the server's max_payload of ${maxPayload} bytes`);
    expect(gate.relay.health()).toMatchObject({ deadLettered: 1, consecutiveFailures: 0 });
  });
});
