/**
 * The committer process's /readyz: besides its loop, the NATS connection as its status
 * stream reports it (Bus#readiness), false while the connection is cut.
 */
import { TcpProxy, describe, expect, test, waitFor } from '../harness/index.ts';
import { readyz } from '../harness/health.ts';
import { committerProcessEnv, createPipeline, createSinkDatabase } from './support.ts';

describe('committer app readiness', () => {
  test('/readyz has a nats check that goes false while NATS is cut and true again after', async ({ ctx }) => {
    const { url } = await createSinkDatabase(ctx);
    const { pipeline } = await createPipeline(ctx);
    const proxy = await TcpProxy.start(ctx.servers.nats);
    ctx.defer('close proxy', () => proxy.close());
    const app = ctx.spawnApp('apps/committer/src/main.ts', {
      env: committerProcessEnv(ctx, pipeline, 2, { SINK_DATABASE_URL: url, NATS_URL: proxy.url('nats') }),
    });
    const listening = await app.waitForLine(/"msg":"health server listening"/, 30_000);
    const port = (JSON.parse(listening.line) as { port: number }).port;
    const before = await waitFor(async () => {
      const answer = await readyz(port);
      return answer.status === 200 ? answer : undefined;
    }, { what: '/readyz = 200 before the cut', timeoutMs: 15_000 });
    expect(before.body.checks['nats']).toEqual({ ok: true });

    await proxy.cut();
    const down = await waitFor(async () => {
      const answer = await readyz(port);
      return answer.body.checks['nats']?.ok === false ? answer : undefined;
    }, { what: 'nats not ok while NATS is cut', timeoutMs: 10_000 });
    expect(down.status).toBe(503);
    expect(down.body.checks['nats']).toEqual({ ok: false, detail: 'reconnecting' });

    await proxy.restore();
    await waitFor(async () => ((await readyz(port)).body.checks['nats']?.ok === true ? true : undefined), { what: 'nats ok after NATS is back', timeoutMs: 20_000 });

    app.kill('SIGTERM');
    expect((await app.waitForExit(20_000)).code).toBe(0);
  });
});
