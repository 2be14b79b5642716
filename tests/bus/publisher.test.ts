/**
 * The bus publisher against the real NATS server: PubAcks matched to their messages,
 * call order kept under a full window, duplicates recognised, and a publish no stream
 * takes failing the publisher for good (PITFALLS 12).
 */
import { Bus, PublishError } from '@cdc/bus';
import { STAGES, stageSubject, streamName } from '@cdc/core';
import pino from 'pino';
import { describe, expect, test, type TestContext } from '../harness/index.ts';

async function pipelineBus(ctx: TestContext, prefix: string): Promise<{ bus: Bus; name: string }> {
  const name = ctx.uniqueName(prefix);
  const bus = await Bus.create({ url: ctx.servers.nats, name: `test:${name}`, logger: pino({ level: 'silent' }) });
  ctx.defer('bus close', () => bus.close());
  await bus.ensurePipelineStreams(name);
  ctx.defer(`delete streams of ${name}`, async () => {
    for (const stage of [...STAGES, 'dlq'] as const) await bus.jsm.streams.delete(streamName(name, stage)).catch(() => undefined);
  });
  return { bus, name };
}

describe('bus publisher', () => {
  test('each PubAck belongs to its message: stored in call order through a small window, repeats of a msgId are duplicates', async ({ ctx }) => {
    const { bus, name } = await pipelineBus(ctx, 'pub_order');
    const publisher = bus.publisher({ maxInFlight: 7 });
    const subject = stageSubject(name, 'raw', 0);
    const acks = Array.from({ length: 300 }, (_, i) =>
      publisher.publish(subject, { i }, { msgId: `m${i}`, headers: { 'Cdc-Resume-Seq': String(i + 1) } }),
    );
    const stored = await Promise.all(acks);
    expect(stored.map((ack) => ack.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(stored.every((ack) => ack.stream === streamName(name, 'raw') && !ack.duplicate)).toBe(true);
    await publisher.flush();
    expect(publisher.stats).toMatchObject({ published: 300, duplicates: 0, inFlight: 0 });

    const again = await publisher.publish(subject, { i: 5 }, { msgId: 'm5' });
    expect(again).toMatchObject({ duplicate: true, seq: 6 });
    expect(publisher.stats.duplicates).toBe(1);

    const reader = await bus.openReader({ stream: streamName(name, 'raw'), subject, startSeq: 1 });
    const read: Awaited<ReturnType<typeof reader.nextBatch>> = [];
    while (read.length < 301) {
      const batch = await reader.nextBatch(500, 2_000);
      if (batch.length === 0) break;
      read.push(...batch);
    }
    await bus.closeReader(reader);
    expect(read).toHaveLength(300);
    expect(read.map((m) => m.json<{ i: number }>().i)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(read[41]?.header('Nats-Msg-Id')).toBe('m41');
    expect(read[41]?.header('Cdc-Resume-Seq')).toBe('42');
  });

  test('a publish no stream takes fails with a PublishError, and every later publish and flush fail too', async ({ ctx }) => {
    const { bus, name } = await pipelineBus(ctx, 'pub_fail');
    const publisher = bus.publisher({ maxInFlight: 16 });
    await publisher.publish(stageSubject(name, 'raw', 0), { ok: true }, { msgId: 'ok' });
    const lost = publisher.publish(`cdc.${name}.nowhere.0`, { lost: true }, { msgId: 'lost' });
    await expect(lost).rejects.toBeInstanceOf(PublishError);
    await expect(lost).rejects.toThrow(/no responders|503/);
    await expect(publisher.publish(stageSubject(name, 'raw', 0), { later: true }, { msgId: 'later' })).rejects.toBeInstanceOf(PublishError);
    await expect(publisher.flush()).rejects.toBeInstanceOf(PublishError);
  });

  test('a close fails what is still waiting for its PubAck instead of leaving it hanging', async ({ ctx }) => {
    const { bus, name } = await pipelineBus(ctx, 'pub_close');
    const publisher = bus.publisher({ maxInFlight: 4 });
    const pending = Array.from({ length: 10 }, (_, i) => publisher.publish(stageSubject(name, 'raw', 0), { i }, { msgId: `c${i}` }));
    publisher.close();
    const results = await Promise.allSettled(pending);
    expect(results.every((r) => r.status === 'rejected' || r.status === 'fulfilled')).toBe(true);
    expect(results.some((r) => r.status === 'rejected')).toBe(true);
    await expect(publisher.publish(stageSubject(name, 'raw', 0), {}, { msgId: 'after' })).rejects.toBeInstanceOf(PublishError);
  });

  test('a message over max_payload fails the publisher on the spot, and nothing queued after it is stored (a stage would checkpoint past it)', async ({ ctx }) => {
    const { bus, name } = await pipelineBus(ctx, 'pub_big');
    const publisher = bus.publisher({ maxInFlight: 16 });
    const subject = stageSubject(name, 'raw', 0);
    const maxPayload = bus.nc.info?.max_payload ?? 0;
    expect(maxPayload).toBeGreaterThan(0);
    // Queued together: they leave in one send.
    const first = publisher.publish(subject, { i: 0 }, { msgId: 'b0' });
    const big = publisher.publish(subject, new Uint8Array(maxPayload + 1), { msgId: 'b1' });
    const after = publisher.publish(subject, { i: 2 }, { msgId: 'b2' });
    const results = await Promise.allSettled([first, big, after]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    await expect(big).rejects.toBeInstanceOf(PublishError);
    await expect(big).rejects.toThrow(/max_payload/);
    const info = await bus.jsm.streams.info(streamName(name, 'raw'));
    expect(info.state.messages).toBe(1);
  });
});
