/**
 * Committed positions → etcd, for the reader's slot feedback, in the background: the
 * sink is the truth, etcd only tells the reader how far it may confirm. One publish at a
 * time, newest per partition wins; a slow or failing etcd never holds up applying. A
 * failed publish puts its entries back (unless newer ones arrived) and is retried after
 * a pause, with or without new batches.
 */
import type { CheckpointStore, PartitionCheckpoint } from '@cdc/checkpoint';
import type { Logger } from '@cdc/runtime';
import type { LaneCheckpoint } from './merge.ts';

/** Pause before re-sending positions after etcd refused them. */
const ETCD_RETRY_MS = 1_000;

export class PositionPublisher {
  readonly #store: CheckpointStore | undefined;
  readonly #pipeline: string;
  readonly #sink: string;
  readonly #logger: Logger;
  readonly #dirty = new Map<number, PartitionCheckpoint>();
  #publishing: Promise<void> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: { store: CheckpointStore | undefined; pipeline: string; sink: string; logger: Logger }) {
    this.#store = options.store;
    this.#pipeline = options.pipeline;
    this.#sink = options.sink;
    this.#logger = options.logger;
  }

  /** Remembers a committed checkpoint (those without a watermark carry no position). */
  mark(checkpoint: LaneCheckpoint, epoch: number): void {
    if (checkpoint.watermark === undefined || this.#store === undefined) return;
    this.#dirty.set(checkpoint.partition, {
      partition: checkpoint.partition,
      positions: checkpoint.watermark.positions,
      lamport: checkpoint.watermark.lamport.toString(),
      epoch,
      updatedAt: new Date().toISOString(),
    });
  }

  /** Starts a publish of what is marked, unless one is running (it chains the rest). */
  publish(): void {
    const store = this.#store;
    if (store === undefined || this.#publishing !== undefined || this.#dirty.size === 0) return;
    const checkpoints = [...this.#dirty.values()];
    this.#dirty.clear();
    this.#publishing = store.publishPartitions(this.#pipeline, checkpoints, this.#sink).then(
      () => {
        this.#publishing = undefined;
        this.publish();
      },
      (error: unknown) => {
        this.#publishing = undefined;
        for (const checkpoint of checkpoints) {
          if (!this.#dirty.has(checkpoint.partition)) this.#dirty.set(checkpoint.partition, checkpoint);
        }
        this.#logger.warn({ err: error, partitions: checkpoints.map((c) => c.partition) }, 'publishing positions to etcd failed; will retry');
        if (this.#retryTimer === undefined && !this.#stopped) {
          this.#retryTimer = setTimeout(() => {
            this.#retryTimer = undefined;
            this.publish();
          }, ETCD_RETRY_MS);
          this.#retryTimer.unref();
        }
      },
    );
  }

  /** Fenced: a newer owner publishes from here on, ours must not overwrite its keys. */
  discard(): void {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    this.#dirty.clear();
  }

  /** The last positions reach etcd before we exit, bounded: etcd may be what is down. */
  async flush(timeoutMs = 5_000): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    const drain = async (): Promise<void> => {
      for (let round = 0; round < 3 && (this.#publishing !== undefined || this.#dirty.size > 0); round++) {
        while (this.#publishing !== undefined) await this.#publishing;
        this.publish();
      }
      while (this.#publishing !== undefined) await this.#publishing;
    };
    await Promise.race([drain(), new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
  }
}
