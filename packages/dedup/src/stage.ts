/**
 * The dedup-gate stage for one partition, run by a Relay: ordered.<p> → deduped.<p>.
 */
import type { Bus } from '@cdc/bus';
import { Relay } from '@cdc/relay';
import type { Logger } from '@cdc/runtime';
import { DedupTransform, type GateCounters } from './gate.ts';
import type { DedupStore } from './store.ts';

export const DEDUP_STAGE = 'dedup-gate';

export interface DedupGateOptions {
  readonly bus: Bus;
  readonly store: DedupStore;
  readonly pipeline: string;
  readonly partition: number;
  readonly batchMax: number;
  readonly batchLingerMs: number;
  readonly logger: Logger;
  readonly retry?: { initialDelayMs: number; maxDelayMs: number };
  readonly signal?: AbortSignal;
}

export class DedupGate {
  readonly relay: Relay;
  readonly transform: DedupTransform;
  readonly partition: number;

  private constructor(relay: Relay, transform: DedupTransform, partition: number) {
    this.relay = relay;
    this.transform = transform;
    this.partition = partition;
  }

  static create(options: DedupGateOptions): DedupGate {
    const logger = options.logger.child({ component: DEDUP_STAGE, partition: options.partition });
    const transform = new DedupTransform({ store: options.store, partition: options.partition, logger });
    const relay = Relay.create({
      bus: options.bus,
      pipeline: options.pipeline,
      partition: options.partition,
      stage: DEDUP_STAGE,
      input: 'ordered',
      output: 'deduped',
      transform,
      logger: options.logger,
      batchMax: options.batchMax,
      batchLingerMs: options.batchLingerMs,
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    void relay.closed().then(() => logger.info({ ...transform.counters }, 'dedup stats'));
    return new DedupGate(relay, transform, options.partition);
  }

  stats(): GateCounters {
    return { ...this.transform.counters };
  }

  closed(): Promise<Error | undefined> {
    return this.relay.closed();
  }

  /** Finishes the batch in hand and flushes; idempotent. The error, if any, is closed()'s. */
  close(): Promise<void> {
    return this.relay.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
