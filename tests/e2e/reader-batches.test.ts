/**
 * Batches are not reproducible (PITFALLS 26): the reader is SIGKILLed mid-stream several
 * times and restarted each time with another batch size, so the slot's replay is cut into
 * messages that differ from the first attempt (other first/last positions, other message
 * ids: JetStream cannot absorb them). Per-event identity must: the ordered stream carries
 * every event exactly once, and the sink equals the source with nothing applied twice.
 */
import { Bus } from '@cdc/bus';
import { decodeMessage, stageWildcard, streamName } from '@cdc/core';
import { createLogger } from '@cdc/runtime';
import { runWorkload, verifySourceAgainstSink, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { waitForSinkToCatchUp } from './convergence.ts';
import { createSourceAndSink } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';

/** Every change item of a stage's stream: event id → the message ids it was stored under. */
async function copiesByEvent(bus: Bus, pipeline: string, stage: 'raw' | 'ordered'): Promise<Map<string, string[]>> {
  const stream = streamName(pipeline, stage);
  const last = (await bus.jsm.streams.info(stream)).state.last_seq;
  const copies = new Map<string, string[]>();
  if (last === 0) return copies;
  const reader = await bus.openReader({ stream, subject: stageWildcard(pipeline, stage), startSeq: 1 });
  try {
    let seen = 0;
    while (seen < last) {
      const batch = await reader.nextBatch(1_000, 5_000);
      if (batch.length === 0) throw new Error(`${stream} ended at ${seen}, expected up to ${last}`);
      for (const message of batch) {
        seen = message.seq;
        if (message.seq > last) continue;
        const msgId = message.header('Nats-Msg-Id') ?? `seq:${message.seq}`;
        for (const item of decodeMessage(message.data, ['change', 'heartbeat', 'progress', 'watermark'])) {
          if (item.kind === 'poison') throw new Error(`${stream} message ${message.seq}: ${item.reason}`);
          if (item.kind !== 'change') continue;
          const ids = copies.get(item.value.eventId) ?? [];
          ids.push(msgId);
          copies.set(item.value.eventId, ids);
        }
      }
    }
  } finally {
    await Promise.race([bus.closeReader(reader), new Promise((resolve) => setTimeout(resolve, 200))]);
  }
  return copies;
}

describe('batched messages: the reader killed mid-batch', () => {
  test('replays cut into other batches after each SIGKILL reach the ordered stream once per event and the sink exactly once', { timeout: 420_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'rbatch');
    const pipelineName = ctx.uniqueName('rbatch').toLowerCase();
    const source = 'src1';
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 3,
      sources: [{ id: source, databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
      sinkUrl: dbs.sinkUrl,
      servers: ctx.servers,
      reorderers: 1,
      echo: process.env.CDC_TEST_ECHO === '1',
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const logger = createLogger({ app: 'test-rbatch', level: 'silent' });
    const bus = await Bus.create({ url: ctx.servers.nats, name: 'test-rbatch', logger });
    ctx.defer('bus close', () => bus.close());

    // With the committer down nothing is confirmed to the slot: every restart replays all
    // of it so far, and each restart cuts that replay with another size (7, 33, 5).
    await pipeline.kill('committer');
    const workload = runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 6_000, clients: 3, seed: 11 });
    const reader = `reader:${source}`;
    for (const size of ['7', '33', '5']) {
      await new Promise((resolve) => setTimeout(resolve, 700));
      await pipeline.kill(reader);
      await pipeline.restart(reader, { BATCH_MAX_EVENTS: size });
    }
    const load = await workload;
    await pipeline.restart('committer');
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 180_000 });
    expect(caughtUp.caughtUp).toBe(true);

    const raw = await copiesByEvent(bus, pipelineName, 'raw');
    const ordered = await copiesByEvent(bus, pipelineName, 'ordered');
    const replayed = [...raw.values()].filter((ids) => ids.length > 1);
    // The scenario really happened: events stored twice, under different message ids.
    const recut = replayed.filter((ids) => new Set(ids).size > 1);
    console.log(`reader batches: ${load.changes} changes, ${raw.size} distinct raw events, ${replayed.length} stored more than once, ${recut.length} of them re-cut`);
    expect(replayed.length).toBeGreaterThan(0);
    expect(recut.length).toBeGreaterThan(0);
    // Per-event identity absorbed every copy: once per event downstream of the reorderer.
    expect(ordered.size).toBe(raw.size);
    expect([...ordered.values()].filter((ids) => ids.length !== 1)).toEqual([]);

    const report = await verifySourceAgainstSink(dbs.sourceUrl, dbs.sinkUrl);
    for (const table of report.tables) {
      expect({ table: table.table, missing: table.missing, extra: table.extra, different: table.different }).toEqual({ table: table.table, missing: [], extra: [], different: [] });
    }
    expect(report.appliedTwice).toBe(0);
    expect(report.neverApplied).toBe(0);
    expect(report.orderViolations).toBe(0);
    expect(report.ok).toBe(true);
  });
});
