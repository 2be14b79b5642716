export { CheckpointStore, DEFAULT_SINK } from './store.ts';
export type { PartitionCheckpoint, SourceAck } from './store.ts';
export { etcdTarget, etcdConnectError } from './connect.ts';
export type { EtcdTarget } from './connect.ts';
