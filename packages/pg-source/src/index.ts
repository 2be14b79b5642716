/**
 * @cdc/pg-source — a PostgreSQL source read through logical replication (pgoutput).
 *
 *   const prepared = await setupSource({ connectionString, tables: ['public.orders'], publicationName, slotName, logger });
 *   const reader = await Reader.create({ pipeline, source: 'pg1', connectionString, tables, partitions: 8,
 *                                       slotName, publicationName, bus, checkpoints, logger, prepared });
 *   ...
 *   await reader.close(); // drains: publishes what it read, its watermark, confirms what is committed
 */
export { Reader } from './reader.ts';
export { READER_DEFAULTS } from './defaults.ts';
export type { ReaderOptions, ReaderStats, ReaderState, ReaderCounters } from './reader.ts';
export { SlotMonitor } from './slot-monitor.ts';
export type { SlotSample, SlotMonitorOptions } from './slot-monitor.ts';
export { registerReaderMetrics } from './metrics.ts';
export { setupSource, readSlot, assertUsableSlot, publicationDifferences } from './setup.ts';
export type { SetupOptions, PreparedSource, SlotState } from './setup.ts';
export { readTable, parseTableName } from './catalog.ts';
export type { SourceTable, ReplicaIdentity } from './catalog.ts';
export { PgoutputDecoder, isoMicros } from './decoder.ts';
export type { Decoded, DecoderTable } from './decoder.ts';
export { TextPgoutputPlugin, HEARTBEAT_PREFIX, SNAPSHOT_PREFIX } from './pgoutput.ts';
export {
  Snapshotter,
  SnapshotError,
  SNAPSHOT_DEFAULTS,
  SNAPSHOT_MODES,
  ensureSnapshotSchema,
  queueInitialSnapshot,
  queueBackfill,
  requestBackfill,
  readSnapshotJobs,
  describeProgress,
  overlay,
} from './snapshot.ts';
export type { SnapshotMode, SnapshotMark, SnapshotRead, SnapshotJobProgress, SnapshotterOptions } from './snapshot.ts';
export type { SourceMessage, InvalidMessage } from './pgoutput.ts';
export { restoreLamport, slotAheadOfRing } from './lamport-restore.ts';
export type { AckEntry, LamportRestore } from './lamport-restore.ts';
export { AckTracker, committedEverywhere, committedByEverySink } from './ack.ts';
export type { Position, CheckpointPositions } from './ack.ts';
export { RawPublisher, PublisherClosedError, HEADER_ROOM_BYTES } from './raw-publisher.ts';
export type { RawPublisherOptions, Watermark } from './raw-publisher.ts';
export { ReplicationSession, classifyReplicationError } from './stream.ts';
export type { SessionHandlers, SessionOptions } from './stream.ts';
export { WalHeartbeat } from './heartbeat.ts';
export type { WalHeartbeatOptions } from './heartbeat.ts';
export { connectSource, withSource, toConnectError, quoteIdent, assertValueTextSettings, clientConfig, CONNECT_TIMEOUT_MS } from './connection.ts';
export {
  WalLevelError,
  TableNotFoundError,
  TableWithoutKeyError,
  ReplicaIdentityError,
  PublicationMismatchError,
  SourcePrivilegeError,
  SlotMismatchError,
  SlotLostError,
  SlotBusyError,
  ReplicationError,
  SourceRefusedError,
  EventTooLargeError,
  SourceSettingsError,
} from './errors.ts';
