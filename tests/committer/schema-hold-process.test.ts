/**
 * SCHEMA_CHANGES=fail in the real committer process: a change with a column the sink table
 * lacks holds it; /readyz says why (table, column, event id, LSN); ALTER TABLE on the sink
 * lets it go on by itself, and nothing is dead-lettered.
 */
import type { ChangeEvent } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { readyz } from '../harness/health.ts';
import { committerProcessEnv, createPublishingPipeline, createSinkDatabase, deadLetters, waitForWatermark } from './support.ts';

const P = 2;

describe('committer app, SCHEMA_CHANGES=fail', () => {
  test('a missing sink column holds the process, its code in /readyz and the error in the log; ALTER TABLE on the sink releases it', async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('holdp');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer)`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const typed = (events: ChangeEvent[]): ChangeEvent[] => events.map((event) => ({ ...event, columnTypes: { id: 23, qty: 23, colour: 25 } }));
    const held = typed(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', qty: '1', colour: 'red' } }]));
    await out.events(held);
    await out.watermark(log.watermark());
    await out.flush();
    const app = ctx.spawnApp('apps/committer/src/main.ts', { env: committerProcessEnv(ctx, pipeline, P, { SINK_DATABASE_URL: sink.url, SCHEMA_CHANGES: 'fail' }) });
    const listening = await app.waitForLine(/"msg":"health server listening"/, 30_000);
    const port = (JSON.parse(listening.line) as { port: number }).port;
    const down = await waitFor(
      async () => {
        const answer = await readyz(port);
        return answer.body.checks['committer']?.detail?.includes('SINK_SCHEMA_HELD') ? answer : undefined;
      },
      { what: '/readyz naming the held schema change', timeoutMs: 20_000 },
    );
    expect(down.status).toBe(503);
    // /readyz says the reason code only (probes are open to the network); the log says where.
    expect(down.body.checks['committer']).toEqual({ ok: false, detail: 'retrying:SINK_SCHEMA_HELD' });
    const failed = await app.waitForLine(/consumer batch failed; will retry.*SINK_SCHEMA_HELD|SINK_SCHEMA_HELD.*consumer batch failed; will retry/, 10_000);
    for (const part of [t, 'colour', `${held[0]?.eventId}`, `${held[0]?.commitLsn}`]) expect(failed.line).toContain(part);
    expect((await sink.db.query(`SELECT count(*)::int AS n FROM ${t}`)).rows[0].n).toBe(0);

    await sink.db.query(`ALTER TABLE ${t} ADD COLUMN colour text`);
    await waitForWatermark(sink.db, pipeline, P, log.lamport);
    expect((await sink.db.query(`SELECT id, qty, colour FROM ${t}`)).rows).toEqual([{ id: 1, qty: 1, colour: 'red' }]);
    await waitFor(async () => ((await readyz(port)).status === 200 ? true : undefined), { what: '/readyz 200 again', timeoutMs: 15_000 });
    expect(await deadLetters(bus, pipeline)).toEqual([]);
    app.kill('SIGTERM');
    expect((await app.waitForExit(20_000)).code).toBe(0);
  });
});
