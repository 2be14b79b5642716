/**
 * PITFALLS 7: watched tables stay idle while another table writes WAL. The reader's
 * WAL heartbeats travel through the whole pipeline, the committer commits them, and
 * the slot's confirmed_flush_lsn follows — WAL does not pile up behind an idle slot.
 */
import { Lsn } from '@cdc/core';
import { WATCHED_TABLES, writeNoise } from '@cdc/testkit';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { createSourceAndSink, withClient } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';

describe('idle watched tables', () => {
  test('confirmed_flush_lsn advances past WAL written by an unwatched table', { timeout: 180_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'idle');
    const pipelineName = ctx.uniqueName('idle');
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
      sinkUrl: dbs.sinkUrl,
      servers: ctx.servers,
      reorderers: 1,
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const slot = `cdc_${pipelineName}_src1`;
    const confirmed = (): Promise<Lsn> =>
      withClient(dbs.sourceUrl, async (client) => {
        const result = await client.query<{ lsn: string }>(
          'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
          [slot],
        );
        return Lsn.parse(result.rows[0]?.lsn ?? '0/0');
      });

    const before = await confirmed();
    await writeNoise(dbs.sourceUrl, 20_000); // ~10 MB of WAL no reader event comes from
    const noiseEnd = await withClient(dbs.sourceUrl, async (client) => {
      const result = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      return Lsn.parse(result.rows[0]?.lsn ?? '0/0');
    });
    expect(noiseEnd - before).toBeGreaterThan(5_000_000n);

    const after = await waitFor(
      async () => {
        const lsn = await confirmed();
        return lsn >= noiseEnd ? lsn : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: `slot ${slot} confirmed past ${Lsn.format(noiseEnd)}` },
    );
    expect(after).toBeGreaterThanOrEqual(noiseEnd);
    // Nothing of the noise reached the sink: the watched tables stayed empty.
    const sinkRows = await withClient(dbs.sinkUrl, async (client) => {
      const result = await client.query<{ n: string }>('SELECT count(*) AS n FROM change_history');
      return Number(result.rows[0]?.n);
    });
    expect(sinkRows).toBe(0);
  });
});
