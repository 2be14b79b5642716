/**
 * /metrics and /readyz of a whole pipeline (reader, two reorderers, gate, PostgreSQL
 * committer as processes): after a workload every stage's counters agree with it — events
 * out of the reader = into and out of each stage = committed by the committer = rows the
 * source changed — and /readyz, even while the committer cannot reach its sink, says only
 * check names, ok and reason codes (no host, port, user or error text).
 */
import { runWorkload, WATCHED_TABLES } from '@cdc/testkit';
import { REASON_CODE } from '@cdc/runtime';
import { TcpProxy, describe, expect, test, waitFor } from '../harness/index.ts';
import { readyz } from '../harness/health.ts';
import { historyCount, waitForSinkToCatchUp } from '../e2e/convergence.ts';
import { createSourceAndSink, withClient } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';
import { find, scrape, total, type Series } from './prometheus.ts';

const CHANGES = 3_000;
const PARTITIONS = 3;

function portOf(pipeline: PipelineProcesses, name: string): number {
  const line = pipeline.process(name).stdout.find((l) => l.includes('"msg":"health server listening"'));
  if (!line) throw new Error(`${name} printed no "health server listening" line`);
  return (JSON.parse(line) as { port: number }).port;
}

describe('pipeline metrics', () => {
  test('every app serves /metrics whose counters agree with the workload, and /readyz carries no internal text', { timeout: 300_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'metrics');
    // The committer reaches its sink through a proxy the test can cut.
    const proxy = await TcpProxy.start(dbs.sinkUrl);
    ctx.defer('close proxy', () => proxy.close());
    const sinkUrl = new URL(dbs.sinkUrl);
    sinkUrl.host = new URL(proxy.url('postgres')).host;
    const pipelineName = ctx.uniqueName('metrics').toLowerCase();
    const source = 'src1';
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: PARTITIONS,
      sources: [{ id: source, databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
      sinkUrl: sinkUrl.toString(),
      servers: ctx.servers,
      reorderers: 2,
      echo: process.env.CDC_TEST_ECHO === '1',
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const ports = Object.fromEntries(pipeline.names.map((name) => [name, portOf(pipeline, name)]));
    const reader = `reader:${source}`;

    const load = await runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: CHANGES, clients: 3, seed: 15 });
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 120_000 });
    expect(caughtUp).toMatchObject({ caughtUp: true, applied: caughtUp.committed });
    // Row changes per key, as the source's trigger recorded them: a key-changing UPDATE is two
    // (a delete of the old key and an insert of the new one; PITFALLS 6), and two events.
    const rows = await historyCount(dbs.sourceUrl);
    expect(rows).toBeGreaterThanOrEqual(load.changes);

    // Committed counters are read at scrape time; the reader counts on PubAck, the committer on COMMIT: settled by now.
    const scraped: Record<string, Series[]> = {};
    for (const [name, port] of Object.entries(ports)) {
      const answer = await scrape(port);
      expect(answer.status).toBe(200);
      expect(answer.contentType).toContain('text/plain');
      scraped[name] = answer.series;
      // One registry per process, default process metrics, the pipeline on every series.
      expect(find(answer.series, 'process_resident_memory_bytes')).toHaveLength(1);
      expect(answer.series.every((s) => s.labels['pipeline'] === pipelineName)).toBe(true);
      expect(total(answer.series, 'cdc_connection_up', { target: 'nats' })).toBe(1);
    }
    const r = scraped[reader] as Series[];
    const reorderers = [scraped['reorderer:0'] as Series[], scraped['reorderer:1'] as Series[]];
    const g = scraped['dedup-gate'] as Series[];
    const c = scraped['committer'] as Series[];
    const sum = (list: Series[][], name: string, where: Record<string, string> = {}) => list.reduce((n, s) => n + total(s, name, where), 0);

    const readerOut = total(r, 'cdc_stage_events_out_total', { stage: 'reader' });
    const reorderIn = sum(reorderers, 'cdc_stage_events_in_total', { stage: 'lamport-reorderer' });
    const reorderOut = sum(reorderers, 'cdc_stage_events_out_total', { stage: 'lamport-reorderer' });
    const gateIn = total(g, 'cdc_stage_events_in_total', { stage: 'dedup-gate' });
    const gateOut = total(g, 'cdc_stage_events_out_total', { stage: 'dedup-gate' });
    const committerIn = total(c, 'cdc_stage_events_in_total', { stage: 'committer' });
    const committerOut = total(c, 'cdc_stage_events_out_total', { stage: 'committer' });
    const applied = total(c, 'cdc_committer_events_applied_total');
    console.log(`metrics: rows ${rows}, reader out ${readerOut}, reorderer ${reorderIn}→${reorderOut}, gate ${gateIn}→${gateOut}, committer ${committerIn}→${committerOut} (applied ${applied})`);
    expect({ readerOut, reorderIn, reorderOut, gateIn, gateOut, committerIn, committerOut, applied }).toEqual({
      readerOut: rows, reorderIn: rows, reorderOut: rows, gateIn: rows, gateOut: rows, committerIn: rows, committerOut: rows, applied: rows,
    });
    // Per partition too: what the reader sent to partition p is what the committer committed from it.
    for (let p = 0; p < PARTITIONS; p++) {
      const partition = String(p);
      expect(total(c, 'cdc_stage_events_out_total', { partition })).toBe(total(r, 'cdc_stage_events_out_total', { partition }));
      expect(total(r, 'cdc_stage_events_out_total', { partition })).toBeGreaterThan(0);
    }
    // Messages: every stage moved some, the reader batched (fewer messages than events).
    const readerMessages = total(r, 'cdc_stage_messages_out_total');
    expect(readerMessages).toBeGreaterThan(0);
    expect(readerMessages).toBeLessThan(rows);
    expect(sum(reorderers, 'cdc_stage_messages_in_total')).toBeGreaterThanOrEqual(readerMessages);
    expect(total(g, 'cdc_stage_messages_in_total')).toBeGreaterThan(0);
    expect(total(c, 'cdc_stage_messages_in_total')).toBeGreaterThan(0);
    // Nothing duplicated, redelivered or dead-lettered in a clean run.
    expect(total(g, 'cdc_dedup_duplicates_dropped_total')).toBe(0);
    expect(total(g, 'cdc_dedup_redeliveries_total')).toBe(0);
    expect([r, ...reorderers, g, c].map((s) => total(s, 'cdc_dead_letters_total'))).toEqual([0, 0, 0, 0, 0]);
    // Commits: one histogram observation per sink transaction, the batch sizes sum to the events.
    const batches = total(c, 'cdc_committer_batches_total');
    expect(batches).toBeGreaterThan(0);
    expect(total(c, 'cdc_committer_commit_duration_seconds_count')).toBe(batches);
    expect(total(c, 'cdc_committer_batch_events_sum')).toBe(committerOut);
    expect(total(c, 'cdc_committer_commit_duration_seconds_sum')).toBeGreaterThan(0);
    expect(total(c, 'cdc_committer_fenced')).toBe(0);
    expect(total(c, 'cdc_committer_epoch')).toBeGreaterThan(0);
    expect(total(c, 'cdc_connection_up', { target: 'postgres' })).toBe(1);
    expect(total(c, 'cdc_connection_up', { target: 'etcd' })).toBe(1);
    expect(total(g, 'cdc_connection_up', { target: 'redis' })).toBe(1);
    expect(total(r, 'cdc_connection_up', { target: 'postgres' })).toBe(1);
    // Lag: seconds behind the source commit, set at each stage, small on a local machine.
    for (const [name, series] of [[reader, r], ['reorderer:0', reorderers[0]], ['dedup-gate', g], ['committer', c]] as const) {
      const lags = find(series as Series[], 'cdc_stage_lag_seconds');
      expect(lags.length, `${name} has a lag gauge`).toBeGreaterThan(0);
      for (const lag of lags) expect(lag.value, `${name} ${JSON.stringify(lag.labels)}`).toBeGreaterThanOrEqual(0);
      for (const lag of lags) expect(lag.value, `${name} ${JSON.stringify(lag.labels)}`).toBeLessThan(60);
    }
    // The slot (sampled every 5 s): held by the reader, its lag a number of bytes; heartbeats recent.
    const slot = await waitFor(async () => {
      const series = (await scrape(ports[reader] as number)).series;
      return find(series, 'cdc_reader_slot_active').length > 0 ? series : undefined;
    }, { what: 'a slot sample', timeoutMs: 15_000 });
    expect(total(slot, 'cdc_reader_slot_active')).toBe(1);
    const slotLag = find(slot, 'cdc_reader_slot_lag_bytes');
    expect(slotLag).toHaveLength(1);
    expect(slotLag[0]?.value).toBeGreaterThanOrEqual(0);
    expect(total(slot, 'cdc_reader_heartbeat_age_seconds')).toBeLessThan(10);

    // /readyz: ready, and nothing but names, ok and codes.
    for (const [name, port] of Object.entries(ports)) {
      const answer = await readyz(port);
      expect(answer.status, name).toBe(200);
      for (const check of Object.values(answer.body.checks)) {
        expect(Object.keys(check).every((key) => key === 'ok' || key === 'detail')).toBe(true);
        if (check.detail !== undefined) expect(check.detail).toMatch(REASON_CODE);
      }
    }

    // The sink cut: the committer fails its next batch. /readyz names the reason code only;
    // the connection gauge falls to 0 and the error is counted by its code.
    await proxy.cut();
    await withClient(dbs.sourceUrl, (client) => client.query(`UPDATE accounts SET balance = balance + 1, version = version + 1 WHERE id = (SELECT min(id) FROM accounts)`));
    const down = await waitFor(async () => {
      const answer = await readyz(ports['committer'] as number);
      return answer.body.checks['committer']?.ok === false ? answer : undefined;
    }, { what: 'the committer not ready while its sink is cut', timeoutMs: 30_000 });
    expect(down.status).toBe(503);
    expect(down.body.checks['committer']?.detail).toMatch(/^retrying:[A-Z_]+$/);
    const text = JSON.stringify(down.body);
    for (const secret of [proxy.url('postgres').replace(/^postgres:\/\//, ''), sinkUrl.port, sinkUrl.username, 'ECONNREFUSED', 'ECONNRESET', 'terminated']) {
      if (secret) expect(text).not.toContain(secret);
    }
    const during = (await scrape(ports['committer'] as number)).series;
    expect(total(during, 'cdc_sink_errors_total')).toBeGreaterThan(0);
    expect(total(during, 'cdc_sink_retries_total')).toBeGreaterThan(0);
    expect(total(during, 'cdc_connection_up', { target: 'postgres' })).toBe(0);

    await proxy.restore();
    const again = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 60_000 });
    expect(again).toMatchObject({ caughtUp: true, applied: again.committed });
    await waitFor(async () => ((await readyz(ports['committer'] as number)).status === 200 ? true : undefined), { what: 'the committer ready again', timeoutMs: 30_000 });
    const after = (await scrape(ports['committer'] as number)).series;
    expect(total(after, 'cdc_connection_up', { target: 'postgres' })).toBe(1);
    expect(total(after, 'cdc_committer_events_applied_total')).toBe(again.committed);
  });
});
