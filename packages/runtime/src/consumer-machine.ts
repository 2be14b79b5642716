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
 *
 * Each (state, event) pair is resolved by xstate once per process (`nextConsumerState`)
 * and remembered: the machine has no context, guards or actions, so its answer for a pair
 * never changes. A live actor took two macrosteps per step (`can`, then `send`) and cost
 * a relay ~10 % of its CPU in many-small-batch loads (issue 12, the latency workload's
 * profile); the remembered answer is the same one, checked against a live actor for every
 * pair in consumer-machine.test.ts.
 */
import { Backoff, CdcError, systemClock, type BackoffPolicy, type Clock } from '@cdc/core';
import { setup, transition } from 'xstate';
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

/** (state, event) → the state xstate's machine goes to, or null where it refuses the event; filled on first use. */
const TRANSITIONS = new Map<string, ConsumerState | null>();

/** Where the consumer machine goes from `from` on `type`; undefined where it does not accept the event. */
export function nextConsumerState(from: ConsumerState, type: ConsumerEvent['type']): ConsumerState | undefined {
  const key = `${from} ${type}`;
  let next = TRANSITIONS.get(key);
  if (next === undefined) {
    const snapshot = consumerMachine.resolveState({ value: from, context: {} });
    next = snapshot.can({ type }) ? (transition(consumerMachine, snapshot, { type })[0].value as ConsumerState) : null;
    TRANSITIONS.set(key, next);
  }
  return next ?? undefined;
}

/** A signal never aborted: the batch in hand is always finished (one object for every batch). */
const NEVER_ABORTED = new AbortController().signal;

export class ConsumerLoop<Batch> {
  readonly #options: ConsumerLoopOptions;
  readonly #backoff: Backoff;
  readonly #clock: Clock;
  #state: ConsumerState = 'idle';

  constructor(options: ConsumerLoopOptions) {
    this.#options = options;
    this.#backoff = new Backoff(options.retry ?? { initialDelayMs: 200, maxDelayMs: 10_000 });
    this.#clock = options.clock ?? systemClock;
  }

  get state(): ConsumerState {
    return this.#state;
  }

  get consecutiveFailures(): number {
    return this.#backoff.failures;
  }

  /** Sends one event, or throws if the machine does not allow it in the current state. */
  step(type: ConsumerEvent['type']): ConsumerState {
    const next = nextConsumerState(this.#state, type);
    if (next === undefined) throw new IllegalTransitionError(this.#state, type, this.#options.name);
    this.#state = next;
    return next;
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
          await handler.process(batch, NEVER_ABORTED);
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
      await handler.onStop?.();
    }
  }
}
