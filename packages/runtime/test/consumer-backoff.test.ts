/**
 * The consumer loop's back-off on the simulated clock: after each failed iteration it
 * waits the core Backoff (growing, bounded), and a committed batch starts it over.
 */
import { ManualClock, settle } from '@cdc/testkit';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ConsumerLoop } from '../src/index.ts';

const logger = pino({ level: 'silent' });

describe('consumer loop back-off (simulated clock)', () => {
  it('waits a growing, bounded pause after each failure and resets after a commit', async () => {
    const clock = new ManualClock();
    const loop = new ConsumerLoop<number>({ name: 't', logger, clock, retry: { initialDelayMs: 100, maxDelayMs: 400, random: () => 1 } });
    const controller = new AbortController();
    const fetches: number[] = [];
    let failNext = 4;
    const t0 = clock.now();
    const running = loop.run(
      {
        fetch: async (signal) => {
          fetches.push(clock.now() - t0);
          if (failNext > 0) {
            failNext -= 1;
            throw new Error('down');
          }
          if (fetches.length === 5) return 1;
          await clock.sleep(1_000, signal).catch(() => undefined);
          return undefined;
        },
        process: async () => undefined,
        commit: async () => undefined,
      },
      controller.signal,
    );
    await settle();
    expect(fetches).toEqual([0]);
    await clock.advance(99);
    expect(fetches).toEqual([0]);
    await clock.advance(1 + 200 + 400 + 400);
    // 100, 200, 400, then bounded at 400; the fifth fetch commits a batch.
    expect(fetches).toEqual([0, 100, 300, 700, 1_100, 1_100]);
    expect(loop.consecutiveFailures).toBe(0);
    failNext = 1;
    await clock.advance(1_000);
    // The first failure after the commit waits the initial pause again.
    expect(loop.consecutiveFailures).toBe(1);
    const failedAt = fetches.at(-1)!;
    await clock.advance(100);
    expect(fetches.at(-1)).toBe(failedAt + 100);
    controller.abort();
    await clock.advance(1_000);
    await running;
  });
});
