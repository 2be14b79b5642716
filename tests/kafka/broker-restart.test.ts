/**
 * A Kafka broker restart during the workload: the Kafka committer sees its transactions
 * fail, re-creates its producer with back-off until the broker is back, re-reads its
 * checkpoint and goes on — the process never exits — and a read_committed consumer then
 * finds every source change exactly once, in per-key order.
 *
 * The broker is a scratch one of this test's own (the shared broker must stay up).
 */
import { runWorkload, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { ScratchKafka, scratchKafkaAvailable } from '../harness/scratch-kafka.ts';
import { historyCount } from '../e2e/convergence.ts';
import { createSourceAndSink } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';
import { readTopics } from './support.ts';
import { compareHistories, kafkaHistory, sourceHistory } from './verify.ts';

const CHANGES = Number(process.env.CDC_BROKER_RESTART_CHANGES ?? 8_000);
const DOWN_MS = 6_000;

describe('Kafka sink: broker restart', () => {
  test.skipIf(!scratchKafkaAvailable())(
    `nothing lost or duplicated when the broker restarts during ${CHANGES} changes`,
    { timeout: 600_000 },
    async ({ ctx }) => {
      const broker = await ScratchKafka.start(ctx);
      const dbs = await createSourceAndSink(ctx, 'kbounce');
      const pipelineName = ctx.uniqueName('kbounce').toLowerCase();
      const topicPrefix = ctx.uniqueName('kbounce');
      const servers = { ...ctx.servers, kafkaBrokers: broker.brokers };
      const pipeline = await PipelineProcesses.start({
        pipeline: pipelineName,
        partitions: 2,
        sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
        sinks: ['kafka'],
        kafka: { topicPrefix, checkpointTopic: ctx.uniqueName('ckpt') },
        servers,
        reorderers: 1,
      });
      ctx.defer('stop pipeline', () => pipeline.stop());
      const committer = pipeline.process('committer-kafka');

      const workload = runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: CHANGES, clients: 4, seed: 23 });
      // Restart once the committer has committed a few transactions.
      await committer.waitForLine(/"msg":"topic created"/, 120_000);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const beforeStop = committer.stdoutCount;
      await broker.stop();
      await new Promise((resolve) => setTimeout(resolve, DOWN_MS));
      await broker.start();
      const load = await workload;

      const committedChanges = await historyCount(dbs.sourceUrl);
      const reader = await readTopics(ctx, WATCHED_TABLES.map((table) => `${topicPrefix}.${table}`), { brokers: broker.brokers });
      const changeRecords = (): number => reader.records.filter((record) => record.value !== null).length;
      await reader.until(() => changeRecords() >= committedChanges, 240_000, `${committedChanges} change records`);
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const verification = compareHistories(await sourceHistory(dbs.sourceUrl), kafkaHistory(reader.records), { tombstones: true });
      const afterStop = committer.stdout.slice(Math.max(0, beforeStop - (committer.stdoutCount - committer.stdout.length)));
      const retried = afterStop.filter((line) => /"level":(40|50)/.test(line) && /Kafka|kafka/.test(line)).length;
      const recovered = afterStop.some((line) => line.includes('recovered: resuming after the last committed Kafka transaction'));

      console.log(
        [
          `broker restart: ${load.changes} changes, broker down ${DOWN_MS} ms; committer warnings/errors after the stop: ${retried}, recovered: ${recovered}`,
          `kafka: ${verification.kafkaChanges} change records for ${verification.sourceChanges} source changes; missing ${verification.missing}, duplicates ${verification.duplicates}, order violations ${verification.orderViolations}`,
          ...verification.mismatches,
        ].join('\n'),
      );
      // The same process rode it out: no exit, no restart.
      expect(committer.status).toBeUndefined();
      expect(pipeline.restarts('committer-kafka')).toBe(0);
      expect(recovered).toBe(true);
      expect(verification.sourceChanges).toBe(committedChanges);
      expect(verification.mismatches).toEqual([]);
      expect(verification.missing).toBe(0);
      expect(verification.duplicates).toBe(0);
      expect(verification.ok).toBe(true);
    },
  );
});
