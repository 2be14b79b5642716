import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createActor } from 'xstate';
import { ConsumerLoop, IllegalTransitionError, consumerMachine, nextConsumerState, type ConsumerEvent, type ConsumerState } from '../src/index.ts';

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

  const STATES: ConsumerState[] = ['idle', 'fetching', 'processing', 'committed', 'failed', 'retry', 'stopped'];
  const EVENTS: ConsumerEvent['type'][] = ['START', 'FETCH', 'PROCESS', 'COMMIT', 'FAIL', 'RETRY', 'STOP'];

  /** A live xstate actor driven to `state` by the shortest legal path from idle. */
  function actorAt(state: ConsumerState): ReturnType<typeof createActor<typeof consumerMachine>> {
    const paths: Record<ConsumerState, ConsumerEvent['type'][]> = {
      idle: [],
      fetching: ['START'],
      processing: ['START', 'PROCESS'],
      committed: ['START', 'PROCESS', 'COMMIT'],
      failed: ['START', 'FAIL'],
      retry: ['START', 'FAIL', 'RETRY'],
      stopped: ['STOP'],
    };
    const actor = createActor(consumerMachine).start();
    for (const type of paths[state]) actor.send({ type });
    expect(actor.getSnapshot().value).toBe(state);
    return actor;
  }

  it('remembers, for every state and event, exactly what a live xstate actor does', () => {
    let legal = 0;
    for (const state of STATES) {
      for (const type of EVENTS) {
        const actor = actorAt(state);
        const accepted = actor.getSnapshot().can({ type });
        // A stopped (done) actor warns on any event: only accepted ones are sent.
        if (accepted) actor.send({ type });
        const expected = accepted ? (actor.getSnapshot().value as ConsumerState) : undefined;
        // Twice: the first call asks xstate, the second answers from memory.
        expect(nextConsumerState(state, type), `${state} --${type}-->`).toBe(expected);
        expect(nextConsumerState(state, type), `${state} --${type}--> (remembered)`).toBe(expected);
        if (accepted) legal += 1;
        actor.stop();
      }
    }
    // The diagram in consumer-machine.ts: 2 + 4 + 2 + 2 + 2 + 2 + 0 accepted pairs.
    expect(legal).toBe(14);
  });

  it('a loop and a live actor stay in step over a long random walk, refusing the same events', () => {
    let seed = 12345;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let walk = 0; walk < 20; walk++) {
      const loop = new ConsumerLoop({ name: 'walk', logger });
      const actor = createActor(consumerMachine).start();
      for (let i = 0; i < 200; i++) {
        const type = EVENTS[Math.floor(random() * EVENTS.length)] ?? 'FETCH';
        const accepted = actor.getSnapshot().can({ type });
        if (accepted) {
          actor.send({ type });
          expect(loop.step(type)).toBe(actor.getSnapshot().value);
        } else {
          expect(() => loop.step(type)).toThrow(IllegalTransitionError);
        }
        expect(loop.state).toBe(actor.getSnapshot().value);
      }
      actor.stop();
    }
  });
});
