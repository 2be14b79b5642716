export { CheckpointStore } from './store.ts';
export type { PartitionCheckpoint, SourceAck } from './store.ts';
