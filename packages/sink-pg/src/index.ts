/**
 * @cdc/sink-pg — the committer's PostgreSQL sink: a @cdc/committer Sink that applies
 * whole source transactions to a PostgreSQL database, exactly once.
 *
 *   const committer = await PgSink.createCommitter({
 *     pipeline: 'orders', partitions: 4, sinkUrl, bus, checkpointStore, logger, signal,
 *   });
 *   const error = await committer.closed(); // resolves when drained or fenced
 *
 * Invariants: a source transaction is applied in one sink transaction (a larger one
 * than `streamAbove` comes in chunks into one open sink transaction); each partition's
 * checkpoint is written in that same transaction; rows carry their version
 * (_cdc_lsn, _cdc_seq) and only newer changes overwrite them; a committer whose epoch is
 * no longer the sink's writes nothing.
 */
export { PgSink } from './sink.ts';
export type { PgSinkOptions, PgSinkStats, PgCommitter, PgCommitterOptions } from './sink.ts';
export { planEvent, buildStatements } from './apply.ts';
export type { RowOp, UpsertOp, DeleteOp, TruncateOp, Statement, GroupLimits } from './apply.ts';
export { SinkWriter } from './writer.ts';
export type { SinkSession, ApplyRequest, ApplyOutcome, ChunkOutcome, Refusal } from './writer.ts';
export { TableCatalog, ensureBookkeeping, parseTableMap, BOOKKEEPING_DDL, GUARD_LSN, GUARD_SEQ } from './schema.ts';
export type { SinkTable, SinkColumn } from './schema.ts';
export { widening, typeNameForOid, shapeChanges, createTableSql, BUILTIN_TYPES } from './evolve.ts';
export type { SchemaChanges, Widening, ShapeChange } from './evolve.ts';
export { acquireEpoch } from './checkpoints.ts';
export {
  FencedError,
  SinkRefusedError,
  SinkUnavailableError,
  SinkStatementError,
  SinkSchemaError,
  classifyPgError,
  fromPgError,
} from './errors.ts';
export type { RefusalKind, PgErrorClass } from './errors.ts';
