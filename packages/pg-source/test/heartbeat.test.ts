/**
 * The WAL heartbeat's timing on the simulated clock: it writes once per interval in which
 * no data transaction was decoded, never before the interval is up, and not after close().
 * The write is a counter here (against PostgreSQL: tests/reader).
 */
import { ManualClock } from '@cdc/testkit';
import { createLogger } from '@cdc/runtime';
import { describe, expect, it } from 'vitest';
import { WalHeartbeat } from '../src/heartbeat.ts';

const logger = createLogger({ app: 'test', level: 'silent' });

function heartbeat(clock: ManualClock, activity: () => number) {
  const writes: number[] = [];
  const beat = new WalHeartbeat({
    connectionString: 'postgres://unused',
    source: 'src',
    intervalMs: 1_000,
    logger,
    activity,
    clock,
    write: async () => {
      writes.push(clock.now());
    },
  });
  return { beat, writes };
}

describe('WalHeartbeat timing (simulated clock)', () => {
  it('fires on its interval while the tables are idle, and not before', async () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const { beat, writes } = heartbeat(clock, () => 0);
    // The first tick only learns the activity counter; idle is "unchanged over an interval".
    await clock.advance(1_000);
    expect(writes).toEqual([]);
    await clock.advance(999);
    expect(writes).toEqual([]);
    await clock.advance(1);
    expect(writes).toEqual([t0 + 2_000]);
    await clock.advance(3_000);
    expect(writes).toEqual([t0 + 2_000, t0 + 3_000, t0 + 4_000, t0 + 5_000]);
    expect(beat.emitted).toBe(4);
    await beat.close();
    await clock.advance(10_000);
    expect(writes).toHaveLength(4);
    expect(clock.waiting).toBe(0);
  });

  it('stays quiet while data transactions keep coming, and fires one interval after they stop', async () => {
    const clock = new ManualClock();
    let transactions = 0;
    const { beat, writes } = heartbeat(clock, () => transactions);
    for (let i = 0; i < 5; i++) {
      transactions += 1;
      await clock.advance(1_000);
    }
    expect(writes).toEqual([]);
    const quietFrom = clock.now();
    await clock.advance(999);
    expect(writes).toEqual([]);
    await clock.advance(1);
    expect(writes).toEqual([quietFrom + 1_000]);
    await beat.close();
  });
});
