/**
 * Time, passed in (STYLE 12). Every timing decision in the pipeline — back-off pauses,
 * the reader's supervisor and WAL heartbeat, the relay's health and linger, the
 * committer's feed linger and position publisher — reads this interface instead of
 * Date.now()/setTimeout, so tests drive it with a simulated clock (@cdc/testkit
 * ManualClock) without servers or real sleeps.
 */

export interface Clock {
  /** Milliseconds since the epoch (Date.now in production): good enough for deadlines and "since when". */
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `callback` once after `ms` unless cancelled; never keeps the process alive. */
  timer(ms: number, callback: () => void): Cancel;
  /** Calls `callback` every `ms` until cancelled (the first call after `ms`); never keeps the process alive. */
  every(ms: number, callback: () => void): Cancel;
}

export interface Cancel {
  cancel(): void;
}

/** A real sleep that honours an AbortSignal (systemClock.sleep). */
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

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => sleep(ms, signal),
  timer: (ms, callback) => {
    const handle = setTimeout(callback, ms);
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
  every: (ms, callback) => {
    const handle = setInterval(callback, ms);
    handle.unref();
    return { cancel: () => clearInterval(handle) };
  },
};
