/**
 * What the stages rely on in NATS JetStream: a publish carrying `Nats-Msg-Id` (the
 * `msgID` option) that repeats an id seen within the stream's duplicate_window is
 * acknowledged as a duplicate and not stored again (PITFALLS 11, 12).
 */
import { nanos } from '@nats-io/transport-node';
import { describe, expect, test } from '../harness/index.ts';

describe('NATS JetStream', () => {
  test('a second publish with the same Nats-Msg-Id is acknowledged as duplicate and stored once', async ({ ctx }) => {
    const { js, jsm } = await ctx.nats();
    const stream = ctx.uniqueName('dedup');
    const subject = `${stream}.events`;
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], duplicate_window: nanos(60_000) });
    ctx.defer(`delete stream ${stream}`, () => jsm.streams.delete(stream));

    const payload = JSON.stringify({ kind: 'change', eventId: 'e-1' });
    const first = await js.publish(subject, payload, { msgID: 'e-1', timeout: 5_000 });
    const second = await js.publish(subject, payload, { msgID: 'e-1', timeout: 5_000 });

    expect(first).toMatchObject({ stream, duplicate: false });
    expect(second).toMatchObject({ stream, duplicate: true });
    // The duplicate's PubAck points at the message already stored.
    expect(second.seq).toBe(first.seq);
    expect((await jsm.streams.info(stream)).state.messages).toBe(1);

    // A different id with the same payload is a new message: dedup is by id, not content.
    const third = await js.publish(subject, payload, { msgID: 'e-2', timeout: 5_000 });
    expect(third).toMatchObject({ duplicate: false, seq: first.seq + 1 });
    expect((await jsm.streams.info(stream)).state.messages).toBe(2);

    const stored = await jsm.streams.getMessage(stream, { seq: first.seq });
    expect(stored?.subject).toBe(subject);
    expect(stored?.header.get('Nats-Msg-Id')).toBe('e-1');
    expect(stored?.string()).toBe(payload);
  });
});
