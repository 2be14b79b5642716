/**
 * Time, passed in (STYLE 12): the feed's linger and idle polls and the position
 * publisher's retry pauses and flush bound read it, so their timing is tested on a
 * simulated clock (test/manual-clock.ts) without servers or sleeps.
 */
import { sleep } from '@cdc/core';

export interface Clock {
  /** Milliseconds, monotonic enough for deadlines (Date.now in production). */
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `callback` after `ms` unless cancelled; never keeps the process alive. */
  timer(ms: number, callback: () => void): { cancel(): void };
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => sleep(ms, signal),
  timer: (ms, callback) => {
    const handle = setTimeout(callback, ms);
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
};
