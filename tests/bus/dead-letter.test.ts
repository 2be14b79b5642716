/**
 * A dead letter must fit in one NATS message whatever it carries (PITFALLS 25): a stage
 * whose dead-lettering fails restarts and meets the same poison again — a stall.
 */
import { Bus } from '@cdc/bus';
import { STAGES, dlqSubject, streamName, type DeadLetter } from '@cdc/core';
import pino from 'pino';
import { describe, expect, test } from '../harness/index.ts';

describe('bus dead letters', () => {
  test('a letter whose payload is over max_payload is stored with the payload cut to fit, payloadTruncated and payloadBytes; a small one is stored whole', async ({ ctx }) => {
    const name = ctx.uniqueName('dlq_size');
    const bus = await Bus.create({ url: ctx.servers.nats, name: `test:${name}`, logger: pino({ level: 'silent' }) });
    ctx.defer('bus close', () => bus.close());
    await bus.ensurePipelineStreams(name);
    ctx.defer(`delete streams of ${name}`, async () => {
      for (const stage of [...STAGES, 'dlq'] as const) await bus.jsm.streams.delete(streamName(name, stage)).catch(() => undefined);
    });
    const maxPayload = bus.nc.info?.max_payload ?? 0;
    expect(maxPayload).toBeGreaterThan(0);

    // JSON in JSON: quotes and backslashes grow when escaped; multi-byte characters count as bytes.
    const unit = '{"v":"a\\"b","é":"€𝄞"}';
    const huge = unit.repeat(Math.ceil((2.5 * 1024 * 1024) / unit.length));
    const base: Omit<DeadLetter, 'payload' | 'eventId'> = { stage: 'committer', reason: 'record too large', code: 'RECORD_TOO_LARGE', table: 'public.t', at: new Date().toISOString() };
    await bus.deadLetter(name, { ...base, eventId: 'big', payload: huge });
    await bus.deadLetter(name, { ...base, eventId: 'small', payload: unit });

    const stream = streamName(name, 'dlq');
    const first = await bus.jsm.streams.getMessage(stream, { seq: 1 });
    const second = await bus.jsm.streams.getMessage(stream, { seq: 2 });
    expect(first?.subject).toBe(dlqSubject(name, 'committer'));
    expect(first!.data.length).toBeLessThanOrEqual(maxPayload);
    const big = first!.json<DeadLetter>();
    expect(big).toMatchObject({ ...base, eventId: 'big', payloadTruncated: true, payloadBytes: Buffer.byteLength(huge, 'utf8') });
    expect(big.payload.length).toBeGreaterThan(100_000);
    expect(huge.startsWith(big.payload)).toBe(true);
    const small = second!.json<DeadLetter>();
    expect(small).toEqual({ ...base, eventId: 'small', payload: unit });
  });
});
