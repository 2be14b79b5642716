/**
 * The one retry/back-off helper (@cdc/core retry, Backoff, pollUntil, withinMs) on the
 * simulated clock (ManualClock): pauses are exactly the back-off, never shorter, bounded,
 * and nothing sleeps for real.
 */
import { Backoff, CdcError, RetriesExhaustedError, backoffDelay, pollUntil, retry, withinMs } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import { ManualClock, settle } from '../src/manual-clock.ts';

class Flaky extends CdcError {
  constructor(retriable: boolean) {
    super(retriable ? 'try again' : 'never', { code: retriable ? 'FLAKY' : 'BROKEN', retriable });
  }
}

// random = 1: every delay is its ceiling, initialDelayMs × 2^(attempt − 1), bounded by maxDelayMs.
const policy = { initialDelayMs: 100, maxDelayMs: 1_000, random: () => 1 } as const;

describe('retry() on the manual clock', () => {
  it('waits exactly the growing back-off between attempts, not a millisecond less', async () => {
    const clock = new ManualClock();
    const attempts: number[] = [];
    const result = retry(
      async (attempt) => {
        attempts.push(clock.now());
        if (attempt < 4) throw new Flaky(true);
        return 'done';
      },
      { ...policy, attempts: 5, clock },
    );
    const t0 = clock.now();
    await settle();
    expect(attempts).toEqual([t0]);
    await clock.advance(99);
    expect(attempts).toHaveLength(1);
    await clock.advance(1);
    expect(attempts).toEqual([t0, t0 + 100]);
    await clock.advance(199);
    expect(attempts).toHaveLength(2);
    await clock.advance(1);
    await clock.advance(400);
    await expect(result).resolves.toBe('done');
    expect(attempts).toEqual([t0, t0 + 100, t0 + 300, t0 + 700]);
  });

  it('gives up after the bounded attempts with RetriesExhaustedError carrying the last error', async () => {
    const clock = new ManualClock();
    let calls = 0;
    const result = retry(
      async () => {
        calls += 1;
        throw new Flaky(true);
      },
      { ...policy, attempts: 3, clock },
    );
    const caught = result.catch((error: unknown) => error);
    await clock.advance(100 + 200);
    const error = await caught;
    expect(calls).toBe(3);
    expect(error).toBeInstanceOf(RetriesExhaustedError);
    expect((error as RetriesExhaustedError).cause).toBeInstanceOf(Flaky);
    expect(clock.waiting).toBe(0);
  });

  it('does not retry a non-retriable error, and does not wait', async () => {
    const clock = new ManualClock();
    let calls = 0;
    const result = retry(
      async () => {
        calls += 1;
        throw new Flaky(false);
      },
      { ...policy, attempts: 5, clock },
    );
    await expect(result).rejects.toMatchObject({ code: 'BROKEN' });
    expect(calls).toBe(1);
    expect(clock.waiting).toBe(0);
  });

  it('an abort during the pause ends it at once with the signal reason', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    let calls = 0;
    const result = retry(
      async () => {
        calls += 1;
        throw new Flaky(true);
      },
      { ...policy, attempts: 5, clock, signal: controller.signal },
    );
    const caught = result.catch((error: unknown) => error);
    await settle();
    expect(clock.waiting).toBe(1);
    controller.abort(new Error('stopping'));
    expect(await caught).toMatchObject({ message: 'stopping' });
    expect(calls).toBe(1);
    expect(clock.waiting).toBe(0);
  });
});

describe('Backoff', () => {
  it('grows per failure up to maxDelayMs and starts over after reset()', () => {
    const backoff = new Backoff(policy);
    expect([backoff.next(), backoff.next(), backoff.next(), backoff.next(), backoff.next(), backoff.next()]).toEqual([100, 200, 400, 800, 1_000, 1_000]);
    expect(backoff.failures).toBe(6);
    backoff.reset();
    expect(backoff.failures).toBe(0);
    expect(backoff.next()).toBe(100);
  });

  it('jitters between half and all of the ceiling', () => {
    expect(backoffDelay(3, { ...policy, random: () => 0 })).toBe(200);
    expect(backoffDelay(3, { ...policy, random: () => 0.5 })).toBe(300);
    expect(backoffDelay(30, { ...policy, random: () => 0 })).toBe(500);
  });
});

describe('pollUntil and withinMs on the manual clock', () => {
  it('pollUntil probes every interval and returns undefined at the deadline', async () => {
    const clock = new ManualClock();
    const probes: number[] = [];
    const t0 = clock.now();
    const result = pollUntil(
      async () => {
        probes.push(clock.now() - t0);
        return undefined;
      },
      { timeoutMs: 250, intervalMs: 100, clock },
    );
    await clock.advance(1_000);
    await expect(result).resolves.toBeUndefined();
    expect(probes).toEqual([0, 100, 200, 250]);
  });

  it('pollUntil returns the first value found', async () => {
    const clock = new ManualClock();
    let n = 0;
    const result = pollUntil(async () => (++n === 3 ? 'ready' : undefined), { timeoutMs: 10_000, intervalMs: 100, clock });
    await clock.advance(200);
    await expect(result).resolves.toBe('ready');
    expect(clock.waiting).toBe(0);
  });

  it('withinMs gives up on a hanging promise after the bound, and takes a prompt one', async () => {
    const clock = new ManualClock();
    let settled = false;
    const hanging = withinMs(new Promise<string>(() => undefined), 2_000, clock).then((value) => {
      settled = true;
      return value;
    });
    await clock.advance(1_999);
    expect(settled).toBe(false);
    await clock.advance(1);
    await expect(hanging).resolves.toBeUndefined();
    await expect(withinMs(Promise.resolve('quick'), 2_000, clock)).resolves.toBe('quick');
    expect(clock.waiting).toBe(0);
  });
});

describe('ManualClock.every', () => {
  it('fires on each interval, not before, until cancelled', async () => {
    const clock = new ManualClock();
    let ticks = 0;
    const handle = clock.every(1_000, () => (ticks += 1));
    await clock.advance(999);
    expect(ticks).toBe(0);
    await clock.advance(1);
    expect(ticks).toBe(1);
    await clock.advance(2_500);
    expect(ticks).toBe(3);
    handle.cancel();
    await clock.advance(10_000);
    expect(ticks).toBe(3);
    expect(clock.waiting).toBe(0);
  });
});
