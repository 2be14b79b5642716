/**
 * `cdc dlq replay` against real servers, the cases the version guard alone gets wrong or
 * that need saying: an old insert whose row a later delete removed is `superseded` (the
 * sink keeps no tombstone, so applying it would bring back a row the source deleted); an
 * old insert whose row a later update rewrote is applied as a no-op (the guard); a
 * dry run writes nothing and records nothing; `list --stage/--limit` filter; bad
 * arguments fail with a clear message, an unreachable sink without its password; a later
 * TRUNCATE (partition 0) supersedes too; two replays of one letter at once apply it once;
 * every second replay reports `already-replayed`; a delete applied while a replay runs is
 * seen by it (the replay reads the stream's tail holding the owner row FOR SHARE).
 */
import { asPartition, partitionOf, type ChangeEvent } from '@cdc/core';
import pg from 'pg';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { addAuditTrigger, createPublishingPipeline, createSinkDatabase, deadLetters, startCommitter } from '../committer/support.ts';
import { cdc } from './support.ts';

describe('cdc dlq replay', () => {
  test('a letter a later delete superseded is not applied; one a later update overwrote writes nothing; the rest once', { timeout: 180_000 }, async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const name = ctx.uniqueName('cli_sup');
    const t = `public.${name}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer CONSTRAINT qty_small CHECK (qty < 100))`);
    const audit = await addAuditTrigger(sink.db, t);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, 2);
    const typed = (events: ChangeEvent[]): ChangeEvent[] => events.map((event) => ({ ...event, columnTypes: { id: 23, qty: 23 } }));
    const row = (id: string, qty: string): { id: string; qty: string } => ({ id, qty });
    const events = typed([
      ...log.transaction([{ table: t, op: 'insert', key: ['1'], after: row('1', '500') }]), // refused
      ...log.transaction([{ table: t, op: 'delete', key: ['1'], before: { id: '1' } }]), // applied (no row)
      ...log.transaction([{ table: t, op: 'insert', key: ['2'], after: row('2', '600') }]), // refused
      ...log.transaction([{ table: t, op: 'update', key: ['2'], after: row('2', '7') }]), // applied: the row, newer
      ...log.transaction([{ table: t, op: 'insert', key: ['3'], after: row('3', '700') }]), // refused
    ]);
    await out.events(events);
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: 2, sinkUrl: sink.url, sinkName: 'postgres' });
    await waitFor(async () => ((await deadLetters(bus, pipeline)).length >= 3 ? true : undefined), { what: 'three dead letters', timeoutMs: 30_000 });
    await waitFor(async () => ((await sink.db.query(`SELECT 1 FROM ${t} WHERE id = 2`)).rowCount === 1 ? true : undefined), { what: 'the update of row 2', timeoutMs: 30_000 });

    // A letter of another stage, as the gate writes one for an item it cannot read.
    await bus.deadLetter(pipeline, { stage: 'dedup-gate', reason: 'not JSON', code: 'INVALID_JSON', eventId: 'cli-gate-1', payload: '{', at: new Date().toISOString() });
    const env = { PIPELINE: pipeline, NATS_URL: ctx.servers.nats, SINK_DATABASE_URL: sink.url };
    expect(JSON.parse((await cdc(['dlq', 'list', '--json'], env)).stdout)).toHaveLength(4);
    const letters = JSON.parse((await cdc(['dlq', 'list', '--json', '--stage', 'committer'], env)).stdout) as { seq: number; eventId: string; reason: string }[];
    expect(letters).toHaveLength(3);
    const gate = JSON.parse((await cdc(['dlq', 'list', '--json', '--stage', 'dedup-gate'], env)).stdout) as { seq: number; code: string }[];
    expect(gate).toMatchObject([{ code: 'INVALID_JSON' }]);
    const seqOf = (event: ChangeEvent | undefined): number => letters.find((l) => l.eventId === event?.eventId)?.seq ?? -1;
    const [deleted, overwritten, plain] = [seqOf(events[0]), seqOf(events[2]), seqOf(events[4])];
    expect(letters.every((l) => l.reason.includes('qty_small'))).toBe(true);

    // Filters and argument checks.
    expect(JSON.parse((await cdc(['dlq', 'list', '--json', '--limit', '1'], env)).stdout)).toHaveLength(1);
    expect(JSON.parse((await cdc(['dlq', 'list', '--json', '--stage', 'reader'], env)).stdout)).toEqual([]);
    const notMine = await cdc(['dlq', 'replay', String(gate[0]?.seq), '--json'], env);
    expect(notMine.code).toBe(0);
    expect(JSON.parse(notMine.stdout)).toMatchObject([{ outcome: 'not-replayable', reason: 'a dedup-gate letter never reached a sink; fix its cause at the dedup-gate' }]);
    const bad = await cdc(['dlq', 'list', '--limit', 'lots'], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toContain('not a positive integer');
    const missing = await cdc(['dlq', 'replay', '999999'], env);
    expect(missing.code).not.toBe(0);
    expect(missing.stdout).toContain('no dead letter at sequence 999999');

    await sink.db.query(`ALTER TABLE ${t} DROP CONSTRAINT qty_small`);
    const rowsNow = async (): Promise<unknown[]> => (await sink.db.query(`SELECT id, qty FROM ${t} ORDER BY id`)).rows;
    expect(await rowsNow()).toEqual([{ id: 2, qty: 7 }]);

    // A dry run says what would happen, writes and records nothing.
    const dry = JSON.parse((await cdc(['dlq', 'replay', '--all', '--dry-run', '--json'], env)).stdout) as { seq: number; outcome: string }[];
    expect(Object.fromEntries(dry.map((r) => [r.seq, r.outcome]))).toEqual({ [deleted]: 'superseded', [overwritten]: 'would-apply', [plain]: 'would-apply' });
    expect(await rowsNow()).toEqual([{ id: 2, qty: 7 }]);

    const first = await cdc(['dlq', 'replay', '--all', '--json'], env);
    expect(first.code).toBe(0);
    const results = JSON.parse(first.stdout) as { seq: number; outcome: string; reason?: string; rowsWritten?: number }[];
    const bySeq = new Map(results.map((r) => [r.seq, r]));
    expect(bySeq.get(deleted)).toMatchObject({ outcome: 'superseded' });
    expect(bySeq.get(deleted)?.reason).toContain('later delete');
    expect(bySeq.get(overwritten)).toMatchObject({ outcome: 'applied', rowsWritten: 0 });
    expect(bySeq.get(plain)).toMatchObject({ outcome: 'applied', rowsWritten: 1 });
    // Row 1 stays deleted, row 2 keeps its newer value, row 3 arrives.
    expect(await rowsNow()).toEqual([
      { id: 2, qty: 7 },
      { id: 3, qty: 700 },
    ]);

    // list --replays says which letters are done, and how.
    const listed = JSON.parse((await cdc(['dlq', 'list', '--replays', '--json'], env)).stdout) as { seq: number; replay: { outcome: string } | null }[];
    expect(Object.fromEntries(listed.map((l) => [l.seq, l.replay?.outcome ?? null]))).toEqual({ [deleted]: 'superseded', [overwritten]: 'applied', [plain]: 'applied', [gate[0]?.seq ?? -1]: null });
    expect((await cdc(['dlq', 'list', '--replays', '--stage', 'committer'], env)).stdout).toMatch(/replayed[\s\S]*superseded 20/);

    const second = await cdc(['dlq', 'replay', String(deleted), String(overwritten), String(plain)], env);
    expect(second.code).toBe(0);
    expect(second.stdout.match(/already-replayed/g)).toHaveLength(3);
    expect(second.stdout).toContain('(superseded)');
    expect(await rowsNow()).toEqual([
      { id: 2, qty: 7 },
      { id: 3, qty: 700 },
    ]);
    // A sink that cannot be reached is named without its password.
    const unreachable = await cdc(['dlq', 'replay', String(plain)], { ...env, SINK_DATABASE_URL: 'postgres://cdc:hunter2@127.0.0.1:1/none' });
    expect(unreachable.code).not.toBe(0);
    expect(unreachable.stdout).toContain('cannot reach the sink at postgres://cdc:***@127.0.0.1:1/none');
    expect(unreachable.stdout).not.toContain('hunter2');
    // Each row written once: row 2 by the committer's update, row 3 by the replay.
    expect((await sink.db.query(`SELECT op, id FROM ${audit} ORDER BY id`)).rows).toEqual([
      { op: 'INSERT', id: '2' },
      { op: 'INSERT', id: '3' },
    ]);
  });

  test('a letter whose table a later TRUNCATE emptied (sent to partition 0) is superseded', { timeout: 120_000 }, async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const t = `public.${ctx.uniqueName('cli_trunc')}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer CONSTRAINT qty_small CHECK (qty < 100))`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, 2);
    // A key of partition 1, so the truncate (partition 0, as the reader sends it) is elsewhere.
    const id = ['1', '2', '3', '4', '5', '6', '7', '8'].find((k) => partitionOf(t, [k], 2) === 1);
    if (id === undefined) throw new Error('no key of partition 1');
    const typed = (events: ChangeEvent[]): ChangeEvent[] => events.map((event) => ({ ...event, columnTypes: { id: 23, qty: 23 } }));
    const [refused] = typed(log.transaction([{ table: t, op: 'insert', key: [id], after: { id, qty: '500' } }]));
    const [truncate] = typed(log.transaction([{ table: t, op: 'truncate', key: [], keyColumns: [] }]));
    if (!refused || !truncate) throw new Error('no events');
    await out.event(refused);
    await out.event(truncate, asPartition(0, 2));
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: 2, sinkUrl: sink.url, sinkName: 'postgres' });
    await waitFor(async () => ((await deadLetters(bus, pipeline)).length >= 1 ? true : undefined), { what: 'the dead letter', timeoutMs: 30_000 });
    await sink.db.query(`ALTER TABLE ${t} DROP CONSTRAINT qty_small`);

    const env = { PIPELINE: pipeline, NATS_URL: ctx.servers.nats, SINK_DATABASE_URL: sink.url };
    const [result] = JSON.parse((await cdc(['dlq', 'replay', '--all', '--json'], env)).stdout) as { outcome: string; reason: string }[];
    expect(result?.outcome).toBe('superseded');
    expect(result?.reason).toContain(`later truncate (lsn ${truncate.commitLsn}`);
    expect((await sink.db.query(`SELECT count(*)::int AS n FROM ${t}`)).rows).toEqual([{ n: 0 }]);
  });

  test('two replays of one letter at the same time: one applies it, the other says already-replayed', { timeout: 120_000 }, async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const t = `public.${ctx.uniqueName('cli_race')}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer CONSTRAINT qty_small CHECK (qty < 100))`);
    const audit = await addAuditTrigger(sink.db, t);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, 1);
    await out.events(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', qty: '500' } }]).map((e) => ({ ...e, columnTypes: { id: 23, qty: 23 } })));
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: 1, sinkUrl: sink.url, sinkName: 'postgres' });
    await waitFor(async () => ((await deadLetters(bus, pipeline)).length >= 1 ? true : undefined), { what: 'the dead letter', timeoutMs: 30_000 });
    await sink.db.query(`ALTER TABLE ${t} DROP CONSTRAINT qty_small`);

    const env = { PIPELINE: pipeline, NATS_URL: ctx.servers.nats, SINK_DATABASE_URL: sink.url };
    const runs = await Promise.all([cdc(['dlq', 'replay', '--all', '--json'], env), cdc(['dlq', 'replay', '--all', '--json'], env)]);
    const outcomes = runs.map((run) => (JSON.parse(run.stdout) as { outcome: string }[])[0]?.outcome).sort();
    expect(outcomes, runs.map((run) => run.stdout).join('\n')).toEqual(['already-replayed', 'applied']);
    expect((await sink.db.query(`SELECT op, id FROM ${audit}`)).rows).toEqual([{ op: 'INSERT', id: '1' }]);
    expect((await sink.db.query(`SELECT qty FROM ${t}`)).rows).toEqual([{ qty: 500 }]);
  });

  test('a delete the committer applies while a replay runs is seen by it: the replay waits for the batch and is superseded', { timeout: 120_000 }, async ({ ctx }) => {
    const sink = await createSinkDatabase(ctx);
    const t = `public.${ctx.uniqueName('cli_lock')}`;
    await sink.db.query(`CREATE TABLE ${t} (id integer PRIMARY KEY, qty integer CONSTRAINT qty_small CHECK (qty < 100))`);
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, 1);
    const typed = (events: ChangeEvent[]): ChangeEvent[] => events.map((e) => ({ ...e, columnTypes: { id: 23, qty: 23 } }));
    await out.events(typed(log.transaction([{ table: t, op: 'insert', key: ['1'], after: { id: '1', qty: '500' } }])));
    await out.watermark(log.watermark());
    await out.flush();
    await startCommitter(ctx, { pipeline, partitions: 1, sinkUrl: sink.url, sinkName: 'postgres' });
    await waitFor(async () => ((await deadLetters(bus, pipeline)).length >= 1 ? true : undefined), { what: 'the dead letter', timeoutMs: 30_000 });
    await sink.db.query(`ALTER TABLE ${t} DROP CONSTRAINT qty_small`);

    // A committer batch in flight: it holds the owner row, as every batch does first.
    const batch = new pg.Client({ connectionString: sink.url });
    batch.on('error', () => undefined);
    await batch.connect();
    ctx.defer('end batch client', () => batch.end());
    await batch.query('BEGIN');
    await batch.query('SELECT epoch FROM public.cdc_owner WHERE pipeline = $1 FOR UPDATE', [pipeline]);

    const env = { PIPELINE: pipeline, NATS_URL: ctx.servers.nats, SINK_DATABASE_URL: sink.url };
    const replay = cdc(['dlq', 'replay', '--all', '--json'], env);
    // The replay has read the stream and waits for the batch...
    await waitFor(
      async () => ((await sink.db.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'cdc-cli-replay' AND wait_event_type = 'Lock'`)).rowCount === 1 ? true : undefined),
      { what: 'the replay waiting for the batch', timeoutMs: 30_000 },
    );
    // ...which carries a delete of the row, published after that read.
    await out.events(typed(log.transaction([{ table: t, op: 'delete', key: ['1'], before: { id: '1' } }])));
    await out.watermark(log.watermark());
    await out.flush();
    await batch.query('COMMIT');

    const [result] = JSON.parse((await replay).stdout) as { outcome: string; reason: string }[];
    expect(result?.outcome).toBe('superseded');
    expect(result?.reason).toContain('later delete');
    expect((await sink.db.query(`SELECT count(*)::int AS n FROM ${t}`)).rows).toEqual([{ n: 0 }]);
  });
});
