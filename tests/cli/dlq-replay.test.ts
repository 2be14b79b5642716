/**
 * `cdc dlq` against real servers (issue #13 item 4): a change the PostgreSQL sink refuses
 * (a CHECK constraint on the sink) is dead-lettered by the committer and listed by
 * `cdc dlq list --json` with its reason; once the constraint is fixed, `cdc dlq replay`
 * applies it exactly once (the audit trigger sees one write), a second replay changes
 * nothing and says so, and a replay of a letter whose cause is not fixed is refused with
 * the reason and writes nothing. The running committer is neither fenced nor moved.
 */
import type { ChangeEvent } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { addAuditTrigger, createPublishingPipeline, createSinkDatabase, deadLetters, startCommitter } from '../committer/support.ts';
import { cdc } from './support.ts';

describe('cdc dlq', () => {
  test('list shows the refused change with its reason; replay after the fix applies it once; a second replay changes nothing', { timeout: 180_000 }, async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('rp');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer CONSTRAINT qty_small CHECK (qty < 100), note text CONSTRAINT note_short CHECK (length(note) < 5))`);
    const audit = await addAuditTrigger(sink.db, t);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, 2);
    const typed = (events: ChangeEvent[]): ChangeEvent[] => events.map((event) => ({ ...event, columnTypes: { id: 23, qty: 23, note: 25 } }));
    const events = typed([
      ...log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', qty: '5', note: 'a' } }]),
      ...log.transaction([{ table: t, op: 'insert', key: ['2'], after: { id: '2', qty: '500', note: 'b' } }]),
      ...log.transaction([{ table: t, op: 'insert', key: ['3'], after: { id: '3', qty: '7', note: 'too long' } }]),
      ...log.transaction([{ table: t, op: 'insert', key: ['4'], after: { id: '4', qty: '9', note: 'd' } }]),
    ]);
    await out.events(events);
    await out.watermark(log.watermark());
    await out.flush();
    const committer = await startCommitter(ctx, { pipeline, partitions: 2, sinkUrl: sink.url, sinkName: 'postgres' });
    await waitFor(async () => ((await deadLetters(bus, pipeline)).length >= 2 ? true : undefined), { what: 'two dead letters', timeoutMs: 30_000 });
    await waitFor(async () => ((await sink.db.query(`SELECT 1 FROM ${t} WHERE id = 4`)).rowCount === 1 ? true : undefined), { what: 'the rows after them', timeoutMs: 30_000 });

    const env = { PIPELINE: pipeline, NATS_URL: ctx.servers.nats, SINK_DATABASE_URL: sink.url };
    const listed = await cdc(['dlq', 'list', '--json'], env);
    expect(listed.code).toBe(0);
    const letters = JSON.parse(listed.stdout) as { seq: number; stage: string; sink: string; code: string; reason: string; eventId: string; table: string }[];
    expect(letters).toHaveLength(2);
    const [qty, note] = [letters.find((l) => l.eventId === events[1]?.eventId), letters.find((l) => l.eventId === events[2]?.eventId)];
    expect(qty).toMatchObject({ stage: 'committer', sink: 'postgres', table: t });
    expect(qty?.reason).toContain('qty_small');
    expect(note?.reason).toContain('note_short');
    const human = await cdc(['dlq', 'list'], env);
    expect(human.stdout).toContain(qty?.code ?? '?');
    expect(human.stdout).toContain(t);
    expect(human.stdout.trim().split('\n')).toHaveLength(3); // header + two letters
    const shown = await cdc(['dlq', 'show', String(qty?.seq)], env);
    expect(JSON.parse(shown.stdout)).toMatchObject({ letter: { payload: { op: 'insert', key: ['2'], after: { qty: '500' } } } });

    // Fix one cause only; replay both: one applied, one refused with its reason (nothing written).
    await sink.db.query(`ALTER TABLE ${t} DROP CONSTRAINT qty_small`);
    const first = await cdc(['dlq', 'replay', String(qty?.seq), String(note?.seq), '--json'], env);
    expect(first.code).toBe(1); // one was refused again
    const outcomes = JSON.parse(first.stdout) as { seq: number; outcome: string; reason?: string }[];
    expect(outcomes.find((o) => o.seq === qty?.seq)).toMatchObject({ outcome: 'applied' });
    expect(outcomes.find((o) => o.seq === note?.seq)).toMatchObject({ outcome: 'refused' });
    expect(outcomes.find((o) => o.seq === note?.seq)?.reason).toContain('note_short');
    expect((await sink.db.query(`SELECT id, qty FROM ${t} ORDER BY id`)).rows).toEqual([
      { id: 1, qty: 5 },
      { id: 2, qty: 500 },
      { id: 4, qty: 9 },
    ]);

    // Again, after the second fix: the first letter is already replayed, the second applied now.
    await sink.db.query(`ALTER TABLE ${t} DROP CONSTRAINT note_short`);
    const second = await cdc(['dlq', 'replay', '--all', '--json'], env);
    expect(second.code).toBe(0);
    const again = JSON.parse(second.stdout) as { seq: number; outcome: string }[];
    expect(again.find((o) => o.seq === qty?.seq)).toMatchObject({ outcome: 'already-replayed' });
    expect(again.find((o) => o.seq === note?.seq)).toMatchObject({ outcome: 'applied' });
    const third = await cdc(['dlq', 'replay', '--all', '--json'], env);
    expect((JSON.parse(third.stdout) as { outcome: string }[]).map((o) => o.outcome)).toEqual(['already-replayed', 'already-replayed']);

    expect((await sink.db.query(`SELECT id, qty, note FROM ${t} ORDER BY id`)).rows).toEqual([
      { id: 1, qty: 5, note: 'a' },
      { id: 2, qty: 500, note: 'b' },
      { id: 3, qty: 7, note: 'too long' },
      { id: 4, qty: 9, note: 'd' },
    ]);
    // One write per change: the two replays once each, the others by the committer.
    expect((await sink.db.query(`SELECT op, id FROM ${audit} ORDER BY id`)).rows).toEqual(['1', '2', '3', '4'].map((id) => ({ op: 'INSERT', id })));
    // The committer still runs, unfenced.
    expect(committer.stats().deadLettered).toBe(2);
    await out.events(typed(log.transaction([{ table: t, op: 'insert', key: ['5'], after: { id: '5', qty: '1', note: 'e' } }])));
    await out.watermark(log.watermark());
    await out.flush();
    await waitFor(async () => ((await sink.db.query(`SELECT 1 FROM ${t} WHERE id = 5`)).rowCount === 1 ? true : undefined), { what: 'a change after the replays', timeoutMs: 30_000 });
  });
});
