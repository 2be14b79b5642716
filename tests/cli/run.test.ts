/**
 * `cdc run <file>` end to end: the whole pipeline from one pipeline file (its sink
 * connection a ${VARIABLE} reference), a workload, `cdc status --json` figures, the
 * committer SIGKILLed and restarted by `cdc run`, then the sink equals the source with
 * every change applied once, and SIGTERM drains every app. Runs the built bundles
 * (`pnpm build` first), as `cdc run` does.
 */
import { Lsn } from '@cdc/core';
import { WATCHED_TABLES, runWorkload, verifySourceAgainstSink } from '@cdc/testkit';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitForSinkToCatchUp } from '../e2e/convergence.ts';
import { createSourceAndSink } from '../e2e/databases.ts';
import { describe, expect, test } from '../harness/index.ts';
import { createServer } from 'node:net';
import { ManagedProcess } from '../harness/process.ts';
import { REPO_ROOT } from '../harness/servers.ts';

const CLI = join(REPO_ROOT, 'apps/cli/dist/main.js');

interface StatusJson {
  apps: { name: string; ready: boolean | null }[];
  sources: { source: string; exists: boolean; active: boolean | null; confirmedFlushLsn: string | null; currentWalLsn: string | null; lagBytes: number | null }[];
  sinks: { sink: string; partitions: { partition: number; positions: Record<string, string> }[]; missingPartitions: number[]; behindBytes: Record<string, number | null> }[];
  deadLetters: number | null;
}

async function status(file: string, env: Record<string, string>): Promise<StatusJson> {
  const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'status', file, '--json'], { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: 30_000 });
  return JSON.parse(stdout) as StatusJson;
}

