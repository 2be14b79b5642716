export { CheckpointStore, DEFAULT_SINK } from './store.ts';
export type { PartitionCheckpoint, SourceAck } from './store.ts';
