/**
 * @cdc/relay — the stream-to-stream stage both middle stages share.
 *
 *   const relay = Relay.create({
 *     bus, pipeline: 'orders', partition: 0, stage: 'dedup-gate',
 *     input: 'ordered', output: 'deduped', transform, logger,
 *     batchMax: 500, batchLingerMs: 20, signal,
 *   });
 *   const fatal = await relay.closed();
 */
export { Relay } from './relay.ts';
export type { RelayOptions, RelayState, RelayHealth, RelayCounters } from './relay.ts';
export { registerRelayMetrics } from './metrics.ts';
export { ReaderClosedError, BadCheckpointError, MessageTooLargeError } from './errors.ts';
export type { RelayTransform, RelayCheckpoint, StageOutput, StageResult, DeadLetterRequest } from './types.ts';
export { parseAssignment } from './assignment.ts';
export type { Assignment } from './assignment.ts';
export { relaysCheck } from './readiness.ts';
export { RELAY_DEFAULTS } from './defaults.ts';
export { relayConfigBase, relayConfigSchema } from './app-config.ts';
export type { RelayAppConfig } from './app-config.ts';
export { runRelayApp } from './app.ts';
export type { RelayStage, RelayAppContext, RelayAppSetup, RelayAppOptions } from './app.ts';
