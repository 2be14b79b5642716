/**
 * A source transaction far larger than what the committer may buffer (STREAM_TRANSACTIONS_ABOVE
 * 1,000 events, chunks of 500) arrives: the committer streams it through ONE open sink
 * transaction. The real process is SIGKILLed while chunks are being applied, several
 * times; a poller reads the sink the whole time. The transaction is never partly
 * visible, and at the end every row is there, each written exactly once (audit trigger).
 */
import { describe, expect, test } from '../harness/index.ts';
import { DedupedPublisher, SourceLog, addAuditTrigger, createPipeline, committerProcessEnv, createSinkDatabase, publishBigBetweenSmall, waitForNthLine, waitForWatermark } from './support.ts';

const P = 4;
const BIG = 30_000;
const KILLS = 3;

describe('committer process, one source transaction larger than its buffers', () => {
  test('streamed in chunks through one sink transaction: never partly visible, exactly once across kills mid-stream', async ({ ctx }) => {
    const { url, db } = await createSinkDatabase(ctx);
    await db.query('CREATE TABLE public.big (id integer PRIMARY KEY, txn integer NOT NULL)');
    const audit = await addAuditTrigger(db, 'public.big');
    const { pipeline, bus } = await createPipeline(ctx);

    const log = new SourceLog({ partitions: P });
    const out = new DedupedPublisher(bus, pipeline, P);
    // A small transaction before and after the big one: neither may be merged into it.
    await publishBigBetweenSmall(out, log, { table: 'public.big', size: BIG });

    const violations: string[] = [];
    let probes = 0;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const { rows: counts } = await db.query<{ txn: number; n: number }>('SELECT txn, count(*)::int AS n FROM public.big GROUP BY txn ORDER BY txn');
        probes += 1;
        const seen = new Map(counts.map((row) => [row.txn, row.n]));
        if ((seen.get(2) ?? BIG) !== BIG) violations.push(`the big transaction is partly visible: ${seen.get(2)} of ${BIG} rows`);
        if (seen.has(2) && !seen.has(1)) violations.push('the big transaction is visible before the one committed before it');
        if (seen.has(3) && !seen.has(2)) violations.push('the transaction after the big one is visible before it');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();

    const env = committerProcessEnv(ctx, pipeline, P, {
      SINK_DATABASE_URL: url,
      BATCH_MAX_EVENTS: '500',
      STREAM_TRANSACTIONS_ABOVE: '1000',
      LOG_LEVEL: 'debug',
    });
    const chunksBeforeKill: number[] = [];
    try {
      for (let kill = 0; kill < KILLS; kill++) {
        const app = ctx.spawnApp('apps/committer/src/main.ts', { env, name: `committer-${kill}` });
        // Kill it with the sink transaction open, a few chunks in (a different depth each time).
        const depth = 3 + kill * 7;
        await waitForNthLine(app, /"msg":"chunk applied; sink transaction stays open/, depth, 60_000);
        app.kill('SIGKILL');
        const status = await app.waitForExit(10_000);
        expect(status.signal).toBe('SIGKILL');
        chunksBeforeKill.push(depth);
        expect(Number((await db.query('SELECT count(*) AS n FROM public.big WHERE txn = 2')).rows[0].n)).toBe(0);
      }
      const last = ctx.spawnApp('apps/committer/src/main.ts', { env, name: 'committer-final' });
      const committed = JSON.parse((await last.waitForLine(/"msg":"streamed transaction committed"/, 120_000)).line) as { events: number; chunks: number };
      // The big transaction and the one after it may share the last chunk's sink transaction.
      expect(committed.events).toBeGreaterThanOrEqual(BIG);
      expect(committed.chunks).toBeGreaterThan(BIG / 1_000);
      await waitForWatermark(db, pipeline, P, log.lamport, 60_000);
      last.kill('SIGTERM');
      expect((await last.waitForExit(15_000)).code).toBe(0);
    } finally {
      polling = false;
      await poller;
    }

    console.log(`[committer] ${BIG}-row transaction streamed; killed ${KILLS}× after ${chunksBeforeKill.join(', ')} chunks; ${probes} snapshot probes`);
    expect(violations.slice(0, 5)).toEqual([]);
    expect(probes).toBeGreaterThan(20);
    const final = await db.query<{ txn: number; n: number }>('SELECT txn, count(*)::int AS n FROM public.big GROUP BY txn ORDER BY txn');
    expect(final.rows).toEqual([
      { txn: 1, n: 3 },
      { txn: 2, n: BIG },
      { txn: 3, n: 3 },
    ]);
    // Exactly once across every crash: the chunks of killed runs were rolled back, none stayed.
    const twice = await db.query(`SELECT op, id, lsn::text, seq FROM ${audit} GROUP BY 1, 2, 3, 4 HAVING count(*) > 1`);
    expect(twice.rows).toEqual([]);
    expect(Number((await db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n)).toBe(BIG + 6);
  });
});