/** `count` consecutive ports free on loopback now (cdc run gives the apps firstPort, firstPort+1, …). */
async function freePorts(count: number): Promise<number> {
  const free = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = 20_000 + Math.floor(Math.random() * 10_000);
    let all = true;
    for (let port = first; port < first + count && all; port++) all = await free(port);
    if (all) return first;
  }
  throw new Error(`no ${count} consecutive free ports`);
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('cdc run', () => {
  test('runs a pipeline file, reports its status, restarts a killed app, and the sink equals the source exactly once', { timeout: 300_000 }, async ({ ctx }) => {
    if (!existsSync(CLI)) throw new Error('apps/cli/dist/main.js is missing: run `pnpm build` first');
    const dbs = await createSourceAndSink(ctx, 'cdcrun');
    const pipeline = ctx.uniqueName('cdcrun').toLowerCase();
    const firstPort = await freePorts(4);
    const dir = mkdtempSync(join(tmpdir(), 'cdc-run-'));
    const file = join(dir, 'pipeline.yaml');
    writeFileSync(
      file,
      [
        `pipeline: ${pipeline}`,
        'partitions: 2',
        `nats: { url: "${ctx.servers.nats}" }`,
        `etcd: { url: "${ctx.servers.etcd}" }`,
        `redis: { url: "${ctx.servers.redis}" }`,
        'sources:',
        `  - { id: src1, connection: "${dbs.sourceUrl}", tables: [${WATCHED_TABLES.join(', ')}] }`,
        'sinks:',
        '  - { kind: postgres, connection: "${CDC_RUN_SINK_URL}", batch: { maxEvents: 500 } }',
        `health: { firstPort: ${firstPort} }`,
        '',
      ].join('\n'),
    );
    const env = { CDC_RUN_SINK_URL: dbs.sinkUrl };

    const run = ManagedProcess.spawn({ name: 'cdc-run', command: process.execPath, args: [CLI, 'run', file, '--log-dir', join(dir, 'logs'), '--progress-interval', '1'], cwd: REPO_ROOT, env });
    const pids = new Set<number>();
    let passed = false;
    ctx.defer('stop cdc run and its apps', async () => {
      if (!passed) console.log(`cdc run said (test failed):\n${run.stdout.join('\n')}\n${run.stderr.join('\n')}`);
      if (run.pid !== undefined && alive(run.pid)) process.kill(run.pid, 'SIGTERM');
      await run.waitForExit(60_000).catch(() => run.kill('SIGKILL'));
      for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    });
    const started = async (name: string, from = 0): Promise<number> => {
      const line = await run.waitForLine(new RegExp(`${name}: started \\(pid (\\d+)`), 90_000, { from });
      const pid = Number(line.match[1]);
      pids.add(pid);
      return pid;
    };
    // Started downstream first.
    const apps = ['committer:postgres', 'dedup-gate', 'lamport-reorderer:0', 'reader:src1'];
    const committerPid = await started(apps[0]!);
    for (const name of apps.slice(1)) await started(name);
    for (const name of apps) await run.waitForLine(new RegExp(`${name}: ready`), 90_000);

    const first = await runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 1_500, clients: 2, seed: 11 });
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 120_000 });
    expect(caughtUp.caughtUp).toBe(true);
    await run.waitForLine(/progress: read [1-9]\d* .*applied postgres [1-9]\d*.*ready 4\/4 \| restarts 0/, 30_000);

    // Give the committer a moment to publish its positions to etcd, then ask.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const seen = await status(file, env);
    expect(seen.apps.map((a) => [a.name, a.ready])).toEqual([
      ['reader:src1', true],
      ['lamport-reorderer:0', true],
      ['dedup-gate', true],
      ['committer:postgres', true],
    ]);
    expect(seen.deadLetters).toBe(0);
    const [source] = seen.sources;
    expect(source).toMatchObject({ source: 'src1', exists: true, active: true });
    expect(source!.lagBytes).toBeGreaterThanOrEqual(0);
    expect(Lsn.parse(source!.confirmedFlushLsn!)).toBeLessThanOrEqual(Lsn.parse(source!.currentWalLsn!));
    const [sink] = seen.sinks;
    expect(sink!.sink).toBe('postgres');
    expect(sink!.missingPartitions).toEqual([]);
    expect(sink!.partitions.map((p) => p.partition)).toEqual([0, 1]);
    for (const p of sink!.partitions) expect(Lsn.parse(p.positions['src1']!)).toBeGreaterThan(0n);
    expect(typeof sink!.behindBytes['src1']).toBe('number');
    // The human table says the same.
    const { stdout: table } = await promisify(execFile)(process.execPath, [CLI, 'status', file], { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: 30_000 });
    expect(table).toMatch(/committer:postgres\s+http:\/\/127\.0\.0\.1:\d+\s+ready/);
    expect(table).toContain('dead letters waiting: 0');
    expect(table).not.toContain(new URL(dbs.sinkUrl).password || '\u0000');

    // kill -9 the committer while a second workload runs: cdc run restarts it.
    const mark = run.stdoutCount;
    const second = runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 1_500, clients: 2, seed: 12 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    process.kill(committerPid, 'SIGKILL');
    await run.waitForLine(/committer:postgres: exited \(SIGKILL\); restarting in/, 30_000, { from: mark });
    const restartedPid = await started('committer:postgres', mark);
    expect(restartedPid).not.toBe(committerPid);
    await run.waitForLine(/committer:postgres: ready/, 90_000, { from: mark });
    const load = await second;
    expect(first.changes + load.changes).toBeGreaterThan(0);

    const again = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 120_000 });
    expect(again.caughtUp).toBe(true);
    const report = await verifySourceAgainstSink(dbs.sourceUrl, dbs.sinkUrl);
    for (const t of report.tables) expect({ table: t.table, missing: t.missing, extra: t.extra, different: t.different }).toEqual({ table: t.table, missing: [], extra: [], different: [] });
    expect(report.appliedTwice).toBe(0);
    expect(report.neverApplied).toBe(0);
    expect(report.orderViolations).toBe(0);
    expect(report.ok).toBe(true);
    await run.waitForLine(/progress: .*restarts 1/, 30_000, { from: mark });
    // cdc verify says the same of the pipeline's own sink (its guard columns are not compared).
    const verified = await promisify(execFile)(process.execPath, [CLI, 'verify', file, '--chunk-rows', '500'], { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: 60_000 });
    expect(verified.stdout).toMatch(/VERIFIED: source == sink: 3 table\(s\), \d+ rows compared by hash in \d+ chunks/);

    // SIGTERM: every app drained and stopped, cdc run exits 0.
    process.kill(run.pid!, 'SIGTERM');
    const exit = await run.waitForExit(90_000);
    expect(exit.code).toBe(0);
    expect(run.stdout.join('\n')).toMatch(/reader:src1: stopped[\s\S]*lamport-reorderer:0: stopped[\s\S]*dedup-gate: stopped[\s\S]*committer:postgres: stopped[\s\S]*all apps stopped/);
    for (const pid of pids) expect(alive(pid), `app pid ${pid} still alive`).toBe(false);
    passed = true;
    console.log(`cdc run said:\n${run.stdout.join('\n')}\n\ncdc status said:\n${table}`);
  });
});
