/**
 * The real committer process, SIGKILLed at random moments while it applies many source
 * transactions that each span all 4 partitions. A poller reads the sink the whole time,
 * each probe one snapshot: a source transaction is visible entirely or not at all, and
 * in commit order. At the end every row is there and, per the audit trigger, every
 * version was written exactly once across all the crashes.
 */
import { partitionOf, sleep } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import {
  DedupedPublisher,
  SourceLog,
  addAuditTrigger,
  committerProcessEnv,
  createPipeline,
  createSinkDatabase,
  waitForWatermark,
  type RowChange,
} from './support.ts';

const P = 4;
const TRANSACTIONS = 250;
const KILLS = 4;
const NEW_ROW_BASE = 10_000;

describe('committer process', () => {
  test('SIGKILLed mid-way many times: the sink never shows part of a source transaction, nothing is applied twice', async ({ ctx }) => {
    const { url, db } = await createSinkDatabase(ctx);
    await db.query('CREATE TABLE public.acct (id integer PRIMARY KEY, txn integer NOT NULL, v integer NOT NULL)');
    const audit = await addAuditTrigger(db, 'public.acct');
    const { pipeline, bus } = await createPipeline(ctx);

    // One key per partition: every transaction updates all four, so it spans every partition.
    const shared: number[] = [];
    for (let id = 1; shared.length < P; id++) {
      if (!shared.some((other) => partitionOf('public.acct', [String(other)], P) === partitionOf('public.acct', [String(id)], P))) shared.push(id);
    }
    const log = new SourceLog({ partitions: P });
    const out = new DedupedPublisher(bus, pipeline, P);
    for (let j = 1; j <= TRANSACTIONS; j++) {
      const changes: RowChange[] = [
        ...shared.map((id) => ({ table: 'public.acct', op: j === 1 ? ('insert' as const) : ('update' as const), key: [String(id)], after: { id: String(id), txn: String(j), v: String(j) } })),
        ...Array.from({ length: 4 }, (_, i) => {
          const id = String(NEW_ROW_BASE + j * 4 + i);
          return { table: 'public.acct', op: 'insert' as const, key: [id], after: { id, txn: String(j), v: String(j) } };
        }),
      ];
      await out.events(log.transaction(changes));
      await out.watermark(log.watermark());
    }
    await out.flush();

    // The poller: one statement = one snapshot.
    const violations: string[] = [];
    let probes = 0;
    let applied = 0;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const { rows } = await db.query<{ shared: number[] | null; groups: [number, number][] }>(
          `SELECT (SELECT array_agg(v ORDER BY id) FROM public.acct WHERE id = ANY($1::int[])) AS shared,
                  (SELECT coalesce(json_agg(json_build_array(txn, n) ORDER BY txn), '[]'::json)
                     FROM (SELECT txn, count(*)::int AS n FROM public.acct WHERE id >= $2 GROUP BY txn) g) AS groups`,
          [shared, NEW_ROW_BASE],
        );
        probes += 1;
        const row = rows[0];
        const values = row?.shared ?? [];
        const groups = row?.groups ?? [];
        const head = values[0] ?? 0;
        if (values.length !== 0 && (values.length !== P || values.some((v) => v !== head))) violations.push(`shared keys differ: ${values.join(',')}`);
        if (groups.some(([, n]) => n !== 4)) violations.push(`a transaction is partly visible: ${JSON.stringify(groups.filter(([, n]) => n !== 4))}`);
        if (groups.length !== head || (groups.at(-1)?.[0] ?? 0) !== head) violations.push(`transactions 1..${head} expected, saw ${groups.length} (last ${groups.at(-1)?.[0]})`);
        applied = head;
        await sleep(2);
      }
    })();

    const env = committerProcessEnv(ctx, pipeline, P, {
      SINK_DATABASE_URL: url,
      BATCH_MAX_EVENTS: '20', // not a multiple of a transaction's 8 events: a batch must overshoot, never split
    });
    const killedAt: number[] = [];
    try {
      for (let kill = 0; kill < KILLS; kill++) {
        const app = ctx.spawnApp('apps/committer/src/main.ts', { env, name: `committer-${kill}` });
        await app.waitForLine(/"msg":"health server listening"/, 30_000);
        // A random moment: some transactions further than where this run started.
        const target = Math.min(TRANSACTIONS - 1, applied + 5 + Math.floor(Math.random() * 30));
        await waitFor(() => applied >= target, { what: `the committer to reach transaction ${target}`, timeoutMs: 30_000, intervalMs: 1 });
        app.kill('SIGKILL');
        const status = await app.waitForExit(10_000);
        expect(status.signal).toBe('SIGKILL');
        killedAt.push(applied);
      }
      const last = ctx.spawnApp('apps/committer/src/main.ts', { env, name: 'committer-final' });
      const listening = await last.waitForLine(/"msg":"health server listening"/, 30_000);
      expect(JSON.parse(listening.line)).toMatchObject({ port: expect.any(Number) });
      await waitForWatermark(db, pipeline, P, log.lamport, 60_000);
      // The process told etcd (after its COMMITs) how far each partition is committed.
      const etcd = ctx.etcd();
      await waitFor(
        async () => {
          const stored = Object.values(await etcd.getAll().prefix(`/checkpoints/${pipeline}/`).strings()).map((text) => JSON.parse(text));
          return stored.length === P && stored.every((c) => c.positions?.src === log.lastCommitLsn);
        },
        { what: 'the final positions of every partition in etcd', timeoutMs: 10_000 },
      );
      last.kill('SIGTERM');
      const status = await last.waitForExit(15_000);
      expect(status.code).toBe(0);
      // The drain logs a last progress line with the counters.
      const progress = await last.waitForLine(/"msg":"progress"/, 1_000);
      expect(JSON.parse(progress.line)).toMatchObject({
        applied: expect.any(Number),
        batches: expect.any(Number),
        events_per_s: expect.any(Number),
        dead_lettered: 0,
      });
    } finally {
      polling = false;
      await poller;
    }

    console.log(`[committer] killed at transactions ${killedAt.join(', ')} of ${TRANSACTIONS}; ${probes} snapshot probes`);
    expect(violations.slice(0, 5)).toEqual([]);
    expect(killedAt.filter((at) => at > 0 && at < TRANSACTIONS)).toHaveLength(KILLS);
    expect(probes).toBeGreaterThan(50);

    const final = await db.query<{ v: number; n: string }>('SELECT v, count(*) AS n FROM public.acct GROUP BY v');
    expect(final.rows).toEqual(expect.arrayContaining([{ v: TRANSACTIONS, n: String(4 + 4) }]));
    expect(Number((await db.query('SELECT count(*) AS n FROM public.acct')).rows[0].n)).toBe(P + 4 * TRANSACTIONS);
    // Exactly once across every crash: each (key, version) written once.
    const twice = await db.query(`SELECT op, id, lsn::text, seq FROM ${audit} GROUP BY 1, 2, 3, 4 HAVING count(*) > 1`);
    expect(twice.rows).toEqual([]);
    expect(Number((await db.query(`SELECT count(*) AS n FROM ${audit}`)).rows[0].n)).toBe(P + P * (TRANSACTIONS - 1) + 4 * TRANSACTIONS);
  });
});
