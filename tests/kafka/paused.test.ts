/**
 * PITFALLS 19: a committer paused (SIGSTOP) longer than `transaction.timeout.ms` has its
 * open transaction aborted by the broker. When it wakes it must not commit anything of
 * it: its next request fails (the broker bumped the producer epoch when it aborted), and
 * the committer either stops as fenced — its restart resumes from the checkpoint of the
 * last committed transaction — or recovers in place from that same checkpoint. Either
 * way every change is in Kafka exactly once.
 */
import { runWorkload, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { historyCount } from '../e2e/convergence.ts';
import { createSourceAndSink } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';
import { KAFKA_FAILPOINT_ENTRY, readTopics } from './support.ts';
import { compareHistories, kafkaHistory, sourceHistory } from './verify.ts';

const TIMEOUT_MS = 2_000;
// The broker looks for timed-out transactions every 10 s (its default cleanup interval).
const PAUSE_MS = 15_000;

describe('Kafka sink: a committer paused past the transaction timeout', () => {
  test('its aborted transaction never shows; after it resumes (or restarts) every change is there once', { timeout: 600_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'kpause');
    const pipelineName = ctx.uniqueName('kpause').toLowerCase();
    const topicPrefix = ctx.uniqueName('kpause');
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
      sinks: ['kafka'],
      kafka: {
        topicPrefix,
        checkpointTopic: ctx.uniqueName('ckpt'),
        entry: KAFKA_FAILPOINT_ENTRY,
        env: { KAFKA_TRANSACTION_TIMEOUT_MS: String(TIMEOUT_MS), CDC_TEST_HOLD_BEFORE_COMMIT_MS: '100' },
      },
      servers: ctx.servers,
      reorderers: 1,
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    const workload = runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 4_000, clients: 2, seed: 41 });

    const committer = pipeline.process('committer-kafka');
    await committer.waitForLine(/failpoint: transaction sent, holding it open before commit/, 60_000, { from: committer.stdoutCount });
    committer.kill('SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    const resumedAt = committer.stdoutCount;
    committer.kill('SIGCONT');
    const outcome = await Promise.race([
      committer.waitForExit(60_000).then((status) => ({ exited: status })),
      committer.waitForLine(/recovered: resuming after the last committed Kafka transaction/, 60_000, { from: resumedAt }).then(() => ({ recovered: true })),
    ]);
    // Stopped as fenced: what a supervisor does — start it again.
    if ('exited' in outcome) await pipeline.restart('committer-kafka');
    const load = await workload;

    const committed = await historyCount(dbs.sourceUrl);
    const reader = await readTopics(ctx, WATCHED_TABLES.map((table) => `${topicPrefix}.${table}`));
    await reader.until((records) => records.filter((r) => r.value !== null).length >= committed, 180_000, `${committed} change records`);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const verification = compareHistories(await sourceHistory(dbs.sourceUrl), kafkaHistory(reader.records), { tombstones: true });
    console.log(
      `paused committer: ${load.changes} changes; after waking it ${'exited' in outcome ? `exited ${JSON.stringify(outcome.exited)} and was restarted` : 'recovered in place'}; ` +
        `missing ${verification.missing}, duplicates ${verification.duplicates}, order violations ${verification.orderViolations}`,
    );
    expect(verification.mismatches).toEqual([]);
    expect(verification.sourceChanges).toBe(committed);
    expect(verification.ok).toBe(true);
  });
});
