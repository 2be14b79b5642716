/**
 * The reader's session supervisor on the simulated clock: a session that dies young is
 * restarted after a back-off that grows per quick failure up to its bound; one that
 * streamed past quickFailureMs counts as a success, so the next failure restarts at once
 * and the back-off starts over. Sessions are stand-ins (against PostgreSQL: tests/reader).
 */
import { CdcError } from '@cdc/core';
import { ManualClock, settle } from '@cdc/testkit';
import { describe, expect, it } from 'vitest';
import { superviseSessions, type SupervisedSession } from '../src/supervisor.ts';

class StandInSession implements SupervisedSession {
  readonly #closed: Promise<Error | undefined>;
  end!: (error: Error | undefined) => void;
  constructor(readonly openedAt: number) {
    this.#closed = new Promise((resolve) => (this.end = resolve));
  }
  closed(): Promise<Error | undefined> {
    return this.#closed;
  }
}

class Fatal extends CdcError {
  constructor() {
    super('slot lost', { code: 'SLOT_LOST', retriable: false });
  }
}

function harness(options: { quickFailureMs?: number } = {}) {
  const clock = new ManualClock();
  const sessions: StandInSession[] = [new StandInSession(clock.now())];
  const delays: number[] = [];
  let closing = false;
  const controller = new AbortController();
  const done = superviseSessions({
    first: sessions[0]!,
    reconnect: async () => {
      const session = new StandInSession(clock.now());
      sessions.push(session);
      return session;
    },
    closing: () => closing,
    clock,
    signal: controller.signal,
    // random = 1: each delay is its ceiling.
    backoff: { initialDelayMs: 200, maxDelayMs: 1_000, random: () => 1 },
    quickFailureMs: options.quickFailureMs ?? 10_000,
    onRestart: ({ delayMs }) => delays.push(delayMs),
  });
  const current = (): StandInSession => sessions.at(-1)!;
  return {
    clock,
    sessions,
    delays,
    done,
    current,
    close: () => {
      closing = true;
      controller.abort(new Error('closing'));
    },
    /** Ends the current session now and waits until the supervisor has chosen its pause. */
    async fail(error: Error = new Error('publish failed')): Promise<void> {
      current().end(error);
      await settle();
    },
  };
}

describe('reader supervisor (simulated clock)', () => {
  it('restarts quick failures after a back-off that grows per failure and stays bounded', async () => {
    const h = harness();
    for (const expected of [200, 400, 800, 1_000, 1_000]) {
      const before = h.sessions.length;
      await h.fail();
      expect(h.delays.at(-1)).toBe(expected);
      // Not a millisecond early…
      await h.clock.advance(expected - 1);
      expect(h.sessions).toHaveLength(before);
      // …and exactly on time.
      await h.clock.advance(1);
      expect(h.sessions).toHaveLength(before + 1);
    }
    expect(h.delays).toEqual([200, 400, 800, 1_000, 1_000]);
    h.close();
    h.current().end(undefined);
    await expect(h.done).resolves.toBeUndefined();
  });

  it('after a session that streamed past quickFailureMs, the next failure restarts at once and the back-off starts over', async () => {
    const h = harness({ quickFailureMs: 10_000 });
    await h.fail();
    await h.clock.advance(200);
    await h.fail();
    await h.clock.advance(400);
    expect(h.delays).toEqual([200, 400]);
    // A healthy run: longer than quickFailureMs.
    await h.clock.advance(10_000);
    const before = h.sessions.length;
    await h.fail();
    expect(h.delays.at(-1)).toBe(0);
    expect(h.sessions).toHaveLength(before + 1);
    // The next quick failure backs off from the start again.
    await h.fail();
    expect(h.delays.at(-1)).toBe(200);
    h.close();
    await h.clock.advance(200);
    await expect(h.done).resolves.toBeUndefined();
  });

  it('stops on a non-retriable error without restarting, and on close() during a pause', async () => {
    const fatal = harness();
    const error = new Fatal();
    await fatal.fail(error);
    await expect(fatal.done).resolves.toBe(error);
    expect(fatal.sessions).toHaveLength(1);
    expect(fatal.clock.waiting).toBe(0);

    const closing = harness();
    await closing.fail();
    expect(closing.clock.waiting).toBe(1);
    closing.close();
    await expect(closing.done).resolves.toBeUndefined();
    expect(closing.sessions).toHaveLength(1);
  });

  it('ends with the reconnect error when reopening fails for good', async () => {
    const clock = new ManualClock();
    let end!: (error: Error | undefined) => void;
    const ended = new Promise<Error | undefined>((resolve) => (end = resolve));
    const first: SupervisedSession = { closed: () => ended };
    const refused = new Error('retries exhausted');
    const done = superviseSessions({
      first,
      reconnect: () => Promise.reject(refused),
      closing: () => false,
      clock,
      signal: new AbortController().signal,
    });
    end(new Error('connection reset'));
    await clock.advance(1_000);
    await expect(done).resolves.toBe(refused);
  });
});
