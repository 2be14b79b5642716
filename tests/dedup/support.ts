/** The dedup-gate in-process for the stage tests: partition 0 of a test pipeline, small batches, quick retries. */
import { DedupGate, type DedupStore } from '@cdc/dedup';
import type { TestContext } from '../harness/index.ts';
import type { TestPipeline } from '../reorderer/support.ts';

/** A gate over `store`, closed when the test ends (before whatever was registered earlier). */
export function gateOver(ctx: TestContext, p: TestPipeline, store: DedupStore): DedupGate {
  const gate = DedupGate.create({
    bus: p.bus,
    store,
    pipeline: p.name,
    partition: 0,
    batchMax: 20,
    batchLingerMs: 10,
    logger: p.logger,
    retry: { initialDelayMs: 50, maxDelayMs: 300 },
  });
  ctx.defer('stop gate', () => gate.close());
  return gate;
}
