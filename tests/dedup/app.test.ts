/**
 * The relay-stage app runner (runRelayApp) as the dedup-gate process runs it: /readyz
 * names the NATS connection, the app's own Redis check and the partitions, the compiled
 * config is logged at debug, and SIGTERM drains with exit code 0.
 */
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { createPipeline } from '../reorderer/support.ts';

describe('dedup-gate app (runRelayApp)', () => {
  test('reports nats, redis and partitions on /readyz, logs its configuration at debug, and exits 0 on SIGTERM', async ({ ctx }) => {
    const p = await createPipeline(ctx, 'dedup_ready');
    const app = ctx.spawnApp('apps/dedup-gate/src/main.ts', {
      env: { PIPELINE: p.name, PARTITIONS: '2', ASSIGNED_PARTITIONS: '1', HEALTH_PORT: '0', LOG_LEVEL: 'debug' },
    });
    const configuration = await app.waitForLine(/"msg":"configuration"/, 30_000);
    expect((JSON.parse(configuration.line) as { config: Record<string, unknown> }).config).toMatchObject({ PIPELINE: p.name, PARTITIONS: 2, partitions: [1] });
    const listening = await app.waitForLine(/"msg":"health server listening"/, 30_000);
    const port = (JSON.parse(listening.line) as { port: number }).port;
    const ready = await waitFor(
      async () => {
        const response = await fetch(`http://127.0.0.1:${port}/readyz`);
        return response.status === 200 ? ((await response.json()) as { ready: boolean; checks: Record<string, { ok: boolean }> }) : undefined;
      },
      { what: '/readyz = 200', timeoutMs: 15_000 },
    );
    expect(ready).toEqual({ ready: true, checks: { nats: { ok: true }, redis: { ok: true }, partitions: { ok: true } } });
    await app.waitForLine(/"msg":"dedup-gate running"/, 5_000);

    app.kill('SIGTERM');
    expect((await app.waitForExit(15_000)).code).toBe(0);
  });
});
