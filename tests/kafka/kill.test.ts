/**
 * The kill test, on Kafka: the core's mixed workload runs through the four apps into
 * the Kafka committer while it is SIGKILLed mid-transaction (at least five times) and
 * once SIGSTOPped mid-transaction, replaced, and resumed: the zombie must be fenced and
 * its writes never become visible. Then a read_committed consumer must find every source
 * change exactly once, per key in source order, each delete followed by its tombstone;
 * a read_uncommitted consumer shows the aborted records were really there.
 *
 * "Mid-transaction" is made certain by the committer's test failpoint: it logs after the
 * last send of a transaction and holds it open before the commit; the kill follows that
 * line. CI runs 20 000 changes; CDC_FULL_KILL_TEST=1 runs the full 100 000.
 */
import { runWorkload, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { historyCount } from '../e2e/convergence.ts';
import { createSourceAndSink } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';
import { KAFKA_FAILPOINT_ENTRY, readTopics } from './support.ts';
import { compareHistories, kafkaHistory, sourceHistory } from './verify.ts';

const FULL = process.env.CDC_FULL_KILL_TEST === '1';
const CHANGES = Number(process.env.CDC_KILL_CHANGES ?? (FULL ? 100_000 : 20_000));
const KILLS = 5;
const HOLD_MS = 150;
const FAILPOINT = /failpoint: transaction sent, holding it open before commit/;
const FENCED = /fenced by a newer committer|KAFKA_FENCED/;

describe('Kafka sink: exactly once under kill -9 and a paused zombie', () => {
  test(
    `every one of ${CHANGES} changes exactly once in Kafka after ${KILLS} kills mid-transaction and a fenced zombie`,
    { timeout: FULL ? 1_800_000 : 600_000 },
    async ({ ctx }) => {
      const started = Date.now();
      const dbs = await createSourceAndSink(ctx, 'kkill');
      const pipelineName = ctx.uniqueName('kkill').toLowerCase();
      const topicPrefix = ctx.uniqueName('kkill');
      const pipeline = await PipelineProcesses.start({
        pipeline: pipelineName,
        partitions: 4,
        sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
        sinks: ['kafka'],
        kafka: {
          topicPrefix,
          checkpointTopic: ctx.uniqueName('ckpt'),
        entry: KAFKA_FAILPOINT_ENTRY,
          env: { CDC_TEST_HOLD_BEFORE_COMMIT_MS: String(HOLD_MS), BATCH_MAX_EVENTS: '1000' },
        },
        servers: ctx.servers,
        reorderers: 2,
      });
      ctx.defer('stop pipeline', () => pipeline.stop());

      const workload = runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: CHANGES, clients: 4, seed: 11 });
      let workloadDone = false;
      void workload.then(() => (workloadDone = true), () => (workloadDone = true));

      /** Waits for the next "transaction sent, holding" line of a committer process. */
      const midTransaction = async (name: string): Promise<void> => {
        const child = pipeline.process(name);
        await child.waitForLine(FAILPOINT, 60_000, { from: child.stdoutCount });
      };

      // Spread the kills over the workload (longer in the full run): a random pause, then the
      // next transaction in flight.
      const spreadMs = FULL ? 10_000 : 2_000;
      let seed = 4242;
      const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      for (let kill = 0; kill < KILLS; kill++) {
        await new Promise((resolve) => setTimeout(resolve, 500 + random() * spreadMs));
        await midTransaction('committer-kafka');
        await pipeline.kill('committer-kafka');
        await new Promise((resolve) => setTimeout(resolve, random() * 500));
        await pipeline.restart('committer-kafka');
      }

      // The zombie: paused mid-transaction, replaced, resumed after the replacement committed.
      await midTransaction('committer-kafka');
      const zombie = pipeline.process('committer-kafka');
      zombie.kill('SIGSTOP');
      const replacement = await pipeline.launchAs('committer-kafka', 'committer-kafka-2');
      await replacement.waitForLine(FAILPOINT, 60_000);
      await replacement.waitForLine(/"msg":"progress"|kafka transaction committed/, 60_000).catch(() => undefined);
      zombie.kill('SIGCONT');
      const zombieExit = await zombie.waitForExit(90_000);
      const zombieFenced = zombie.stdout.some((line) => FENCED.test(line)) || zombie.stderr.some((line) => FENCED.test(line));

      const load = await workload;
      expect(workloadDone).toBe(true);
      const committedChanges = await historyCount(dbs.sourceUrl);
      const topics = WATCHED_TABLES.map((table) => `${topicPrefix}.${table}`);
      const committed = await readTopics(ctx, topics);
      const changeRecords = (): number => committed.records.filter((record) => record.value !== null).length;
      await committed.until(() => changeRecords() >= committedChanges, 300_000, `${committedChanges} change records`);
      // A duplicate would arrive right behind; let it show.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const verification = compareHistories(await sourceHistory(dbs.sourceUrl), kafkaHistory(committed.records), { tombstones: true });

      const uncommitted = await readTopics(ctx, topics, { readUncommitted: true });
      await uncommitted.until((records) => records.length >= committed.records.length, 120_000, 'the uncommitted view');
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const aborted = uncommitted.records.length - committed.records.length;

      console.log(
        [
          `kafka kill test: ${load.changes} changes in ${load.transactions} transactions; ${KILLS} kills + 1 fenced zombie; ${((Date.now() - started) / 1000).toFixed(1)} s`,
          `zombie exit: ${JSON.stringify(zombieExit)}, fenced line: ${zombieFenced}`,
          `kafka: ${verification.kafkaChanges} change records for ${verification.sourceChanges} source changes over ${verification.keys} keys, ${verification.tombstones} tombstones`,
          `missing ${verification.missing}, duplicates ${verification.duplicates}, order violations ${verification.orderViolations}, deletes without tombstone ${verification.deletesWithoutTombstone}`,
          `records of aborted transactions seen read_uncommitted (never read_committed): ${aborted}`,
          ...verification.mismatches,
        ].join('\n'),
      );

      expect(zombieFenced).toBe(true);
      expect(zombieExit.code).not.toBe(0);
      expect(verification.sourceChanges).toBe(committedChanges);
      expect(verification.mismatches).toEqual([]);
      expect(verification.missing).toBe(0);
      expect(verification.duplicates).toBe(0);
      expect(verification.orderViolations).toBe(0);
      expect(verification.deletesWithoutTombstone).toBe(0);
      expect(verification.ok).toBe(true);
      // Every kill and the zombie left a transaction open after its sends: aborted records exist.
      expect(aborted).toBeGreaterThan(0);
    },
  );
});
