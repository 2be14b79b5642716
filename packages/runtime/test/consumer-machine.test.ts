import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ConsumerLoop, IllegalTransitionError } from '../src/index.ts';

const logger = pino({ level: 'silent' });

describe('consumer machine', () => {
  it('walks idle → fetching → processing → committed → fetching', () => {
    const loop = new ConsumerLoop({ name: 't', logger });
    expect(loop.state).toBe('idle');
    expect(loop.step('START')).toBe('fetching');
    expect(loop.step('PROCESS')).toBe('processing');
    expect(loop.step('COMMIT')).toBe('committed');
    expect(loop.step('FETCH')).toBe('fetching');
  });

  it('throws on committed → processing without a fetch', () => {
    const loop = new ConsumerLoop({ name: 't', logger });
    loop.step('START');
    loop.step('PROCESS');
    loop.step('COMMIT');
    expect(() => loop.step('PROCESS')).toThrow(IllegalTransitionError);
    expect(() => loop.step('PROCESS')).toThrow(/committed --PROCESS-->/);
    expect(loop.state).toBe('committed');
  });

  it('throws on a second COMMIT and on STOP in the middle of processing', () => {
    const loop = new ConsumerLoop({ name: 't', logger });
    loop.step('START');
    loop.step('PROCESS');
    expect(() => loop.step('STOP')).toThrow(IllegalTransitionError);
    loop.step('COMMIT');
    expect(() => loop.step('COMMIT')).toThrow(IllegalTransitionError);
  });

  it('goes failed → retry → fetching after an error and completes the next batch', async () => {
    const loop = new ConsumerLoop<number>({ name: 't', logger, retry: { initialDelayMs: 1, maxDelayMs: 2 } });
    const controller = new AbortController();
    const seen: string[] = [];
    let calls = 0;
    await loop.run(
      {
        fetch: async () => {
          calls += 1;
          seen.push(`fetch:${loop.state}`);
          return calls <= 3 ? calls : undefined;
        },
        process: async (batch) => {
          seen.push(`process:${batch}:${loop.state}`);
          if (batch === 2) throw new Error('boom');
        },
        commit: async (batch) => {
          seen.push(`commit:${batch}`);
          if (batch === 3) controller.abort();
        },
      },
      controller.signal,
    );
    expect(seen).toEqual([
      'fetch:fetching',
      'process:1:processing',
      'commit:1',
      'fetch:fetching',
      'process:2:processing',
      'fetch:fetching',
      'process:3:processing',
      'commit:3',
    ]);
    expect(loop.state).toBe('stopped');
  });
});
