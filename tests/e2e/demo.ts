/**
 * The demo (README's first command): servers are up (scripts/demo.sh), this writes a
 * pipeline file and starts the four apps with `cdc run` (apps/cli, the built bundles) on a
 * fresh source and sink database, runs a workload, shows live progress
 * (changes committed in the source / applied to the sink / lag / slot lag) and ends
 * with one verification line: source == sink, row by row and change by change.
 *
 * With DEMO_SINKS=postgres,kafka (the default) a Kafka committer runs beside the
 * PostgreSQL one, and a read_committed consumer checks that Kafka holds every change
 * exactly once, in per-key order (Debezium-format records, topics demo_<id>.public.*).
 *
 * Before the pipeline starts, DEMO_SNAPSHOT_ROWS rows are already in public.audit_events: the
 * reader's initial snapshot reads them (a second progress bar), then the workload streams.
 *
 *   DEMO_CHANGES=50000 DEMO_SNAPSHOT_ROWS=100000 DEMO_PARTITIONS=4 DEMO_SINKS=postgres pnpm demo
 */
import { readSnapshotJobs } from '@cdc/pg-source';
import { applyBenchSchema, runBenchWorkload, runWorkload, verifySourceAgainstSink, WATCHED_TABLES, SINK_SCHEMA_SQL, SOURCE_SCHEMA_SQL } from '@cdc/testkit';
import cliProgress from 'cli-progress';
import type pg from 'pg';
import { consumeTopics } from '../kafka/topics.ts';
import { compareHistories, kafkaHistory, sourceHistory } from '../kafka/verify.ts';
import { resolveServers } from '../harness/servers.ts';
import { historyCount, waitForSinkToCatchUp } from './convergence.ts';
import { recreateDatabase, withClient } from './databases.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManagedProcess } from '../harness/process.ts';
import { REPO_ROOT } from '../harness/servers.ts';

const CHANGES = Number(process.env.DEMO_CHANGES ?? 20_000);
const PARTITIONS = Number(process.env.DEMO_PARTITIONS ?? 4);
const SNAPSHOT_ROWS = Number(process.env.DEMO_SNAPSHOT_ROWS ?? 20_000);
const SINKS = (process.env.DEMO_SINKS ?? 'postgres,kafka').split(',').map((sink) => sink.trim());
if (!SINKS.includes('postgres') || SINKS.some((sink) => sink !== 'postgres' && sink !== 'kafka')) {
  throw new Error(`DEMO_SINKS must be postgres or postgres,kafka, got ${JSON.stringify(process.env.DEMO_SINKS)}`);
}
const PIPELINE = 'demo';
const SOURCE_DB = 'cdc_demo_source';
const SINK_DB = 'cdc_demo_sink';


