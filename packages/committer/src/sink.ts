/**
 * What a sink (PostgreSQL, Kafka) gives the committer: its checkpoints, and applying one
 * batch of whole source transactions (or a chunk of a large one) together with the
 * checkpoints it moves, atomically. Everything else — reading and merging the
 * partitions, retrying, rewinding, dead letters, positions, draining — is the
 * committer's (./committer.ts).
 *
 *   Committer.create(sink, starts) ─► sink.apply(batch) … ─► (failure) sink.afterFailure(error)
 *                                       ▲                      'retry':   the same batch again
 *                                       └── feed.rewind ◄───── 'recover': sink.recover() → starts
 */
import type { CdcError } from '@cdc/core';
import type { LaneCheckpoint, LaneStart, MergeBatch, MergedEvent } from './merge.ts';

/** One event of a batch the sink cannot take: dead-lettered, the batch goes on without it. */
export interface SinkRefusal {
  readonly event: MergedEvent;
  /** Its `code` and `message` go into the letter, with `context.table`, `column` and `sqlstate` where set. */
  readonly error: CdcError;
}

export interface ApplyContext {
  /** 0 for the first attempt of this batch; a retry may find its COMMIT already landed. */
  readonly attempt: number;
  /** The checkpoints the sink holds for every partition, before this batch. */
  readonly committed: readonly LaneStart[];
  /** Dead-letters refused events (awaits the stream's ack). Call it before the commit: a crash then re-sends, never loses, a letter. */
  deadLetter(refusals: readonly SinkRefusal[]): Promise<void>;
}

export interface Applied {
  /**
   * The checkpoints now committed in the sink, or undefined while the sink holds the
   * batch open (a chunk of a streamed source transaction, committed with a later one).
   */
  readonly committed: readonly LaneCheckpoint[] | undefined;
  /** Change events committed now (refused ones excluded); 0 while uncommitted. */
  readonly applied: number;
}

export interface Sink<Stats extends object = object> {
  /** This sink's name: its etcd positions (the reader's SINKS) and its dead letters. */
  readonly name: string;
  /** The owner epoch published with positions (0 for a sink that fences otherwise). */
  readonly epoch: number;
  /** What the sink commits, for the log line after a recovery: 'the last <this>'. */
  readonly committedUnit: string;
  /** The checkpoints the sink holds, read from it (first undoing whatever a failure left open). */
  recover(): Promise<readonly LaneStart[]>;
  apply(batch: MergeBatch, context: ApplyContext): Promise<Applied>;
  /**
   * After `apply` threw: 'retry' — nothing of the batch is in the sink, or a retry can
   * tell (`attempt`): offer the same batch again; 'recover' — the outcome is unknown or
   * part of a streamed transaction is lost: recover() and rewind the feed first.
   */
  afterFailure(error: unknown): 'retry' | 'recover';
  /** A newer committer owns the sink: our positions must not overwrite its keys. */
  isFenced(error: unknown): boolean;
  /** Counters of its own, for stats() and the progress line. */
  stats(): Stats;
  /** Rolls back whatever is still open and releases connections. Idempotent. */
  close(): Promise<void>;
}
