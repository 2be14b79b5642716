/**
 * A simulated Clock (@cdc/core) for timing tests: time moves only when the test calls
 * advance(); due sleeps, timers and intervals then fire in time order, each followed by
 * the promise chains it starts. No real sleep anywhere.
 *
 *   const clock = new ManualClock();
 *   const done = retry(task, { attempts: 3, initialDelayMs: 100, maxDelayMs: 1_000, clock });
 *   await clock.advance(100);
 */
import type { Cancel, Clock } from '@cdc/core';

interface Pending {
  readonly at: number;
  readonly order: number;
  readonly fire: () => void;
}

/** Lets every promise chain that is ready run (a macrotask turn: nothing is waited for). */
export async function settle(): Promise<void> {
  for (let turn = 0; turn < 5; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class ManualClock implements Clock {
  #now: number;
  #order = 0;
  readonly #pending = new Set<Pending>();

  constructor(start = 1_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  /** Sleeps and timers not yet fired. */
  get waiting(): number {
    return this.#pending.size;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const entry = this.#add(ms, () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      const onAbort = (): void => {
        this.#pending.delete(entry);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  timer(ms: number, callback: () => void): Cancel {
    const entry = this.#add(ms, callback);
    return { cancel: () => this.#pending.delete(entry) };
  }

  every(ms: number, callback: () => void): Cancel {
    const period = Math.max(1, ms);
    let entry: Pending;
    const arm = (): void => {
      entry = this.#add(period, () => {
        arm();
        callback();
      });
    };
    arm();
    return { cancel: () => this.#pending.delete(entry) };
  }

  /** Moves time forward by `ms`, firing what falls due on the way, in order. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (let fired = 0; fired < 100_000; fired++) {
      const next = [...this.#pending].filter((entry) => entry.at <= target).sort((a, b) => a.at - b.at || a.order - b.order)[0];
      if (next === undefined) break;
      this.#pending.delete(next);
      this.#now = next.at;
      next.fire();
      await settle();
    }
    this.#now = target;
    await settle();
  }

  #add(ms: number, fire: () => void): Pending {
    const entry = { at: this.#now + Math.max(0, ms), order: this.#order++, fire };
    this.#pending.add(entry);
    return entry;
  }
}
