/**
 * The feed's timing on a simulated clock: how long next() lingers for a batch to fill,
 * that a full batch goes out at once, that an abort ends the wait. The bus is a stand-in
 * that hands out what the test published (the feed against NATS: tests/committer).
 */
import type { BusMessage } from '@cdc/bus';
import { stageSubject, type DeadLetter, type OrderedMessage } from '@cdc/core';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { MergedFeed, type FeedBus, type FeedReader } from '../src/feed.ts';
import type { MergeBatch } from '../src/merge.ts';
import { ManualClock, changeEvent, settle, watermark as heartbeat } from '@cdc/testkit';

const PIPELINE = 'feedtest';
const logger = pino({ level: 'silent' });

class StandInBus implements FeedBus {
  readonly #messages: BusMessage[] = [];
  readonly letters: DeadLetter[] = [];
  polls = 0;

  publish(partition: number, message: OrderedMessage): void {
    const data = new TextEncoder().encode(JSON.stringify(message));
    const subject = stageSubject(PIPELINE, 'deduped', partition);
    this.#messages.push({ subject, seq: this.#messages.length + 1, data, header: () => undefined, json: <T>() => JSON.parse(JSON.stringify(message)) as T });
  }

  async firstSequence(): Promise<number> {
    return 1;
  }

  async openReader(options: { subject: string; startSeq: number }): Promise<FeedReader> {
    let next = options.startSeq;
    return {
      nextBatch: async (max: number) => {
        this.polls += 1;
        const batch = this.#messages.filter((message) => message.subject === options.subject && message.seq >= next).slice(0, max);
        const last = batch.at(-1);
        if (last !== undefined) next = last.seq + 1;
        return batch;
      },
    };
  }

  async closeReader(): Promise<void> {}

  async deadLetter(_pipeline: string, letter: DeadLetter): Promise<void> {
    this.letters.push(letter);
  }
}

/** One single-event source transaction per call, in partition `partition`, at lamport `lamport`. */
function transaction(bus: StandInBus, partition: number, lamport: number): void {
  bus.publish(partition, changeEvent({ lamport, commitLsn: `0/${(lamport * 16).toString(16).toUpperCase()}`, seq: 0, key: [`k${lamport}`] }));
}

async function openFeed(bus: StandInBus, clock: ManualClock, options: { maxEvents?: number; lingerMs?: number } = {}): Promise<MergedFeed> {
  return MergedFeed.create(
    {
      pipeline: PIPELINE,
      bus,
      logger,
      stage: 'committer',
      sink: 'postgres',
      maxEvents: options.maxEvents ?? 3,
      lingerMs: options.lingerMs ?? 50,
      maxBuffered: 100,
      clock,
    },
    [
      { partition: 0, resumeSeq: 1 },
      { partition: 1, resumeSeq: 1 },
    ],
  );
}

/** next() started now, observable without awaiting it. */
function track(feed: MergedFeed, signal: AbortSignal): { readonly done: boolean; readonly batch: MergeBatch | undefined; readonly result: Promise<MergeBatch | undefined> } {
  const state = { done: false, batch: undefined as MergeBatch | undefined, result: feed.next(signal) };
  void state.result.then((batch) => {
    state.done = true;
    state.batch = batch;
  });
  return state;
}

describe('MergedFeed timing (simulated clock)', () => {
  it('with nothing to read, next() returns nothing exactly when the linger time is up, polling in short idle steps meanwhile', async () => {
    const clock = new ManualClock();
    const bus = new StandInBus();
    const feed = await openFeed(bus, clock, { lingerMs: 50 });
    const next = track(feed, new AbortController().signal);
    await clock.advance(49);
    expect(next.done).toBe(false);
    // Idle polls every 5 ms, not a busy loop: 0, 5, …, 45.
    expect(bus.polls / 2).toBe(10);
    await clock.advance(1);
    expect(next.done).toBe(true);
    expect(next.batch).toBeUndefined();
    await feed.close();
  });

  it('a full batch goes out at once, without waiting for the linger', async () => {
    const clock = new ManualClock();
    const bus = new StandInBus();
    for (const lamport of [10, 20, 30]) transaction(bus, lamport === 20 ? 1 : 0, lamport);
    bus.publish(0, heartbeat(30));
    bus.publish(1, heartbeat(30));
    const feed = await openFeed(bus, clock, { maxEvents: 3, lingerMs: 50 });
    const started = clock.now();
    const next = track(feed, new AbortController().signal);
    await settle();
    expect(next.done).toBe(true);
    expect(clock.now()).toBe(started);
    expect(next.batch?.events.map((merged) => merged.event.lamport)).toEqual(['10', '20', '30']);
    await feed.close();
  });

  it('while input keeps arriving the batch waits for it (up to the linger); it goes out when full', async () => {
    const clock = new ManualClock();
    const bus = new StandInBus();
    const feed = await openFeed(bus, clock, { maxEvents: 3, lingerMs: 50 });
    const started = clock.now();
    const next = track(feed, new AbortController().signal);
    // Nothing releasable yet: the feed polls in idle steps.
    await clock.advance(7);
    expect(next.done).toBe(false);
    transaction(bus, 0, 10);
    bus.publish(0, heartbeat(10));
    bus.publish(1, heartbeat(10));
    transaction(bus, 1, 20);
    transaction(bus, 0, 30);
    bus.publish(0, heartbeat(30));
    bus.publish(1, heartbeat(30));
    // The idle sleep that started at 5 ends at 10: that poll finds the batch full.
    await clock.advance(3);
    expect(next.done).toBe(true);
    expect(clock.now() - started).toBe(10);
    expect(next.batch?.events).toHaveLength(3);
    await feed.close();
  });

  it('a batch that does not fill goes out as soon as a poll finds the input idle, without waiting out the linger', async () => {
    const clock = new ManualClock();
    const bus = new StandInBus();
    transaction(bus, 0, 10);
    bus.publish(0, heartbeat(10));
    bus.publish(1, heartbeat(10));
    const feed = await openFeed(bus, clock, { maxEvents: 3, lingerMs: 50 });
    const started = clock.now();
    const next = track(feed, new AbortController().signal);
    await settle();
    expect(next.done).toBe(true);
    expect(clock.now()).toBe(started);
    expect(next.batch?.events.map((merged) => merged.event.lamport)).toEqual(['10']);
    await feed.close();
  });

  it('an abort ends the linger at once', async () => {
    const clock = new ManualClock();
    const bus = new StandInBus();
    const feed = await openFeed(bus, clock, { lingerMs: 1_000 });
    const controller = new AbortController();
    const started = clock.now();
    const next = track(feed, controller.signal);
    await clock.advance(10);
    expect(next.done).toBe(false);
    controller.abort(new Error('stop'));
    await settle();
    expect(next.done).toBe(true);
    expect(next.batch).toBeUndefined();
    expect(clock.now() - started).toBe(10);
    expect(clock.waiting).toBe(0);
    await feed.close();
  });
});
