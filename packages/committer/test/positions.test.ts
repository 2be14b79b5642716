/**
 * The position publisher's timing on a simulated clock: a refused publish is retried
 * after a growing back-off whether or not new batches come, and a stop's flush is
 * bounded when etcd hangs. The store is a stand-in (against etcd: tests/committer).
 */
import type { PartitionCheckpoint } from '@cdc/checkpoint';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { LaneCheckpoint } from '../src/merge.ts';
import { PositionPublisher, type PositionStore } from '../src/positions.ts';
import { ManualClock, settle } from '@cdc/testkit';

const logger = pino({ level: 'silent' });

const checkpoint = (partition: number, lamport: bigint): LaneCheckpoint => ({
  partition,
  resumeSeq: 7,
  lastKey: undefined,
  watermark: { lamport, positions: { src: '0/100' } },
});

/** A store whose publishes fail while `failing` is true (or hang while `hanging` is). */
class StandInStore implements PositionStore {
  failing = true;
  hanging = false;
  readonly calls: PartitionCheckpoint[][] = [];

  async publishPartitions(_pipeline: string, checkpoints: readonly PartitionCheckpoint[]): Promise<void> {
    this.calls.push([...checkpoints]);
    if (this.hanging) return new Promise(() => undefined);
    if (this.failing) throw new Error('etcd refused');
  }
}

describe('PositionPublisher timing (simulated clock)', () => {
  it('retries a refused publish after a back-off that grows while etcd keeps refusing, without new batches', async () => {
    const clock = new ManualClock();
    const store = new StandInStore();
    // random = 1: each delay is its ceiling, initialDelayMs × 2^(attempt − 1).
    const publisher = new PositionPublisher({ store, pipeline: 'p', sink: 'postgres', logger, clock, retry: { initialDelayMs: 1_000, maxDelayMs: 10_000, random: () => 1 } });
    publisher.mark(checkpoint(0, 10n), 1);
    publisher.publish();
    await settle();
    expect(store.calls).toHaveLength(1);
    await clock.advance(999);
    expect(store.calls).toHaveLength(1);
    await clock.advance(1);
    expect(store.calls).toHaveLength(2);
    // Second refusal: twice the pause.
    await clock.advance(1_999);
    expect(store.calls).toHaveLength(2);
    store.failing = false;
    await clock.advance(1);
    expect(store.calls).toHaveLength(3);
    expect(store.calls[2]).toMatchObject([{ partition: 0, lamport: '10', epoch: 1 }]);
    // Published: nothing more is sent until something new is marked.
    await clock.advance(60_000);
    expect(store.calls).toHaveLength(3);
  });

  it('a newer position marked while a publish failed wins the retry', async () => {
    const clock = new ManualClock();
    const store = new StandInStore();
    const publisher = new PositionPublisher({ store, pipeline: 'p', sink: 'postgres', logger, clock, retry: { initialDelayMs: 1_000, maxDelayMs: 10_000, random: () => 1 } });
    publisher.mark(checkpoint(0, 10n), 1);
    publisher.publish();
    await settle();
    publisher.mark(checkpoint(0, 20n), 1);
    store.failing = false;
    await clock.advance(1_000);
    expect(store.calls.at(-1)).toMatchObject([{ partition: 0, lamport: '20' }]);
  });

  it('flush on stop gives up after its bound when etcd hangs', async () => {
    const clock = new ManualClock();
    const store = new StandInStore();
    store.hanging = true;
    const publisher = new PositionPublisher({ store, pipeline: 'p', sink: 'postgres', logger, clock });
    publisher.mark(checkpoint(0, 10n), 1);
    let flushed = false;
    void publisher.flush(5_000).then(() => (flushed = true));
    await clock.advance(4_999);
    expect(flushed).toBe(false);
    await clock.advance(1);
    expect(flushed).toBe(true);
    expect(store.calls).toHaveLength(1);
  });
});
