/**
 * @cdc/committer — what every committer does, whatever its sink: deduped.<p> (every
 * partition) merged into one order, applied to a Sink exactly once, committed positions
 * published to etcd.
 *
 *   const sink = await SomeSink.connect(...);              // implements Sink
 *   const committer = await Committer.create(sink, await sink.recover(), {
 *     pipeline: 'orders', name: 'committer', bus, checkpointStore, logger, signal,
 *   });
 *   const error = await committer.closed(); // resolves when drained or fenced
 *
 * Invariants: PartitionMerger releases only what no partition can still precede, in
 * the one total order, and cuts batches between source transactions (a larger one than
 * `streamAbove` comes in chunks, startsInside/endsInside); each batch's checkpoints go
 * to the sink with it; a failed batch is retried as it was, or — when the sink cannot
 * tell its outcome — the feed rewinds to what the sink holds.
 */
export { Committer } from './committer.ts';
export type { CommitterOptions, CommitterStats, CommitterState, CommitterCounters, BatchObserver } from './committer.ts';
export { registerCommitterMetrics } from './metrics.ts';
export type { Sink, SinkRefusal, ApplyContext, Applied } from './sink.ts';
export { COMMITTER_DEFAULTS } from './defaults.ts';
export { PartitionMerger, sameTransaction } from './merge.ts';
export type { LaneStart, LaneCheckpoint, MergeBatch, MergedEvent, Watermark, PushResult, TakeOptions } from './merge.ts';
export type { FeedBus, FeedReader, FeedCounters } from './feed.ts';
