/**
 * The real lamport-reorderer process: SIGKILLed mid-stream and restarted, the ordered
 * output still holds every event exactly once, in order-key order.
 */
import { sleep } from '@cdc/core';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { createPipeline, interleave, workload } from './support.ts';

const APP = 'apps/lamport-reorderer/src/main.ts';

describe('lamport-reorderer app', () => {
  test('killed with SIGKILL mid-stream and restarted, it releases the exact ordered sequence of each partition: no duplicate, no gap', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'reord_app');
    const { perSource, expected } = workload(['pg_a', 'pg_b'], 150, 4);
    const input = interleave(perSource, 5);
    // A second partition in the same process, with its own relay.
    const other = workload(['pg_a', 'pg_b'], 20, 4, 0x100000);
    const env = {
      PIPELINE: p.name,
      PARTITIONS: '2',
      ASSIGNED_PARTITIONS: '0,1',
      SOURCES: 'pg_a,pg_b',
      BATCH_MAX: '8',
      BATCH_LINGER_MS: '5',
      HEALTH_PORT: '0',
      LOG_LEVEL: 'info',
      STATS_INTERVAL_MS: '0',
    };
    const out = p.collect('ordered', 0);
    const out1 = p.collect('ordered', 1);
    const first = ctx.spawnApp(APP, { env });
    await first.waitForLine(/"msg":"health server listening"/, 30_000);

    const third = Math.floor(input.length / 3);
    await p.publishAll('raw', 0, input.slice(0, third));
    await p.publishAll('raw', 1, interleave(other.perSource, 9));
    await waitFor(() => out.eventIds().length >= 10, { what: 'first ordered events', timeoutMs: 20_000 });
    // Keep the input flowing while the process dies, so it dies with work in hand.
    const rest = p.publishAll('raw', 0, input.slice(third));
    await waitFor(() => out.eventIds().length >= expected.length / 3, { what: 'a third of the output', timeoutMs: 20_000 });
    first.kill('SIGKILL');
    expect((await first.waitForExit(10_000)).signal).toBe('SIGKILL');
    const atKill = out.eventIds().length;
    await rest;

    const second = ctx.spawnApp(APP, { env });
    const resumed = await second.waitForLine(/"msg":"reading input"/, 30_000);
    expect(Number(JSON.parse(resumed.line).start_seq)).toBeGreaterThan(1);
    await waitFor(() => out.eventIds().length >= expected.length, { what: 'every event on ordered.0', timeoutMs: 30_000 });
    await sleep(300); // anything repeated would arrive now
    expect(atKill).toBeLessThan(expected.length);
    expect(out.eventIds()).toEqual(expected);
    await waitFor(() => out1.eventIds().length >= other.expected.length, { what: 'every event on ordered.1', timeoutMs: 10_000 });
    expect(out1.eventIds()).toEqual(other.expected);
    const lamports = out.watermarks().map((w) => BigInt(w.lamport));
    for (let i = 1; i < lamports.length; i++) expect(lamports[i] as bigint).toBeGreaterThan(lamports[i - 1] as bigint);

    // SIGTERM drains and exits cleanly.
    second.kill('SIGTERM');
    const status = await second.waitForExit(15_000);
    expect(status.code).toBe(0);
    expect(second.stdout.some((line) => line.includes('"msg":"relay stopped"'))).toBe(true);
  });
});
