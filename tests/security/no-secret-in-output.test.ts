/**
 * No secret in any output: every built app (apps/<name>/dist, as its container runs it)
 * is started with a distinctive password in every URL and every credential variable, at
 * debug level, against connections that fail — NATS, etcd, PostgreSQL, Redis unreachable
 * one after the other — and everything it prints (stdout logs, the stderr line) and its
 * health responses are searched for the password: zero hits. Each run must also show the
 * failure it provoked (the server named, the password masked), so the test cannot pass by
 * printing nothing.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, describe, expect, test, type TestContext } from '../harness/index.ts';
import { spawnBuiltApp } from '../harness/process.ts';

const BUILT = ['reader', 'committer', 'dedup-gate', 'lamport-reorderer'].every((app) => existsSync(join(REPO_ROOT, `apps/${app}/dist/main.js`)));
const SECRET = 'Leak-Canary-Pw-93517';
const SECRET_2 = 'Leak-Canary-Tok-20468';
/** Nothing listens on port 1 of loopback: connection refused at once. */
const DEAD = '127.0.0.1:1';

interface Run {
  readonly output: string;
  readonly code: number | null;
}

async function runApp(ctx: TestContext, app: string, env: Record<string, string>, options: { until?: RegExp; probeHealth?: boolean } = {}): Promise<Run> {
  const child = spawnBuiltApp(`apps/${app}/src/main.ts`, {
    env: { LOG_LEVEL: 'debug', HEALTH_PORT: '0', PARTITIONS: '2', PIPELINE: ctx.uniqueName('leak'), ...env },
  });
  ctx.defer(`stop ${app}`, () => child.stop(10_000));
  const health: string[] = [];
  if (options.until) {
    await child.waitForLine(options.until, 30_000);
    if (options.probeHealth) {
      const listening = await child.waitForLine(/"msg":"health server listening"/, 30_000);
      const port = (JSON.parse(listening.line) as { port: number }).port;
      for (const path of ['/healthz', '/readyz']) {
        const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5_000) });
        health.push(await response.text());
      }
      expect(health.join('')).toMatch(/redis/);
    }
    child.kill('SIGTERM');
  }
  const status = await child.waitForExit(30_000);
  return { output: [...child.stdout, ...child.stderr, ...health].join('\n'), code: status.code };
}

function expectClean(run: Run, shows: RegExp): void {
  expect(run.output).not.toContain(SECRET);
  expect(run.output).not.toContain(SECRET_2);
  expect(run.output).not.toContain(encodeURIComponent(SECRET));
  expect(run.output).toMatch(shows);
}