async function slotLagBytes(sourceUrl: string, slot: string): Promise<number> {
  return withClient(sourceUrl, async (client: pg.Client) => {
    const result = await client.query<{ lag: string | null }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS lag FROM pg_replication_slots WHERE slot_name = $1`,
      [slot],
    );
    return Number(result.rows[0]?.lag ?? 0);
  });
}

async function main(): Promise<number> {
  const servers = await resolveServers();
  const { urls } = servers;
  console.log(`servers (${servers.source}): postgres ${new URL(urls.postgres).host}, nats ${urls.nats}, redis ${urls.redis}, etcd ${urls.etcd}`);
  const sourceUrl = await recreateDatabase(urls.postgres, SOURCE_DB, SOURCE_SCHEMA_SQL);
  const sinkUrl = await recreateDatabase(urls.postgres, SINK_DB, SINK_SCHEMA_SQL);
  const pipelineName = `${PIPELINE}_${Date.now().toString(36)}`;
  if (SNAPSHOT_ROWS > 0) {
    await applyBenchSchema(sourceUrl, 'source');
    await applyBenchSchema(sinkUrl, 'sink');
    await runBenchWorkload({ databaseUrl: sourceUrl, shape: 'small', changes: SNAPSHOT_ROWS, rowsPerTxn: 5_000, clients: 1, ratePerSecond: 0, synchronousCommit: false });
    console.log(`${SNAPSHOT_ROWS.toLocaleString('en-US')} rows already in public.audit_events: the reader's initial snapshot brings them`);
  }

  const withKafka = SINKS.includes('kafka');
  console.log(
    `starting reader, lamport-reorderer x2, dedup-gate, committer${withKafka ? ', committer-kafka' : ''} (pipeline ${pipelineName}, ${PARTITIONS} partitions)…`,
  );
  const dir = mkdtempSync(join(tmpdir(), 'cdc-demo-'));
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(
    file,
    [
      `pipeline: ${pipelineName}`,
      `partitions: ${PARTITIONS}`,
      `nats: { url: "${urls.nats}" }`,
      `etcd: { url: "${urls.etcd}" }`,
      `redis: { url: "${urls.redis}" }`,
      'sources:',
      `  - { id: src1, connection: "${sourceUrl}", tables: [${WATCHED_TABLES.join(', ')}] }`,
      'relay: { reorderer: { processes: 2 } }',
      'sinks:',
      `  - { kind: postgres, connection: "${sinkUrl}" }`,
      ...(withKafka ? [`  - { kind: kafka, connection: [${urls.kafkaBrokers.join(', ')}], topicPrefix: ${pipelineName}, checkpointTopic: cdc.checkpoints }`] : []),
      '',
    ].join('\n'),
  );
  const apps = ['reader:src1', 'lamport-reorderer:0', 'lamport-reorderer:1', 'dedup-gate', 'committer:postgres', ...(withKafka ? ['committer:kafka'] : [])];
  // cdc run's own lines (health, progress) stay in its buffer: the progress bars below own the terminal.
  const run = ManagedProcess.spawn({ name: 'cdc-run', command: process.execPath, args: ['apps/cli/dist/main.js', 'run', file, '--log-dir', join(dir, 'logs')], cwd: REPO_ROOT });
  const stopRun = async (): Promise<void> => {
    if (run.pid !== undefined && !run.status) process.kill(run.pid, 'SIGTERM');
    await run.waitForExit(120_000).catch(() => run.kill('SIGKILL'));
  };
  try {
    console.log(`  cdc run ${file} (app logs in ${join(dir, 'logs')})`);
    for (const name of apps) {
      const started = await run.waitForLine(new RegExp(`${name}: started \\(pid (\\d+)`), 120_000);
      await run.waitForLine(new RegExp(`${name}: ready`), 120_000);
      console.log(`  ${name.padEnd(20)} healthy (pid ${started.match[1]})`);
    }
  } catch (error) {
    console.log(run.stdout.join('\n'));
    await stopRun();
    throw error;
  }
  try {
    const bars = new cliProgress.MultiBar(
      {
        format: '{what} {bar} {value}/{total} | {detail}',
        noTTYOutput: true,
        notTTYSchedule: 2_000,
        hideCursor: true,
      },
      cliProgress.Presets.shades_classic,
    );
    const started = Date.now();
    const bar = bars.create(CHANGES + SNAPSHOT_ROWS, 0, { what: 'applied ', detail: 'committed in source 0 | lag 0 | slot lag 0 kB | 0/s' });
    const snapshotBar = SNAPSHOT_ROWS > 0 ? bars.create(SNAPSHOT_ROWS, 0, { what: 'snapshot', detail: 'waiting' }) : undefined;
    let committed = 0;
    const slot = `cdc_${pipelineName}_src1`;
    const ticker = setInterval(() => {
      void (async () => {
        const [source, sink, slotLag, jobs] = await Promise.all([historyCount(sourceUrl), historyCount(sinkUrl), slotLagBytes(sourceUrl, slot), withClient(sourceUrl, (client: pg.Client) => readSnapshotJobs(client, slot))]);
        committed = source;
        bar.setTotal(Math.max(CHANGES + SNAPSHOT_ROWS, source));
        bar.update(sink, { detail: `committed in source ${source} | lag ${source - sink} | slot lag ${Math.round(slotLag / 1024)} kB | ${Math.round(sink / ((Date.now() - started) / 1000))}/s` });
        const job = jobs.find((j) => j.table === 'public.audit_events');
        if (snapshotBar && job) {
          snapshotBar.setTotal(Math.max(job.rowsEstimated ?? SNAPSHOT_ROWS, job.rowsRead, 1));
          snapshotBar.update(job.rowsRead, { detail: `public.audit_events ${job.status}, ${job.chunks} chunks` });
        }
      })().catch(() => undefined);
    }, 500);
    if (snapshotBar) {
      // The snapshot first, then the workload: a row the workload writes while its chunk is
      // still ahead would reach the sinks twice — as its change and as a read of the same
      // state (a snapshot read is a state, Debezium's incremental snapshots do the same) —
      // which the change-by-change verification below counts as a duplicate. The e2e test
      // snapshot.test.ts runs them at the same time.
      const deadline = Date.now() + 300_000;
      for (;;) {
        const jobs = await withClient(sourceUrl, (client: pg.Client) => readSnapshotJobs(client, slot));
        if (jobs.length > 0 && jobs.every((job) => job.status === 'done')) break;
        if (jobs.some((job) => job.status === 'failed') || Date.now() > deadline) throw new Error(`the initial snapshot did not finish: ${JSON.stringify(jobs)}`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    const load = await runWorkload({ databaseUrl: sourceUrl, totalChanges: CHANGES, clients: 4, seed: Date.now() % 1000 });
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [sourceUrl], sinkUrl, timeoutMs: 300_000 });
    clearInterval(ticker);
    bar.update(caughtUp.applied, { detail: `committed in source ${caughtUp.committed} | lag ${caughtUp.committed - caughtUp.applied}` });
    bars.stop();
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `workload: ${load.changes} changes in ${load.transactions} transactions (${(load.changes / (load.elapsedMs / 1000)).toFixed(0)}/s written); ` +
        `pipeline applied ${caughtUp.applied} history rows in ${seconds.toFixed(1)} s (${(caughtUp.applied / seconds).toFixed(0)}/s end to end)`,
    );
    void committed;
    const report = await verifySourceAgainstSink(sourceUrl, sinkUrl);
    console.log(`${report.ok ? 'VERIFIED' : 'MISMATCH'}: ${report.summary}`);
    const kafkaOk = withKafka ? await verifyKafka(urls.kafkaBrokers, pipelineName, sourceUrl, caughtUp.committed) : true;
    return report.ok && caughtUp.caughtUp && kafkaOk ? 0 : 1;
  } finally {
    await stopRun();
    console.log(`cdc run: ${run.stdout.filter((line) => /restarting|all apps stopped/.test(line)).map((line) => line.slice(9)).join('; ') || 'no line'}`);
    await servers.stop();
  }
}

/** Reads the demo's topics read_committed and compares them with the source's history. */
async function verifyKafka(brokers: readonly string[], topicPrefix: string, sourceUrl: string, committed: number): Promise<boolean> {
  const reader = await consumeTopics(brokers, WATCHED_TABLES.map((table) => `${topicPrefix}.${table}`));
  try {
    const changes = (): number => reader.records.filter((record) => record.value !== null).length;
    await reader.until(() => changes() >= committed, 120_000, `${committed} change records in Kafka`).catch(() => undefined);
    // A duplicate would arrive right behind the last record; let it show.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const result = compareHistories(await sourceHistory(sourceUrl), kafkaHistory(reader.records), { tombstones: true });
    console.log(
      `${result.ok ? 'VERIFIED' : 'MISMATCH'} (kafka, read_committed): ${result.kafkaChanges} change records for ${result.sourceChanges} source changes, ` +
        `${result.tombstones} tombstones; missing ${result.missing}, duplicates ${result.duplicates}, per-key order violations ${result.orderViolations}`,
    );
    for (const mismatch of result.mismatches) console.log(`  ${mismatch}`);
    return result.ok;
  } finally {
    await reader.close();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`demo failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
