/**
 * Bounded waiting for tests: every wait has a deadline and says what it waited for,
 * so a hung server shows up as one clear failure instead of a vitest timeout.
 */
import { sleep } from '@cdc/core';

export class WaitTimeoutError extends Error {
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    options?: ErrorOptions,
  ) {
    super(`timed out after ${timeoutMs} ms waiting for ${what}`, options);
    this.name = 'WaitTimeoutError';
  }
}

export interface WaitOptions {
  /** What is awaited, for the error message. */
  readonly what: string;
  readonly timeoutMs: number;
  /** Delay between probes; default 50 ms. */
  readonly intervalMs?: number;
}

/**
 * Polls `probe` until it returns something other than `undefined`/`false`, and returns that.
 * A probe that throws is retried; the last error is the timeout's cause.
 */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  options: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  const interval = options.intervalMs ?? 50;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new WaitTimeoutError(options.what, options.timeoutMs, lastError === undefined ? undefined : { cause: lastError });
    }
    await sleep(Math.min(interval, left));
  }
}

/** Rejects with WaitTimeoutError if `promise` does not settle within `timeoutMs`. */
export async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(what, timeoutMs)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
