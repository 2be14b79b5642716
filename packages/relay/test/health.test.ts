/**
 * The relay's health on the simulated clock: while its loop keeps failing it stays
 * healthy for maxFailingMs from the first failure, is unhealthy from then on, and is
 * healthy again after the next successful batch. The bus is an in-memory stand-in that
 * fails on demand (the relay against NATS: tests/reorderer, tests/dedup).
 */
import type { Bus, BusMessage } from '@cdc/bus';
import { createLogger } from '@cdc/runtime';
import { ManualClock, settle } from '@cdc/testkit';
import { describe, expect, it } from 'vitest';
import { Relay } from '../src/relay.ts';
import type { RelayTransform } from '../src/types.ts';

const logger = createLogger({ app: 'test', level: 'silent' });

function message(subject: string, seq: number): BusMessage {
  const data = new TextEncoder().encode(JSON.stringify({ seq }));
  return { subject, seq, data, header: () => undefined, json: <T>() => JSON.parse(new TextDecoder().decode(data)) as T };
}

/** The part of Bus the relay uses, in memory; `down` makes the start procedure fail. */
class StandInBus {
  down = true;
  readonly input: BusMessage[] = [];
  readonly published: string[] = [];
  constructor(readonly clock: ManualClock) {}

  get maxPayload(): number {
    return 1024 * 1024;
  }
  publisher(): unknown {
    return {
      publish: async (_subject: string, _data: Uint8Array, options: { msgId: string }) => {
        this.published.push(options.msgId);
      },
      flush: async () => undefined,
      close: () => undefined,
    };
  }
  async lastMessage(): Promise<BusMessage | undefined> {
    if (this.down) throw new Error('nats: connection refused');
    return undefined;
  }
  async firstSequence(): Promise<number> {
    return 1;
  }
  async openReader(): Promise<unknown> {
    return {
      nextBatch: async (max: number, lingerMs: number, signal?: AbortSignal) => {
        if (this.input.length > 0) return this.input.splice(0, max);
        await this.clock.sleep(lingerMs, signal).catch(() => undefined);
        return [];
      },
    };
  }
  async closeReader(): Promise<void> {}
  async deadLetter(): Promise<void> {}
}

const forward: RelayTransform = {
  restore: () => undefined,
  process: (batch) => ({
    outputs: batch.map((m) => ({ msgId: `out-${m.seq}`, payload: m.data, resumeSeq: m.seq + 1, lastKey: undefined })),
    deadLetters: [],
  }),
};

describe('relay health (simulated clock)', () => {
  it('turns unhealthy after maxFailingMs of failing and healthy again after a successful batch', async () => {
    const clock = new ManualClock();
    const bus = new StandInBus(clock);
    const maxFailingMs = 5_000;
    const relay = Relay.create({
      bus: bus as unknown as Bus,
      pipeline: 'p',
      partition: 0,
      stage: 'test',
      input: 'raw',
      output: 'ordered',
      transform: forward,
      logger,
      batchMax: 10,
      batchLingerMs: 100,
      retry: { initialDelayMs: 100, maxDelayMs: 400 },
      clock,
    });
    await settle();
    const firstFailure = clock.now();
    expect(relay.health().failingSince).toBe(firstFailure);
    expect(relay.health().consecutiveFailures).toBe(1);
    expect(relay.isHealthy(maxFailingMs)).toBe(true);

    // Still failing, retried on the back-off, healthy until maxFailingMs has passed…
    await clock.advance(maxFailingMs - 1);
    expect(relay.health().consecutiveFailures).toBeGreaterThan(5);
    expect(relay.health().failingSince).toBe(firstFailure);
    expect(relay.isHealthy(maxFailingMs)).toBe(true);
    // …and unhealthy from then on.
    await clock.advance(1);
    expect(relay.isHealthy(maxFailingMs)).toBe(false);
    await clock.advance(10_000);
    expect(relay.isHealthy(maxFailingMs)).toBe(false);

    // The bus is back and a message arrives: the next batch succeeds.
    bus.down = false;
    bus.input.push(message('cdc.p.raw.0', 1));
    await clock.advance(400);
    expect(bus.published).toEqual(['out-1']);
    expect(relay.health().failingSince).toBeUndefined();
    expect(relay.health().batches).toBe(1);
    expect(relay.isHealthy(maxFailingMs)).toBe(true);

    const stopping = relay.close();
    await clock.advance(1_000);
    await expect(stopping).resolves.toBeUndefined();
    await expect(relay.closed()).resolves.toBeUndefined();
    expect(relay.isHealthy(maxFailingMs)).toBe(false);
  });
});
