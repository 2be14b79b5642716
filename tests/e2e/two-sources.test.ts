/**
 * Two source databases, two readers, the same partitions: each partition's ordered
 * stream is ONE deterministic order — exactly the order-key sort of every distinct
 * event the readers published — consistent with each source's commit order, and it
 * stays so across a kill -9 of the reorderer. The sink equals the union of the sources.
 */
import { Bus } from '@cdc/bus';
import {
  decodeMessage,
  compareOrderKeys,
  orderKeyOf,
  stageSubject,
  streamName,
  type ChangeEvent,
  type OrderedMessage,
  type RawMessage,
} from '@cdc/core';
import { createLogger } from '@cdc/runtime';
import { runWorkload, verifySourcesAgainstSink, WATCHED_TABLES, SOURCE_SCHEMA_SQL } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { waitForSinkToCatchUp } from './convergence.ts';
import { createDatabase, createSourceAndSink } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';

/** Everything on a subject up to its last message now (readers keep adding watermarks). */
async function readAll<T>(bus: Bus, stream: string, subject: string): Promise<T[]> {
  const last = (await bus.lastMessage(stream, subject))?.seq ?? 0;
  const out: T[] = [];
  if (last === 0) return out;
  const reader = await bus.openReader({ stream, subject, startSeq: 1 });
  try {
    let seen = 0;
    while (seen < last) {
      const batch = await reader.nextBatch(1000, 5_000);
      if (batch.length === 0) throw new Error(`${subject}: stream ended at ${seen}, expected up to ${last}`);
      for (const message of batch) {
        seen = message.seq;
        if (message.seq > last) continue;
        // One entry per item: a message carries one or many (@cdc/core wire.ts).
        for (const item of decodeMessage(message.data, ['change', 'heartbeat', 'progress', 'watermark'])) {
          if (item.kind === 'poison') throw new Error(`${subject} message ${message.seq}: ${item.reason}`);
          out.push(item.value as T);
        }
      }
    }
  } finally {
    await bus.closeReader(reader);
  }
  return out;
}

describe('two sources into the same partitions', () => {
  test('the reorderer emits one deterministic order per partition, consistent with each source', { timeout: 300_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'two');
    const secondSource = await createDatabase(ctx, ctx.uniqueName('two_src2'), SOURCE_SCHEMA_SQL);
    const pipelineName = ctx.uniqueName('two');
    const partitions = 3;
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions,
      sources: [
        { id: 'alpha', databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES },
        { id: 'beta', databaseUrl: secondSource, tables: WATCHED_TABLES },
      ],
      sinkUrl: dbs.sinkUrl,
      servers: ctx.servers,
      reorderers: 1,
    });
    ctx.defer('stop pipeline', () => pipeline.stop());

    // Different seeds: disjoint key ranges, so the sink is the union of both sources.
    const first = runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 3_000, clients: 2, seed: 11 });
    const second = runWorkload({ databaseUrl: secondSource, totalChanges: 3_000, clients: 2, seed: 23 });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await pipeline.kill('reorderer:0');
    await pipeline.restart('reorderer:0');
    await Promise.all([first, second]);
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl, secondSource], sinkUrl: dbs.sinkUrl, timeoutMs: 180_000 });
    expect(caughtUp.caughtUp).toBe(true);
    await pipeline.stop();

    const bus = await Bus.create({ url: ctx.servers.nats, name: 'two-sources-test', logger: createLogger({ app: 'test', level: 'silent' }) });
    ctx.defer('close bus', () => bus.close());
    let total = 0;
    for (let partition = 0; partition < partitions; partition++) {
      const raw = await readAll<RawMessage>(bus, streamName(pipelineName, 'raw'), stageSubject(pipelineName, 'raw', partition));
      const ordered = await readAll<OrderedMessage>(bus, streamName(pipelineName, 'ordered'), stageSubject(pipelineName, 'ordered', partition));
      const distinct = new Map<string, ChangeEvent>();
      for (const message of raw) if (message.kind === 'change') distinct.set(message.eventId, message);
      const expected = [...distinct.values()].sort((a, b) => compareOrderKeys(orderKeyOf(a), orderKeyOf(b))).map((e) => e.eventId);
      const events = ordered.filter((m): m is ChangeEvent => m.kind === 'change');
      expect(events.map((e) => e.eventId), `partition ${partition} order`).toEqual(expected);
      expect(new Set(events.map((e) => e.source))).toEqual(new Set(['alpha', 'beta']));
      for (const source of ['alpha', 'beta']) {
        const mine = events.filter((e) => e.source === source).map(orderKeyOf);
        for (let i = 1; i < mine.length; i++) {
          const previous = mine[i - 1]!;
          const current = mine[i]!;
          // Commit order of one source: commit LSN, then position in the transaction.
          expect(current.commitLsn > previous.commitLsn || (current.commitLsn === previous.commitLsn && current.seq > previous.seq)).toBe(true);
        }
      }
      total += events.length;
    }
    const report = await verifySourcesAgainstSink([dbs.sourceUrl, secondSource], dbs.sinkUrl);
    console.log(`two sources: ${total} events ordered across ${partitions} partitions; ${report.summary}`);
    expect(report.ok).toBe(true);
  });
});
