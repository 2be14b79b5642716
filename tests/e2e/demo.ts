/**
 * The demo (README's first command): servers are up (scripts/demo.sh), this starts the
 * four apps on a fresh source and sink database, runs a workload, shows live progress
 * (changes committed in the source / applied to the sink / lag / slot lag) and ends
 * with one verification line: source == sink, row by row and change by change.
 *
 *   DEMO_CHANGES=50000 DEMO_PARTITIONS=4 pnpm demo
 */
import { runWorkload, verifySourceAgainstSink, WATCHED_TABLES, SINK_SCHEMA_SQL, SOURCE_SCHEMA_SQL } from '@cdc/testkit';
import cliProgress from 'cli-progress';
import pg from 'pg';
import { resolveServers } from '../harness/servers.ts';
import { historyCount, waitForSinkToCatchUp } from './convergence.ts';
import { recreateDatabase, withClient } from './databases.ts';
import { PipelineProcesses } from './pipeline.ts';

const CHANGES = Number(process.env.DEMO_CHANGES ?? 20_000);
const PARTITIONS = Number(process.env.DEMO_PARTITIONS ?? 4);
const PIPELINE = 'demo';
const SOURCE_DB = 'cdc_demo_source';
const SINK_DB = 'cdc_demo_sink';


async function slotLagBytes(sourceUrl: string): Promise<number> {
  return withClient(sourceUrl, async (client: pg.Client) => {
    const result = await client.query<{ lag: string | null }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS lag FROM pg_replication_slots WHERE slot_name = $1`,
      [`cdc_${PIPELINE}_src1`],
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

  console.log(`starting reader, lamport-reorderer x2, dedup-gate, committer (pipeline ${pipelineName}, ${PARTITIONS} partitions)…`);
  const pipeline = await PipelineProcesses.start({
    pipeline: pipelineName,
    partitions: PARTITIONS,
    sources: [{ id: 'src1', databaseUrl: sourceUrl, tables: WATCHED_TABLES }],
    sinkUrl,
    servers: urls,
  });
  try {
    for (const name of pipeline.names) console.log(`  ${name.padEnd(14)} healthy (pid ${pipeline.process(name).pid})`);
    const bar = new cliProgress.SingleBar(
      {
        format: 'applied {bar} {value}/{total} changes | committed in source {committed} | lag {lag} | slot lag {slotLag} kB | {rate}/s',
        noTTYOutput: true,
        notTTYSchedule: 2_000,
        hideCursor: true,
      },
      cliProgress.Presets.shades_classic,
    );
    const started = Date.now();
    bar.start(CHANGES, 0, { committed: 0, lag: 0, slotLag: 0, rate: 0 });
    let committed = 0;
    const ticker = setInterval(() => {
      void (async () => {
        const [source, sink, slot] = await Promise.all([historyCount(sourceUrl), historyCount(sinkUrl), slotLagBytes(sourceUrl)]);
        committed = source;
        bar.setTotal(Math.max(CHANGES, source));
        bar.update(sink, {
          committed: source,
          lag: source - sink,
          slotLag: Math.round(slot / 1024),
          rate: Math.round(sink / ((Date.now() - started) / 1000)),
        });
      })().catch(() => undefined);
    }, 500);
    const load = await runWorkload({ databaseUrl: sourceUrl, totalChanges: CHANGES, clients: 4, seed: Date.now() % 1000 });
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [sourceUrl], sinkUrl, timeoutMs: 300_000 });
    clearInterval(ticker);
    bar.update(caughtUp.applied, { committed: caughtUp.committed, lag: caughtUp.committed - caughtUp.applied });
    bar.stop();
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `workload: ${load.changes} changes in ${load.transactions} transactions (${(load.changes / (load.elapsedMs / 1000)).toFixed(0)}/s written); ` +
        `pipeline applied ${caughtUp.applied} history rows in ${seconds.toFixed(1)} s (${(caughtUp.applied / seconds).toFixed(0)}/s end to end)`,
    );
    void committed;
    const report = await verifySourceAgainstSink(sourceUrl, sinkUrl);
    console.log(`${report.ok ? 'VERIFIED' : 'MISMATCH'}: ${report.summary}`);
    return report.ok && caughtUp.caughtUp ? 0 : 1;
  } finally {
    await pipeline.stop();
    await servers.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`demo failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
