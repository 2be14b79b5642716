/**
 * @cdc/dedup — the duplicate gate in front of the committer.
 *
 *   const store = RedisDedupStore.create({ url, pipeline, windowMs: 900_000, logger });
 *   const gate = DedupGate.create({ bus, store, pipeline, partition: 0, batchMax: 500, batchLingerMs: 20, logger, signal });
 */
export { MemoryDedupStore } from './store.ts';
export type { DedupStore, DedupClaim, DedupVerdict } from './store.ts';
export { RedisDedupStore, dedupKey } from './redis-store.ts';
export type { RedisDedupStoreOptions } from './redis-store.ts';
export { DedupTransform } from './gate.ts';
export type { GateCounters, DedupTransformOptions } from './gate.ts';
export { DedupGate, DEDUP_STAGE } from './stage.ts';
export { DEDUP_DEFAULTS } from './defaults.ts';
export type { DedupGateOptions } from './stage.ts';
