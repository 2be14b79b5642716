/**
 * Dead letters of two sinks never dedupe each other (PITFALLS 24): the PostgreSQL and the
 * Kafka committer of one pipeline both refuse the same event within JetStream's duplicate
 * window; the dead-letter stream keeps both letters, each naming its stage and sink.
 */
import type { ChangeEvent } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { startKafkaCommitter } from '../kafka/support.ts';
import { createPublishingPipeline, createSinkDatabase, deadLetters, startCommitter } from './support.ts';

const P = 2;

describe('dead letters', () => {
  test('the same event refused by both sinks leaves two letters, one per sink, and a redelivery adds none', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('dl');
    await sink.db.query(`CREATE TABLE public.${name} (id integer PRIMARY KEY, day date, _cdc_lsn pg_lsn, _cdc_seq integer)`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const t = `public.${name}`;
    // date OID 1082: PostgreSQL refuses the cast, the Kafka converter refuses the text.
    const typed = (events: ChangeEvent[]): ChangeEvent[] => events.map((event) => ({ ...event, columnTypes: { id: 23, day: 1082 } }));
    const good = typed(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', day: '2024-03-04' } }]));
    const poison = typed(log.transaction([{ table: t, op: 'insert', key: ['2'], after: { id: '2', day: 'not a day' } }]));
    const after = typed(log.transaction([{ table: t, op: 'insert', key: ['3'], after: { id: '3', day: '2024-12-31' } }]));
    await out.events([...good, ...poison, ...after]);
    await out.watermark(log.watermark());
    await out.flush();

    const pgCommitter = await startCommitter(ctx, { pipeline, partitions: P, sinkUrl: sink.url, sinkName: 'postgres' });
    const kafkaCommitter = await startKafkaCommitter(ctx, {
      pipeline,
      partitions: P,
      bus,
      sinkName: 'kafka',
      checkpointTopic: ctx.uniqueName('ckpt'),
      records: { topicPrefix: ctx.uniqueName('dbz'), tombstones: true, transactionMetadata: false },
    });
    const letters = await waitFor(
      async () => {
        const found = await deadLetters(bus, pipeline);
        return found.length >= 2 ? found : undefined;
      },
      { what: 'a dead letter from each sink', timeoutMs: 30_000 },
    );
    const bySink = new Map(letters.map((letter) => [letter.sink, letter]));
    expect([...bySink.keys()].sort()).toEqual(['kafka', 'postgres']);
    for (const sinkName of ['kafka', 'postgres']) {
      expect(bySink.get(sinkName)).toMatchObject({ stage: 'committer', sink: sinkName, eventId: poison[0]?.eventId, table: t, lsn: poison[0]?.commitLsn });
    }
    expect(bySink.get('postgres')?.code).toBe('SINK_VALUE_REFUSED');
    expect(bySink.get('kafka')?.reason).toContain('ISO date');
    const { rows } = await sink.db.query(`SELECT id, day::text AS day FROM public.${name} ORDER BY id`);
    expect(rows).toEqual([
      { id: 1, day: '2024-03-04' },
      { id: 3, day: '2024-12-31' },
    ]);
    expect(pgCommitter.stats().deadLettered).toBe(1);
    expect(kafkaCommitter.stats().deadLettered).toBe(1);

    // Each sink's own repeat of its letter (a committer restarted before its checkpoint)
    // is still absorbed by the stream: same stage, sink and event, same id.
    for (const letter of letters) await bus.deadLetter(pipeline, letter);
    expect(await deadLetters(bus, pipeline)).toHaveLength(2);
  });
});
