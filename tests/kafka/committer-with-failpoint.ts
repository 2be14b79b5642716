/**
 * A committer process with the Kafka test failpoint: the app's own wiring (apps/committer
 * src/app.ts) with a hook that, in every Kafka transaction after its last send, logs
 * "failpoint: transaction sent, holding it open before commit" and holds the transaction
 * open CDC_TEST_HOLD_BEFORE_COMMIT_MS before its commit, so a chaos test can kill the
 * process mid-transaction for certain. Test-only: the app's entry point and bundle
 * (apps/committer/src/main.ts) pass no hook, and its config schema knows no such variable.
 *
 *   PipelineProcesses.start({ …, kafka: { …, entry: KAFKA_FAILPOINT_ENTRY, env: { CDC_TEST_HOLD_BEFORE_COMMIT_MS: '150' } } })
 */
import { runCommitter } from '@cdc/app-committer/app';

const holdMs = Number(process.env.CDC_TEST_HOLD_BEFORE_COMMIT_MS ?? '0');
if (!Number.isInteger(holdMs) || holdMs < 0 || holdMs > 60_000) {
  throw new RangeError(`CDC_TEST_HOLD_BEFORE_COMMIT_MS must be an integer from 0 to 60000, got ${process.env.CDC_TEST_HOLD_BEFORE_COMMIT_MS}`);
}

await runCommitter(
  holdMs === 0
    ? {}
    : {
        kafkaBeforeCommit: async ({ records, logger }) => {
          logger.info({ records, hold_ms: holdMs }, 'failpoint: transaction sent, holding it open before commit');
          await new Promise((resolve) => setTimeout(resolve, holdMs));
        },
      },
);
