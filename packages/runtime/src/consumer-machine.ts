/**
 * The consumer loop every stage runs, as an xstate v5 machine:
 *
 *          START            PROCESS             COMMIT
 *   idle ────────► fetching ───────► processing ──────► committed
 *                   ▲  │ ▲ FETCH (empty poll)             │
 *                   │  │ └────────────────────────────────┘ FETCH
 *                   │  │ FAIL         FAIL (from fetching/processing)
 *                   │  ▼
 *                  retry ◄── RETRY ── failed
 *          (back-off elapsed: FETCH)
 *
 *   STOP from any state but processing → stopped (final). A stop during processing
 *   waits for COMMIT or FAIL: a batch is never abandoned half-applied.
 *
 * The machine is the referee: `ConsumerLoop.step()` throws IllegalTransitionError for
 * any event the current state does not accept (for example COMMIT twice, or PROCESS
 * straight after COMMIT without a fetch). xstate itself ignores such events silently,
 * which would hide exactly the bugs this machine exists to catch.
 */
import { Backoff, CdcError, systemClock, type BackoffPolicy, type Clock } from '@cdc/core';
import { createActor, setup, type Actor } from 'xstate';
import type { Logger } from './logger.ts';

export type ConsumerEvent =
  | { type: 'START' }
  | { type: 'FETCH' }
  | { type: 'PROCESS' }
  | { type: 'COMMIT' }
  | { type: 'FAIL' }
  | { type: 'RETRY' }
  | { type: 'STOP' };

export type ConsumerState = 'idle' | 'fetching' | 'processing' | 'committed' | 'failed' | 'retry' | 'stopped';

export const consumerMachine = setup({
  types: { events: {} as ConsumerEvent },
}).createMachine({
  id: 'consumer',
  initial: 'idle',
  states: {
    idle: { on: { START: 'fetching', STOP: 'stopped' } },
    fetching: { on: { PROCESS: 'processing', FETCH: 'fetching', FAIL: 'failed', STOP: 'stopped' } },
    processing: { on: { COMMIT: 'committed', FAIL: 'failed' } },
    committed: { on: { FETCH: 'fetching', STOP: 'stopped' } },
    failed: { on: { RETRY: 'retry', STOP: 'stopped' } },
    retry: { on: { FETCH: 'fetching', STOP: 'stopped' } },
    stopped: { type: 'final' },
  },
});

export class IllegalTransitionError extends CdcError {
  constructor(
    readonly from: ConsumerState,
    readonly event: ConsumerEvent['type'],
    readonly consumer: string,
  ) {
    super(`${consumer}: illegal transition ${from} --${event}--> (not allowed by the consumer machine)`, {
      code: 'ILLEGAL_TRANSITION',
      retriable: false,
      context: { from, event, consumer },
    });
  }
}

/** The three things a stage does; the loop does the rest. */
export interface ConsumerHandler<Batch> {
  /** Waits for work; resolves with undefined when nothing arrived in time. */
  fetch(signal: AbortSignal): Promise<Batch | undefined>;
  /** Applies the batch and makes it durable (publish + PubAck, or sink commit). */
  process(batch: Batch, signal: AbortSignal): Promise<void>;
  /** After the batch is durable: ack inputs, publish checkpoints. */
  commit(batch: Batch): Promise<void>;
  /** Called once when the loop ends, after the last commit. */
  onStop?(): Promise<void>;
}

export interface ConsumerLoopOptions {
  readonly name: string;
  readonly logger: Logger;
  /** Back-off between failed iterations (core Backoff). Default 200 ms doubling to 10 s. */
  readonly retry?: BackoffPolicy;
  /** Where the back-off sleeps. Default systemClock. */
  readonly clock?: Clock;
  /** Consecutive failures after which the error is rethrown (the process exits, a supervisor restarts it). 0 = never. */
  readonly maxConsecutiveFailures?: number;
  readonly onError?: (error: unknown, attempt: number) => void;
}

export class ConsumerLoop<Batch> {
  readonly #actor: Actor<typeof consumerMachine>;
  readonly #options: ConsumerLoopOptions;
  readonly #backoff: Backoff;
  readonly #clock: Clock;

  constructor(options: ConsumerLoopOptions) {
    this.#options = options;
    this.#backoff = new Backoff(options.retry ?? { initialDelayMs: 200, maxDelayMs: 10_000 });
    this.#clock = options.clock ?? systemClock;
    this.#actor = createActor(consumerMachine);
    this.#actor.start();
  }

  get state(): ConsumerState {
    return this.#actor.getSnapshot().value as ConsumerState;
  }

  get consecutiveFailures(): number {
    return this.#backoff.failures;
  }

  /** Sends one event, or throws if the machine does not allow it in the current state. */
  step(type: ConsumerEvent['type']): ConsumerState {
    const snapshot = this.#actor.getSnapshot();
    if (!snapshot.can({ type })) {
      throw new IllegalTransitionError(snapshot.value as ConsumerState, type, this.#options.name);
    }
    this.#actor.send({ type });
    return this.state;
  }

  /** Runs fetch → process → commit until the signal aborts; drains the batch in hand first. */
  async run(handler: ConsumerHandler<Batch>, signal: AbortSignal): Promise<void> {
    const { logger } = this.#options;
    this.step('START');
    try {
      while (!signal.aborted) {
        try {
          const batch = await handler.fetch(signal);
          if (batch === undefined) {
            if (!signal.aborted) this.step('FETCH');
            continue;
          }
          this.step('PROCESS');
          // The batch in hand is finished even when a stop arrives meanwhile: the
          // inner signal is never aborted, the loop checks `signal` only between batches.
          await handler.process(batch, new AbortController().signal);
          await handler.commit(batch);
          this.step('COMMIT');
          this.#backoff.reset();
          if (!signal.aborted) this.step('FETCH');
        } catch (error) {
          if (error instanceof IllegalTransitionError) throw error;
          if (signal.aborted && this.state === 'fetching') break;
          this.step('FAIL');
          const delay = this.#backoff.next();
          const failures = this.#backoff.failures;
          this.#options.onError?.(error, failures);
          logger.warn({ err: error, attempt: failures, delay_ms: delay, consumer: this.#options.name }, 'consumer batch failed; will retry');
          const max = this.#options.maxConsecutiveFailures ?? 0;
          if (max > 0 && failures >= max) throw error;
          this.step('RETRY');
          await this.#clock.sleep(delay, signal).catch(() => undefined);
          if (!signal.aborted) this.step('FETCH');
        }
      }
    } finally {
      if (this.state !== 'stopped' && this.state !== 'processing') this.step('STOP');
      this.#actor.stop();
      await handler.onStop?.();
    }
  }
}
