/**
 * A dedup-gate process with a test failpoint: partition 0 of PIPELINE, whose store
 * SIGKILLs the process right after the CDC_TEST_KILL_AFTER_CLAIMS-th claim round trip
 * returned — the claims are in Redis, nothing of that batch is published (PITFALLS 16).
 * Test-only: the app (apps/dedup-gate) has no such hook and its config knows no such variable.
 */
import { writeSync } from 'node:fs';
import { Bus } from '@cdc/bus';
import { DedupGate, RedisDedupStore, type DedupStore } from '@cdc/dedup';
import { createLogger } from '@cdc/runtime';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const pipeline = env('PIPELINE');
const killAfter = Number(env('CDC_TEST_KILL_AFTER_CLAIMS'));
const logger = createLogger({ app: 'dedup-gate-failpoint', level: process.env.LOG_LEVEL ?? 'info' });
const bus = await Bus.create({ url: env('NATS_URL'), name: 'dedup-gate-failpoint', logger });
await bus.ensurePipelineStreams(pipeline);
const store = RedisDedupStore.create({ url: env('REDIS_URL'), pipeline, windowMs: 600_000, logger });
let calls = 0;
const failing: DedupStore = {
  async check(claims) {
    const verdicts = await store.check(claims);
    calls += 1;
    if (calls === killAfter) {
      // Written synchronously: the logger may still buffer when the kill lands.
      writeSync(1, `${JSON.stringify({ claims: claims.length, first_seq: claims[0]?.inputSeq, last_seq: claims.at(-1)?.inputSeq, msg: 'failpoint: claimed, killed before publishing' })}\n`);
      process.kill(process.pid, 'SIGKILL');
    }
    return verdicts;
  },
};
DedupGate.create({ bus, store: failing, pipeline, partition: 0, batchMax: 3, batchLingerMs: 5, logger });
logger.info('health server listening');
