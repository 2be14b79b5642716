/**
 * The kill test: a mixed workload runs while every app is SIGKILLed at random moments
 * (at least three times each) and restarted. Afterwards the sink equals the source
 * row by row, every change was applied exactly once, per-key versions never went
 * backwards, and the slot was never confirmed past what the sink committed.
 *
 * CI runs a short version; CDC_FULL_KILL_TEST=1 runs the full one (>= 100 000 changes).
 */
import { verifySourceAgainstSink, runWorkload, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { waitForSinkToCatchUp } from './convergence.ts';
import { createSourceAndSink } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';
import { SlotWatch } from './slot-watch.ts';

const FULL = process.env.CDC_FULL_KILL_TEST === '1';
const CHANGES = Number(process.env.CDC_KILL_CHANGES ?? (FULL ? 100_000 : 20_000));
const KILLS_PER_APP = 3;
const APP_KINDS = ['reader', 'reorderer', 'dedup-gate', 'committer'] as const;

function kindOf(name: string): (typeof APP_KINDS)[number] {
  const kind = APP_KINDS.find((k) => name.startsWith(k));
  if (!kind) throw new Error(`unknown app ${name}`);
  return kind;
}

describe('exactly once under kill -9', () => {
  test(
    `sink equals source after ${CHANGES} changes with every app killed at least ${KILLS_PER_APP} times`,
    { timeout: FULL ? 1_800_000 : 600_000 },
    async ({ ctx }) => {
      const started = Date.now();
      const dbs = await createSourceAndSink(ctx, 'kill');
      const pipelineName = ctx.uniqueName('kill').toLowerCase();
      const partitions = 4;
      const source = 'src1';
      const pipeline = await PipelineProcesses.start({
        pipeline: pipelineName,
        partitions,
        sources: [{ id: source, databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
        sinkUrl: dbs.sinkUrl,
        servers: ctx.servers,
        reorderers: 2,
      });
      ctx.defer('stop pipeline', () => pipeline.stop());
      const watch = await SlotWatch.start({
        sourceUrl: dbs.sourceUrl,
        sinkUrl: dbs.sinkUrl,
        slot: `cdc_${pipelineName}_${source}`,
        pipeline: pipelineName,
        source,
        partitions,
      });

      const workload = runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: CHANGES, clients: 4, seed: 7 });
      let workloadDone = false;
      void workload.then(() => (workloadDone = true), () => (workloadDone = true));

      // Chaos: kill a random app, leave it dead for a random moment, restart it.
      const kills = new Map<string, number>(APP_KINDS.map((kind) => [kind, 0]));
      let seed = 12345;
      const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const chaosDeadline = Date.now() + (FULL ? 1_200_000 : 300_000);
      while (Date.now() < chaosDeadline) {
        const behind = APP_KINDS.filter((kind) => (kills.get(kind) ?? 0) < KILLS_PER_APP);
        if (behind.length === 0 && workloadDone) break;
        const candidates = pipeline.names.filter((name) => behind.length === 0 || behind.includes(kindOf(name)));
        const victim = candidates[Math.floor(random() * candidates.length)] as string;
        await new Promise((resolve) => setTimeout(resolve, 300 + random() * 1_500));
        await pipeline.kill(victim);
        kills.set(kindOf(victim), (kills.get(kindOf(victim)) ?? 0) + 1);
        await new Promise((resolve) => setTimeout(resolve, random() * 800));
        await pipeline.restart(victim);
      }
      const load = await workload;
      const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 240_000 });
      // Let the slot feedback catch up, then stop watching.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const slot = await watch.stop();
      const report = await verifySourceAgainstSink(dbs.sourceUrl, dbs.sinkUrl);

      const seconds = (Date.now() - started) / 1000;
      console.log(
        [
          `kill test: ${load.changes} changes in ${load.transactions} transactions, workload ${(load.changes / (load.elapsedMs / 1000)).toFixed(0)} changes/s`,
          `kills: ${[...kills].map(([kind, n]) => `${kind} ${n}`).join(', ')}`,
          `caught up: ${caughtUp.caughtUp} (${caughtUp.applied}/${caughtUp.committed}) after ${seconds.toFixed(1)} s in all`,
          `slot: ${slot.samples} samples, ${slot.violations.length} violations, last confirmed ${slot.lastConfirmed}`,
          report.summary,
        ].join('\n'),
      );

      for (const kind of APP_KINDS) expect(kills.get(kind), `kills of ${kind}`).toBeGreaterThanOrEqual(KILLS_PER_APP);
      expect(caughtUp.caughtUp).toBe(true);
      expect(slot.violations).toEqual([]);
      expect(slot.samples).toBeGreaterThan(10);
      for (const table of report.tables) {
        expect({ table: table.table, missing: table.missing, extra: table.extra, different: table.different }).toEqual({
          table: table.table,
          missing: [],
          extra: [],
          different: [],
        });
        expect(table.sinkRows).toBe(table.sourceRows);
      }
      expect(report.appliedTwice).toBe(0);
      expect(report.neverApplied).toBe(0);
      expect(report.unexpected).toBe(0);
      expect(report.orderViolations).toBe(0);
      expect(report.ok).toBe(true);
    },
  );
});
