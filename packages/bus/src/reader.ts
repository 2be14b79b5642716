/**
 * Reads one subject of a stream, in stream order, from a stored sequence, with an
 * ordered consumer: the client recreates it from the last sequence it saw if anything
 * goes missing, and nothing is acknowledged — the stage's checkpoint lives in what it
 * publishes (docs/design.md). `nextBatch` returns up to `max` messages, waiting at
 * most `lingerMs` for the first one; the consumer's own buffer is bounded by
 * `bufferMessages` (back-pressure to the server when we fall behind).
 */
import { systemClock, type Cancel, type Clock } from '@cdc/core';
import type { ConsumerMessages, JetStreamClient } from '@nats-io/jetstream';
import { DeliverPolicy } from '@nats-io/jetstream';
import { toBusMessage, type BusMessage } from './message.ts';

export class StreamReader {
  readonly #messages: ConsumerMessages;
  readonly #iterator: AsyncIterator<BusMessage>;
  readonly #clock: Clock;
  #pending: Promise<IteratorResult<BusMessage>> | undefined;
  #closed = false;

  private constructor(messages: ConsumerMessages, clock: Clock) {
    this.#messages = messages;
    this.#clock = clock;
    const source = messages[Symbol.asyncIterator]();
    this.#iterator = {
      next: async () => {
        const result = await source.next();
        if (result.done) return { done: true, value: undefined };
        const msg = result.value;
        return { done: false, value: toBusMessage(msg) };
      },
    };
  }

  static async create(
    js: JetStreamClient,
    options: { stream: string; subject: string; startSeq: number; bufferMessages?: number; clock?: Clock | undefined },
  ): Promise<StreamReader> {
    const consumer = await js.consumers.get(options.stream, {
      filter_subjects: options.subject,
      deliver_policy: options.startSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
      ...(options.startSeq > 1 ? { opt_start_seq: options.startSeq } : {}),
    });
    const messages = await consumer.consume({ max_messages: options.bufferMessages ?? 1000 });
    return new StreamReader(messages, options.clock ?? systemClock);
  }

  /** Up to `max` messages; waits at most `lingerMs` for the first, then takes what is already buffered. */
  async nextBatch(max: number, lingerMs: number, signal?: AbortSignal): Promise<BusMessage[]> {
    const batch: BusMessage[] = [];
    const deadline = this.#clock.now() + lingerMs;
    while (batch.length < max && !this.#closed && !signal?.aborted) {
      this.#pending ??= this.#iterator.next();
      const wait = batch.length === 0 ? Math.max(0, deadline - this.#clock.now()) : 0;
      const result = await raceTimeout(this.#pending, wait, this.#clock, signal);
      if (result === TIMEOUT) break;
      this.#pending = undefined;
      if (result.done) {
        this.#closed = true;
        break;
      }
      batch.push(result.value);
    }
    return batch;
  }

  /**
   * Resolves (never rejects) once a message is ready to take, or the reader has ended:
   * a caller with several readers waits on all of them at once instead of polling.
   */
  ready(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#pending ??= this.#iterator.next();
    return this.#pending.then(
      () => undefined,
      () => undefined,
    );
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  /**
   * Stops the consumer. nats.js settles `close()` only after every message it already
   * buffered has been taken from the iterator, so the rest of the buffer is drained
   * (and dropped: nothing is acknowledged, a new reader starts from a stored sequence)
   * while closing; the wait is bounded either way.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closing = this.#messages.close();
    const drain = (async () => {
      const pending = this.#pending;
      this.#pending = undefined;
      if (pending) await pending.catch(() => undefined);
      for (;;) {
        const result = await this.#iterator.next().catch(() => ({ done: true as const, value: undefined }));
        if (result.done) return;
      }
    })();
    await raceTimeout(Promise.all([closing, drain]), 2_000, this.#clock);
  }
}

const TIMEOUT = Symbol('timeout');

/** The promise, or TIMEOUT after `ms` or when `signal` aborts (a stop never waits out a long first-message wait). */
async function raceTimeout<T>(promise: Promise<T>, ms: number, clock: Clock, signal?: AbortSignal): Promise<T | typeof TIMEOUT> {
  if (ms <= 0 || signal?.aborted) {
    // Only take what is already resolved: a microtask turn settles a ready value.
    return Promise.race([promise, new Promise<typeof TIMEOUT>((resolve) => setImmediate(() => resolve(TIMEOUT)))]);
  }
  let timer: Cancel | undefined;
  let onAbort: (() => void) | undefined;
  const timeout = new Promise<typeof TIMEOUT>((resolve) => {
    timer = clock.timer(ms, () => resolve(TIMEOUT));
    onAbort = () => resolve(TIMEOUT);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    timer?.cancel();
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}
