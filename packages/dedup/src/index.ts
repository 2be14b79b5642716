/**
 * @cdc/dedup — the duplicate gate in front of the committer.
 *
 *   const store = RedisDedupStore.create({ url, pipeline, windowMs: DEDUP_DEFAULTS.windowMs, logger });
 *   const gate = DedupGate.create({ bus, store, pipeline, partition: 0, batchMax: 500, batchLingerMs: 20, logger, signal });
 *
 *   // or the decision alone, per batch of events (one Redis round trip):
 *   const decider = new DedupDecider({ store, logger });
 *   const decisions = await decider.decide(events); // 'new' | 'redelivery' | 'duplicate' | 'replay' per event
 */
export { MemoryDedupStore } from './store.ts';
export type { DedupStore, DedupClaim, DedupVerdict } from './store.ts';
export { RedisDedupStore, DEDUP_DEFAULTS, dedupSlot, redisSecurityOptions } from './redis-store.ts';
export type { RedisDedupStoreOptions } from './redis-store.ts';
export { DedupDecider, DedupTransform, forwards } from './gate.ts';
export type { DedupDeciderOptions, GateCounters, GateDecision, GateEvent, DedupTransformOptions } from './gate.ts';
export { DedupGate, DEDUP_STAGE } from './stage.ts';
export { registerGateMetrics } from './metrics.ts';
export type { DedupGateOptions } from './stage.ts';
