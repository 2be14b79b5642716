/**
 * The one retry/back-off vocabulary of the pipeline (STYLE 7):
 *
 *   backoffDelay(attempt, policy)  exponential, "equal jitter" (between half and all of
 *                                   min(maxDelayMs, initialDelayMs · factor^(attempt-1)))
 *   new Backoff(policy)             that delay for a run of failures: next() after each
 *                                   failure, reset() after a success (consumer loop, reader
 *                                   supervisor, position publisher)
 *   retry(task, options)            bounded attempts of one task, retrying only while the
 *                                   error is retriable, then RetriesExhaustedError with the
 *                                   last error as cause; honours an AbortSignal
 *
 * Every pause goes through an injected Clock (default systemClock), so the timing of
 * whoever retries is unit-tested on a simulated clock.
 *
 * Why ours and not p-retry / exponential-backoff: both sleep on the real setTimeout (no
 * clock to inject, so no simulated-time tests), neither knows our `CdcError.retriable`
 * (p-retry aborts only on its own AbortError class), and neither offers the failure-run
 * Backoff the long-lived loops need (they retry one promise; our loops retry forever and
 * reset on success). What is here is ~100 lines with no dependency.
 */
import { systemClock, type Clock } from './clock.ts';
import { CdcError } from './errors.ts';

export interface BackoffPolicy {
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  /** Growth per failure. Default 2. */
  readonly factor?: number;
  /** Jitter source in [0, 1). Default Math.random. */
  readonly random?: () => number;
}

export interface RetryOptions extends BackoffPolicy {
  readonly attempts: number;
  readonly signal?: AbortSignal;
  /** Defaults to: CdcError → its `retriable`; anything else → true. */
  readonly isRetriable?: (error: unknown) => boolean;
  readonly onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void;
  /** Where the pauses sleep. Default systemClock. */
  readonly clock?: Clock;
}

export class RetriesExhaustedError extends CdcError {
  constructor(readonly attempts: number, cause: unknown) {
    super(`gave up after ${attempts} attempt(s): ${cause instanceof Error ? cause.message : String(cause)}`, {
      code: 'RETRIES_EXHAUSTED',
      retriable: false,
      cause,
    });
  }
}

export function defaultIsRetriable(error: unknown): boolean {
  return error instanceof CdcError ? error.retriable : true;
}

/** The pause before retry number `attempt` (1-based): bounded by maxDelayMs, never below half its ceiling. */
export function backoffDelay(attempt: number, policy: BackoffPolicy): number {
  const factor = policy.factor ?? 2;
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * factor ** (Math.max(1, attempt) - 1));
  const random = policy.random ?? Math.random;
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Back-off over a run of failures: each next() pauses longer (bounded); reset() after a success. */
export class Backoff {
  readonly #policy: BackoffPolicy;
  #failures = 0;

  constructor(policy: BackoffPolicy) {
    this.#policy = policy;
  }

  /** Failures since the last reset(). */
  get failures(): number {
    return this.#failures;
  }

  /** Counts a failure; returns how long to wait before the next attempt. */
  next(): number {
    this.#failures += 1;
    return backoffDelay(this.#failures, this.#policy);
  }

  reset(): void {
    this.#failures = 0;
  }
}

export async function retry<T>(task: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const isRetriable = options.isRetriable ?? defaultIsRetriable;
  const clock = options.clock ?? systemClock;
  let lastError: unknown;
  for (let attempt = 1; attempt <= options.attempts; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await task(attempt);
    } catch (error) {
      lastError = error;
      if (!isRetriable(error) || attempt === options.attempts) break;
      const delayMs = backoffDelay(attempt, options);
      options.onRetry?.({ attempt, delayMs, error });
      await clock.sleep(delayMs, options.signal);
    }
  }
  if (!isRetriable(lastError)) throw lastError;
  throw new RetriesExhaustedError(options.attempts, lastError);
}

/**
 * Polls `probe` until it returns a value (not undefined) or `timeoutMs` passes; pauses
 * `intervalMs` between probes on the clock. The one bounded poll with a deadline.
 */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined>,
  options: { readonly timeoutMs: number; readonly intervalMs: number; readonly clock?: Clock; readonly signal?: AbortSignal },
): Promise<T | undefined> {
  const clock = options.clock ?? systemClock;
  const deadline = clock.now() + options.timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    const left = deadline - clock.now();
    if (left <= 0) return undefined;
    await clock.sleep(Math.min(options.intervalMs, left), options.signal);
  }
}

/** Races `work` against the clock: resolves with its value, or `undefined` after `ms` (work goes on unobserved). */
export async function withinMs<T>(work: Promise<T>, ms: number, clock: Clock = systemClock): Promise<T | undefined> {
  let timer: { cancel(): void } | undefined;
  try {
    return await Promise.race([work, new Promise<undefined>((resolve) => (timer = clock.timer(ms, () => resolve(undefined))))]);
  } finally {
    timer?.cancel();
  }
}
