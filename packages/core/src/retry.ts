/**
 * The one retry helper: exponential back-off with full jitter, bounded in attempts,
 * retries only while the error is retriable, then throws RetriesExhaustedError with
 * the last error as cause. Honours an AbortSignal while waiting.
 */
import { CdcError } from './errors.ts';

export interface RetryOptions {
  readonly attempts: number;
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor?: number;
  readonly signal?: AbortSignal;
  /** Defaults to: CdcError → its `retriable`; anything else → true. */
  readonly isRetriable?: (error: unknown) => boolean;
  readonly onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void;
  readonly random?: () => number;
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

export function backoffDelay(attempt: number, options: Pick<RetryOptions, 'initialDelayMs' | 'maxDelayMs' | 'factor' | 'random'>): number {
  const factor = options.factor ?? 2;
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * factor ** (attempt - 1));
  const random = options.random ?? Math.random;
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function retry<T>(task: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const isRetriable = options.isRetriable ?? defaultIsRetriable;
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
      await sleep(delayMs, options.signal);
    }
  }
  if (!isRetriable(lastError)) throw lastError;
  throw new RetriesExhaustedError(options.attempts, lastError);
}