// The bundles come from `pnpm build` (scripts/test.sh builds first).
describe.skipIf(!BUILT)('no secret in any app output', () => {
  const credentials = {
    NATS_TOKEN: undefined,
    NATS_PASSWORD: undefined,
    REDIS_PASSWORD: SECRET,
    ETCD_PASSWORD: undefined,
  };

  test('reader: NATS, then etcd, then PostgreSQL unreachable, each with a password in its URL', async ({ ctx }) => {
    const base = {
      SOURCE_ID: 's1',
      TABLES: 'public.leak_test',
      SOURCE_DATABASE_URL: `postgres://cdc:${SECRET}@${DEAD}/db?sslpassword=${SECRET_2}`,
      ETCD_URL: `http://root:${SECRET}@${DEAD}`,
    };
    const nats = await runApp(ctx, 'reader', { ...base, NATS_URL: `nats://app:${SECRET}@${DEAD}` });
    expect(nats.code).not.toBe(0);
    expectClean(nats, /NATS at nats:\/\/app:\*\*\*@127\.0\.0\.1:1 is not reachable/);
    // The debug configuration line is there, with the URLs masked.
    expect(nats.output).toMatch(/"msg":"configuration"/);
    expect(nats.output).toContain('postgres://cdc:***@127.0.0.1:1/db?sslpassword=***');

    // NATS with a password the (auth-less) shared server ignores; etcd refuses.
    const natsUrl = new URL(ctx.servers.nats);
    const natsWithPassword = `nats://app:${SECRET}@${natsUrl.host}`;
    const etcd = await runApp(ctx, 'reader', { ...base, NATS_URL: natsWithPassword });
    expect(etcd.code).not.toBe(0);
    expectClean(etcd, /etcd at http:\/\/root:\*\*\*@127\.0\.0\.1:1 is not reachable/);

    const pg = await runApp(ctx, 'reader', { ...base, NATS_URL: natsWithPassword, ETCD_URL: ctx.servers.etcd });
    expect(pg.code).not.toBe(0);
    expectClean(pg, /PostgreSQL at postgres:\/\/cdc:\*\*\*@127\.0\.0\.1:1\/db\?sslpassword=\*\*\* is not reachable/);
  });

  test('committer: NATS, then etcd, then the sink PostgreSQL unreachable; passwords in the URLs and in NATS_PASSWORD/ETCD_PASSWORD', async ({ ctx }) => {
    const base = { SINK: 'postgres', SINK_DATABASE_URL: `postgresql://sink:${SECRET}@${DEAD}/sink?password=${SECRET_2}` };
    const nats = await runApp(ctx, 'committer', { ...base, NATS_URL: `nats://${DEAD}`, NATS_USER: 'app', NATS_PASSWORD: SECRET, ETCD_URL: `http://${DEAD}`, ETCD_USER: 'root', ETCD_PASSWORD: SECRET_2 });
    expect(nats.code).not.toBe(0);
    expectClean(nats, /NATS at nats:\/\/127\.0\.0\.1:1 is not reachable/);
    expect(nats.output).toMatch(/"NATS_PASSWORD":"\[redacted\]"/);

    const natsUrl = new URL(ctx.servers.nats);
    const etcd = await runApp(ctx, 'committer', { ...base, NATS_URL: `nats://app:${SECRET}@${natsUrl.host}`, ETCD_URL: `http://root:${SECRET_2}@${DEAD}` });
    expect(etcd.code).not.toBe(0);
    expectClean(etcd, /etcd at http:\/\/root:\*\*\*@127\.0\.0\.1:1 is not reachable/);

    const sink = await runApp(ctx, 'committer', { ...base, NATS_URL: `nats://app:${SECRET}@${natsUrl.host}`, ETCD_URL: ctx.servers.etcd });
    expect(sink.code).not.toBe(0);
    expectClean(sink, /sink PostgreSQL at postgresql:\/\/sink:\*\*\*@127\.0\.0\.1:1\/sink\?password=\*\*\* is not reachable/);
  });

  test('dedup-gate: Redis unreachable at run time (logs, stderr and health responses), then NATS unreachable', async ({ ctx }) => {
    const natsUrl = new URL(ctx.servers.nats);
    const redis = await runApp(
      ctx,
      'dedup-gate',
      { NATS_URL: `nats://app:${SECRET}@${natsUrl.host}`, REDIS_URL: `redis://gate:${SECRET_2}@${DEAD}`, ...definedOnly(credentials) },
      { until: /redis connection error/, probeHealth: true },
    );
    expectClean(redis, /"redis":"redis:\/\/gate:\*\*\*@127\.0\.0\.1:1"/);

    const nats = await runApp(ctx, 'dedup-gate', { NATS_URL: `tls://${SECRET_2}@${DEAD}`, REDIS_URL: `rediss://:${SECRET}@${DEAD}` });
    expect(nats.code).not.toBe(0);
    expectClean(nats, /NATS at tls:\/\/\*\*\*@127\.0\.0\.1:1 is not reachable/);
  });

  test('lamport-reorderer: NATS unreachable with a token in NATS_TOKEN', async ({ ctx }) => {
    const run = await runApp(ctx, 'lamport-reorderer', { NATS_URL: `nats://${DEAD}`, NATS_TOKEN: SECRET, SOURCES: 's1' });
    expect(run.code).not.toBe(0);
    expectClean(run, /NATS at nats:\/\/127\.0\.0\.1:1 is not reachable/);
  });
});

function definedOnly(values: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(values).filter((entry): entry is [string, string] => entry[1] !== undefined));
}
