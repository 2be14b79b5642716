/**
 * Committed positions → etcd, for the reader's slot feedback, in the background: the
 * sink is the truth, etcd only tells the reader how far it may confirm. One publish at a
 * time, newest per partition wins; a slow or failing etcd never holds up applying. A
 * failed publish puts its entries back (unless newer ones arrived) and is retried after
 * a back-off (core Backoff, growing while etcd keeps refusing), with or without new
 * batches.
 */
import type { CheckpointStore, PartitionCheckpoint } from '@cdc/checkpoint';
import { Backoff, systemClock, type Clock } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { COMMITTER_DEFAULTS } from './defaults.ts';
import type { LaneCheckpoint } from './merge.ts';

/** Where positions go: a @cdc/checkpoint CheckpointStore (a unit test passes a stand-in). */
export type PositionStore = Pick<CheckpointStore, 'publishPartitions'>;

export interface PositionPublisherOptions {
  /** Omit to publish nothing (tests). */
  readonly store: PositionStore | undefined;
  readonly pipeline: string;
  readonly sink: string;
  readonly logger: Logger;
  /** Back-off between failed publishes. */
  readonly retry?: { readonly initialDelayMs: number; readonly maxDelayMs: number; readonly random?: () => number };
  /** Default: the system clock. */
  readonly clock?: Clock;
  /**
   * Least time between two publishes (default COMMITTER_DEFAULTS.positionsIntervalMs):
   * slot feedback is read every few hundred ms, and every put is an fsync in etcd.
   */
  readonly minIntervalMs?: number;
}

export class PositionPublisher {
  readonly #store: PositionStore | undefined;
  readonly #pipeline: string;
  readonly #sink: string;
  readonly #logger: Logger;
  /** Publishes failed in a row: the next pause grows with it. */
  readonly #backoff: Backoff;
  readonly #clock: Clock;
  readonly #dirty = new Map<number, PartitionCheckpoint>();
  #publishing: Promise<void> | undefined;
  #retryTimer: { cancel(): void } | undefined;
  #intervalTimer: { cancel(): void } | undefined;
  readonly #minIntervalMs: number;
  #lastStartedAt = Number.NEGATIVE_INFINITY;
  #stopped = false;

  constructor(options: PositionPublisherOptions) {
    this.#store = options.store;
    this.#pipeline = options.pipeline;
    this.#sink = options.sink;
    this.#logger = options.logger;
    this.#backoff = new Backoff(options.retry ?? COMMITTER_DEFAULTS.positionsRetry);
    this.#clock = options.clock ?? systemClock;
    this.#minIntervalMs = options.minIntervalMs ?? COMMITTER_DEFAULTS.positionsIntervalMs;
  }

  /** Remembers a committed checkpoint (those without a watermark carry no position). */
  mark(checkpoint: LaneCheckpoint, epoch: number): void {
    if (checkpoint.watermark === undefined || this.#store === undefined) return;
    this.#dirty.set(checkpoint.partition, {
      partition: checkpoint.partition,
      positions: checkpoint.watermark.positions,
      lamport: checkpoint.watermark.lamport.toString(),
      epoch,
      updatedAt: new Date(this.#clock.now()).toISOString(),
    });
  }

  /** Starts a publish of what is marked, unless one is running (it chains the rest). */
  publish(): void {
    const store = this.#store;
    if (store === undefined || this.#publishing !== undefined || this.#dirty.size === 0) return;
    // Coalesced: what is marked meanwhile goes in the next publish (newest per partition).
    const wait = this.#lastStartedAt + this.#minIntervalMs - this.#clock.now();
    if (wait > 0 && !this.#stopped) {
      this.#intervalTimer ??= this.#clock.timer(wait, () => {
        this.#intervalTimer = undefined;
        this.publish();
      });
      return;
    }
    this.#lastStartedAt = this.#clock.now();
    const checkpoints = [...this.#dirty.values()];
    this.#dirty.clear();
    this.#publishing = store.publishPartitions(this.#pipeline, checkpoints, this.#sink).then(
      () => {
        this.#publishing = undefined;
        this.#backoff.reset();
        this.publish();
      },
      (error: unknown) => {
        this.#publishing = undefined;
        for (const checkpoint of checkpoints) {
          if (!this.#dirty.has(checkpoint.partition)) this.#dirty.set(checkpoint.partition, checkpoint);
        }
        const delayMs = this.#backoff.next();
        this.#logger.warn(
          { err: error, partitions: checkpoints.map((c) => c.partition), attempt: this.#backoff.failures, delay_ms: delayMs },
          'publishing positions to etcd failed; will retry',
        );
        if (this.#retryTimer === undefined && !this.#stopped) {
          this.#retryTimer = this.#clock.timer(delayMs, () => {
            this.#retryTimer = undefined;
            this.publish();
          });
        }
      },
    );
  }

  /** The last publish to etcd failed and is being retried (for cdc_connection_up{target="etcd"}). */
  get failing(): boolean {
    return this.#backoff.failures > 0;
  }

  /** Fenced: a newer owner publishes from here on, ours must not overwrite its keys. */
  discard(): void {
    this.#stopped = true;
    this.#retryTimer?.cancel();
    this.#retryTimer = undefined;
    this.#intervalTimer?.cancel();
    this.#intervalTimer = undefined;
    this.#dirty.clear();
  }

  /** The last positions reach etcd before we exit, bounded: etcd may be what is down. */
  async flush(timeoutMs: number = COMMITTER_DEFAULTS.positionsFlushMs): Promise<void> {
    this.#stopped = true;
    this.#retryTimer?.cancel();
    this.#retryTimer = undefined;
    this.#intervalTimer?.cancel();
    this.#intervalTimer = undefined;
    const drain = async (): Promise<void> => {
      for (let round = 0; round < 3 && (this.#publishing !== undefined || this.#dirty.size > 0); round++) {
        while (this.#publishing !== undefined) await this.#publishing;
        this.publish();
      }
      while (this.#publishing !== undefined) await this.#publishing;
    };
    let bound: { cancel(): void } | undefined;
    await Promise.race([drain(), new Promise<void>((resolve) => (bound = this.#clock.timer(timeoutMs, resolve)))]);
    bound?.cancel();
  }
}
