/**
 * @cdc/reorder — Lamport merge of a partition's sources.
 *
 *   const merger = new LamportMerger({ sources: ['pg1', 'pg2'], maxBuffered: 50_000 });
 *   merger.accept(message, inputSeq, payload);   // ChangeEvent or SourceHeartbeat
 *   for (const item of merger.release()) publish(item);  // events in order, then a watermark
 *
 *   const reorderer = Reorderer.create({ bus, pipeline, partition, sources, maxBuffered, batchMax, batchLingerMs, logger, signal });
 */
export { LamportMerger, createCounters } from './merger.ts';
export type {
  MergerOptions,
  MergerRestore,
  MergerCounters,
  MergerHealth,
  SourceStats,
  AcceptResult,
  Released,
  ReleasedEvent,
  ReleasedWatermark,
} from './merger.ts';
export { Reorderer, ReorderTransform, REORDERER_STAGE } from './stage.ts';
export { REORDERER_DEFAULTS } from './defaults.ts';
export type { ReordererOptions, ReorderTransformOptions } from './stage.ts';
