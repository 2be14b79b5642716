/**
 * `pnpm bench`: end-to-end throughput of the four apps on this machine, measured side by
 * side in one run — the same workload through 1 partition and through 4 — with each
 * app's peak resident memory. A benchmark, not a test: it prints numbers and ratios and
 * asserts only that the sink equals the source (a fast wrong answer is no result).
 *
 *   BENCH_CHANGES=20000 pnpm bench
 */
import { readFileSync } from 'node:fs';
import { runWorkload, verifySourceAgainstSink, WATCHED_TABLES, SINK_SCHEMA_SQL, SOURCE_SCHEMA_SQL } from '@cdc/testkit';
import { resolveServers } from '../tests/harness/servers.ts';
import { waitForSinkToCatchUp } from '../tests/e2e/convergence.ts';
import { dropDatabase, recreateDatabase } from '../tests/e2e/databases.ts';
import { PipelineProcesses } from '../tests/e2e/pipeline.ts';

const CHANGES = Number(process.env.BENCH_CHANGES ?? 20_000);

function peakRssKb(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}


interface Result {
  readonly partitions: number;
  readonly changesPerSecond: number;
  readonly seconds: number;
  readonly rssKb: Record<string, number>;
  readonly ok: boolean;
}

async function runOnce(partitions: number, adminUrl: string, servers: Awaited<ReturnType<typeof resolveServers>>['urls']): Promise<Result> {
  const sourceUrl = await recreateDatabase(adminUrl, `cdc_bench_p${partitions}_src`, SOURCE_SCHEMA_SQL);
  const sinkUrl = await recreateDatabase(adminUrl, `cdc_bench_p${partitions}_sink`, SINK_SCHEMA_SQL);
  // The reader creates its slot at start: changes committed before it are not captured,
  // so the apps start first and the clock runs from the first write to the last apply.
  const pipeline = await PipelineProcesses.start({
    pipeline: `bench_p${partitions}_${Date.now().toString(36)}`,
    partitions,
    sources: [{ id: 'src1', databaseUrl: sourceUrl, tables: WATCHED_TABLES }],
    sinkUrl,
    servers,
    reorderers: Math.min(2, partitions),
  });
  const started = Date.now();
  await runWorkload({ databaseUrl: sourceUrl, totalChanges: CHANGES, clients: 4, seed: 5 });
  const rssKb: Record<string, number> = {};
  try {
    const caught = await waitForSinkToCatchUp({ sourceUrls: [sourceUrl], sinkUrl, timeoutMs: 600_000 });
    const seconds = (Date.now() - started) / 1000;
    for (const name of pipeline.names) rssKb[name] = peakRssKb(pipeline.process(name).pid);
    const report = await verifySourceAgainstSink(sourceUrl, sinkUrl);
    return { partitions, changesPerSecond: caught.applied / seconds, seconds, rssKb, ok: report.ok && caught.caughtUp };
  } finally {
    await pipeline.stop();
    for (const db of [`cdc_bench_p${partitions}_src`, `cdc_bench_p${partitions}_sink`]) await dropDatabase(adminUrl, db).catch(() => undefined);
  }
}

async function main(): Promise<number> {
  const servers = await resolveServers();
  const results: Result[] = [];
  for (const partitions of [1, 4]) results.push(await runOnce(partitions, servers.urls.postgres, servers.urls));
  console.log(`\nend to end, ${CHANGES} changes written by 4 clients, first write to last apply:`);
  for (const r of results) {
    const rss = Object.entries(r.rssKb).map(([name, kb]) => `${name} ${(kb / 1024).toFixed(0)} MB`).join(', ');
    console.log(`  P=${r.partitions}: ${r.changesPerSecond.toFixed(0)} changes/s (${r.seconds.toFixed(1)} s) ${r.ok ? 'verified' : 'MISMATCH'}; peak RSS: ${rss}`);
  }
  const [one, four] = results;
  if (one && four) console.log(`  ratio P=4 / P=1: ${(four.changesPerSecond / one.changesPerSecond).toFixed(2)}x`);
  await servers.stop();
  return results.every((r) => r.ok) ? 0 : 1;
}

main().then((code) => process.exit(code), (error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
