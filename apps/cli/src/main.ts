#!/usr/bin/env node
/**
 * `cdc`: the pipeline's command line (commander). Human tables by default, `--json` for
 * scripts. Connection settings come from the same variables as the apps (NATS_URL,
 * SINK_DATABASE_URL, SOURCE_DATABASE_URL, PIPELINE) or flags, checked with the apps' field
 * schemas (settings.ts); passwords never printed.
 *
 *   cdc dlq list [--stage S] [--limit N] [--replays] [--json]
 *   cdc dlq show <seq>
 *   cdc dlq replay <seq...> | --all [--dry-run] [--force] (PostgreSQL committer letters)
 *   cdc snapshot start <table...> [--from K --to K]     (a backfill through the signal table)
 *   cdc snapshot status [--watch]                       (progress bars while it runs)
 *   cdc run <pipeline.yaml> [--log-dir D] [--echo]      (every app, supervised, on this machine)
 *   cdc status <pipeline.yaml> [--json]                 (health, committed positions, slot lag, dead letters)
 *   cdc verify <pipeline.yaml> [--sink S] [--json]      (PostgreSQL sinks against the sources, by hash in key-range chunks)
 */
import { readSnapshotJobs, requestBackfill, describeProgress, type SnapshotJobProgress } from '@cdc/pg-source';
import { loadPipelineFile, redactUrl } from '@cdc/runtime';
import { resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { Command, Option } from 'commander';
import pg from 'pg';
import { DeadLetterStore, PgReplayer, readReplays, type ReplayResult, type StoredLetter } from './dlq.ts';
import { SETTINGS, checkSettings } from './settings.ts';
import { planApps } from './plan.ts';
import { runPipeline } from './run.ts';
import { pipelineStatus, renderStatus } from './status.ts';
import { renderVerify, verifyPipeline } from './verify.ts';
import { letterSummary, listTable, positiveInteger, stageName, renderTable, replayTable, selectLetters } from './letters.ts';

const program = new Command('cdc').description('inspect and operate a cdc pipeline').showHelpAfterError();

const pipelineOption = (): Option => new Option('--pipeline <name>', 'pipeline name').env('PIPELINE').makeOptionMandatory();
const natsOption = (): Option => new Option('--nats <url>', 'NATS URL').env('NATS_URL').default('nats://127.0.0.1:4222');
const jsonOption = (): Option => new Option('--json', 'machine-readable output');

async function withStore<T>(options: { nats: string; pipeline: string }, work: (store: DeadLetterStore) => Promise<T>): Promise<T> {
  const store = await DeadLetterStore.open(options.nats, options.pipeline);
  try {
    return await work(store);
  } finally {
    await store.close();
  }
}

const dlq = program.command('dlq').description('dead letters: events a stage or sink could not take, with the reason');

dlq
  .command('list')
  .description('list dead letters in stream order')
  .addOption(pipelineOption())
  .addOption(natsOption())
  .option('--stage <stage>', 'only letters of this stage (reader, lamport-reorderer, dedup-gate, committer)', stageName)
  .option('--limit <n>', 'at most this many', positiveInteger, 100)
  .option('--replays', 'also say which letters were replayed into the sink (reads its _cdc_dlq_replays)')
  .addOption(new Option('--sink-url <url>', 'the PostgreSQL sink, for --replays').env('SINK_DATABASE_URL'))
  .addOption(jsonOption())
  .action(async (options: { pipeline: string; nats: string; stage?: string; limit: number; replays?: boolean; sinkUrl?: string; json?: boolean }) => {
    checkSettings([SETTINGS.pipeline(options.pipeline), SETTINGS.nats(options.nats), ...(options.replays ? [SETTINGS.sinkUrl(options.sinkUrl)] : [])]);
    const letters = await withStore(options, (store) => store.list({ limit: options.limit, ...(options.stage ? { stage: options.stage } : {}) }));
    const ids = letters.flatMap((s) => (s.id === undefined ? [] : [s.id]));
    const replays = options.replays && options.sinkUrl ? await readReplays(options.sinkUrl, ids) : undefined;
    if (options.json) {
      console.log(JSON.stringify(letters.map((s) => letterSummary(s, replays)), null, 1));
      return;
    }
    if (letters.length === 0) {
      console.log(`no dead letters in pipeline ${options.pipeline}`);
      return;
    }
    console.log(listTable(letters, replays));
  });

dlq
  .command('show')
  .description('one letter whole, its event decoded')
  .argument('<seq>', 'stream sequence (from list)', positiveInteger)
  .addOption(pipelineOption())
  .addOption(natsOption())
  .action(async (seq: number, options: { pipeline: string; nats: string }) => {
    checkSettings([SETTINGS.pipeline(options.pipeline), SETTINGS.nats(options.nats)]);
    const stored = await withStore(options, (store) => store.get(seq));
    if (!stored) throw new Error(`no dead letter at sequence ${seq} in pipeline ${options.pipeline}`);
    let payload: unknown = stored.letter.payload;
    try {
      payload = JSON.parse(stored.letter.payload);
    } catch {
      // kept as text: the payload was not JSON (the letter says why)
    }
    console.log(JSON.stringify({ ...letterSummary(stored), letter: { ...stored.letter, payload } }, null, 2));
  });

dlq
  .command('replay')
  .description('apply PostgreSQL committer letters to their sink once their cause is fixed: each once (a second replay changes nothing)')
  .argument('[seq...]', 'stream sequences (from list)', (v: string, previous: number[] | undefined) => [...(previous ?? []), positiveInteger(v)])
  .option('--all', 'every replayable letter (of --stage, default committer)')
  .option('--stage <stage>', 'with --all: only this stage', stageName, 'committer')
  .option('--dry-run', 'apply in a transaction that is rolled back: says what would happen')
  .option('--force', 'apply even when the deduped stream no longer holds the event (a later delete of its row cannot be ruled out)')
  .addOption(pipelineOption())
  .addOption(natsOption())
  .addOption(new Option('--sink-url <url>', 'the PostgreSQL sink').env('SINK_DATABASE_URL').makeOptionMandatory())
  .addOption(new Option('--sink-name <name>', "the committer's SINK_NAME").env('SINK_NAME').default('postgres'))
  .addOption(new Option('--table-map <map>', "the committer's TABLE_MAP").env('TABLE_MAP'))
  .addOption(jsonOption())
  .action(async (seqs: number[] | undefined, options: { all?: boolean; stage: string; dryRun?: boolean; force?: boolean; pipeline: string; nats: string; sinkUrl: string; sinkName: string; tableMap?: string; json?: boolean }) => {
    checkSettings([SETTINGS.pipeline(options.pipeline), SETTINGS.nats(options.nats), SETTINGS.sinkUrl(options.sinkUrl), SETTINGS.sinkName(options.sinkName)]);
    const named = seqs ?? [];
    if (!options.all && named.length === 0) throw new Error('name the letters to replay (their seq from `cdc dlq list`) or pass --all');
    const results = await withStore(options, async (store) => {
      const all = options.all ? await store.list({ stage: options.stage, limit: 100_000 }) : [];
      const picked: StoredLetter[] = [];
      for (const seq of named) {
        const stored = await store.get(seq);
        if (!stored) throw new Error(`no dead letter at sequence ${seq} in pipeline ${options.pipeline}`);
        picked.push(stored);
      }
      const letters = selectLetters(all, picked);
      const replayer = new PgReplayer({
        sinkUrl: options.sinkUrl,
        pipeline: options.pipeline,
        sink: options.sinkName,
        ...(options.tableMap ? { tableMap: options.tableMap } : {}),
        scanner: store,
      });
      try {
        const out: ReplayResult[] = [];
        for (const stored of letters) out.push(await replayer.replay(stored, { dryRun: options.dryRun === true, force: options.force === true }));
        return out;
      } finally {
        await replayer.close();
      }
    });
    if (options.json) console.log(JSON.stringify(results, null, 1));
    else console.log(replayTable(results));
    if (results.some((r) => r.outcome === 'refused')) process.exitCode = 1;
  });

const snapshot = program.command('snapshot').description('snapshots: backfill tables while the stream runs, and watch their progress');
const sourceOption = (): Option => new Option('--source-url <url>', 'the source PostgreSQL').env('SOURCE_DATABASE_URL').makeOptionMandatory();
const slotOption = (): Option => new Option('--slot <name>', "the reader's slot (default cdc_<pipeline>_<source>)").env('SLOT_NAME');
const slotOf = (options: { slot?: string; pipeline?: string; source?: string }): string => {
  if (options.slot) return options.slot;
  if (!options.pipeline || !options.source) throw new Error('--slot, or --pipeline and --source (SOURCE_ID), name the reader');
  return `cdc_${options.pipeline}_${options.source}`.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 63);
};

async function withSource<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: 'cdc-cli' });
  await client.connect().catch((error: unknown) => {
    throw new Error(`cannot reach the source at ${redactUrl(url)}: ${error instanceof Error ? error.message : String(error)}`);
  });
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

snapshot
  .command('start')
  .description('backfill tables (all rows, or a key range) through the reader of the slot; resumable, runs while changes stream')
  .argument('<table...>', 'schema.table names the reader captures')
  .addOption(sourceOption())
  .addOption(slotOption())
  .addOption(new Option('--pipeline <name>').env('PIPELINE'))
  .addOption(new Option('--source <id>').env('SOURCE_ID'))
  .option('--from <key...>', 'first key (inclusive; one value per key column)')
  .option('--to <key...>', 'last key (inclusive)')
  .option('--watch', 'then show progress until done')
  .addOption(jsonOption())
  .action(async (tables: string[], options: { sourceUrl: string; slot?: string; pipeline?: string; source?: string; from?: string[]; to?: string[]; watch?: boolean; json?: boolean }) => {
    checkSettings([SETTINGS.sourceUrl(options.sourceUrl)]);
    const slot = slotOf(options);
    const id = await withSource(options.sourceUrl, (client) => requestBackfill(client, { slot, tables, rangeFrom: options.from ?? null, rangeTo: options.to ?? null }));
    if (options.json) console.log(JSON.stringify({ signal: id, slot, tables }));
    else console.log(`backfill asked for (signal ${id}): ${tables.join(', ')} through slot ${slot}; the reader takes it within a second`);
    if (options.watch) await watch(options.sourceUrl, slot, tables, options.json === true);
  });

snapshot
  .command('status')
  .description("the slot's snapshot jobs: rows read / estimated, chunks, status")
  .addOption(sourceOption())
  .addOption(slotOption())
  .addOption(new Option('--pipeline <name>').env('PIPELINE'))
  .addOption(new Option('--source <id>').env('SOURCE_ID'))
  .option('--watch', 'progress bars until every job is done')
  .addOption(jsonOption())
  .action(async (options: { sourceUrl: string; slot?: string; pipeline?: string; source?: string; watch?: boolean; json?: boolean }) => {
    checkSettings([SETTINGS.sourceUrl(options.sourceUrl)]);
    const slot = slotOf(options);
    if (options.watch) {
      await watch(options.sourceUrl, slot, undefined, options.json === true);
      return;
    }
    const jobs = await withSource(options.sourceUrl, (client) => readSnapshotJobs(client, slot));
    if (options.json) console.log(JSON.stringify(jobs, null, 1));
    else if (jobs.length === 0) console.log(`no snapshot jobs for slot ${slot}`);
    else console.log(renderTable([['job', 'kind', 'table', 'status', 'chunks', 'progress'], ...jobs.map((j) => [String(j.job), j.kind, j.table, j.status, String(j.chunks), describeProgress(j)])]));
  });

/** Progress bars (cli-progress) of the jobs, newest per table, until none runs; bounded by an hour. */
async function watch(url: string, slot: string, tables: readonly string[] | undefined, json: boolean): Promise<void> {
  const bars = new cliProgress.MultiBar({ format: '{table} {bar} {value}/{total} rows | {detail}', noTTYOutput: true, notTTYSchedule: 2_000, hideCursor: true }, cliProgress.Presets.shades_classic);
  const shown = new Map<number, cliProgress.SingleBar>();
  const started = Date.now();
  const seen = new Map<number, { rows: number; at: number }>();
  try {
    for (;;) {
      const jobs = await withSource(url, (client) => readSnapshotJobs(client, slot));
      const mine = jobs.filter((job) => tables === undefined || tables.some((t) => job.table === (t.includes('.') ? t : `public.${t}`)));
      const wanted = mine.filter((job) => job.status === 'pending' || job.status === 'running' || shown.has(job.job) || tables !== undefined);
      for (const job of wanted.slice(0, 20)) {
        const first = seen.get(job.job) ?? { rows: job.rowsRead, at: Date.now() };
        seen.set(job.job, first);
        const seconds = (Date.now() - first.at) / 1000;
        const rate = seconds > 0 ? (job.rowsRead - first.rows) / seconds : null;
        const withRate: SnapshotJobProgress = { ...job, rate: rate === null ? null : Math.round(rate), etaSeconds: rate && job.rowsEstimated ? Math.round(Math.max(0, job.rowsEstimated - job.rowsRead) / rate) : null };
        if (json) continue;
        let bar = shown.get(job.job);
        if (!bar) {
          bar = bars.create(Math.max(job.rowsEstimated ?? 0, job.rowsRead, 1), job.rowsRead, { table: job.table, detail: job.status });
          shown.set(job.job, bar);
        }
        bar.setTotal(Math.max(job.rowsEstimated ?? 0, job.rowsRead, 1));
        bar.update(job.rowsRead, { table: job.table, detail: describeProgress(withRate) });
      }
      if (json) console.log(JSON.stringify(wanted));
      const open = wanted.some((job) => job.status === 'pending' || job.status === 'running') || (tables !== undefined && wanted.length < tables.length);
      if (!open || Date.now() - started > 3_600_000) break;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  } finally {
    bars.stop();
  }
}

program
  .command('run')
  .description("start every app of a pipeline file on this machine, supervised (restarted with back-off when one crashes); Ctrl-C drains them all, upstream first")
  .argument('<file>', 'the pipeline file (YAML)')
  .option('--log-dir <dir>', "where each app's log goes (default: $TMPDIR/cdc-<pipeline>)")
  .option('--echo', "print every app's log lines (default: only errors)")
  .option('--progress-interval <seconds>', 'seconds between progress lines', positiveInteger, 5)
  .option('--apps-dir <dir>', 'the directory holding <app>/dist/main.js (default: this checkout\'s apps/)')
  .action(async (file: string, options: { logDir?: string; echo?: boolean; progressInterval: number; appsDir?: string }) => {
    await runPipeline(file, {
      progressMs: options.progressInterval * 1000,
      ...(options.logDir ? { logDir: options.logDir } : {}),
      ...(options.echo ? { echo: true } : {}),
      ...(options.appsDir ? { appsDir: options.appsDir } : {}),
    });
  });

program
  .command('status')
  .description("a pipeline file's pipeline: each app's health, per sink and partition the committed position, the slots' confirmed_flush_lsn and lag, dead letters waiting")
  .argument('<file>', 'the pipeline file (YAML)')
  .addOption(jsonOption())
  .action(async (file: string, options: { json?: boolean }) => {
    const path = resolve(file);
    const pipeline = loadPipelineFile(path);
    const status = await pipelineStatus(pipeline, planApps(pipeline, path));
    if (options.json) console.log(JSON.stringify(status, null, 1));
    else console.log(renderStatus(status));
  });

program
  .command('verify')
  .description('compare each PostgreSQL sink with the sources: rows by hash in key-range chunks; exit 1 naming the first rows that differ')
  .argument('<file>', 'the pipeline file (YAML)')
  .option('--sink <name>', 'only this sink')
  .option('--chunk-rows <n>', 'rows per chunk', positiveInteger, 10_000)
  .option('--recheck <ms>', 'compare a differing chunk again after this long (a change in flight settles); 0 = never', (v: string) => (v === '0' ? 0 : positiveInteger(v)), 2_000)
  .option('--show <n>', 'differing rows named per table at most', positiveInteger, 10)
  .addOption(jsonOption())
  .action(async (file: string, options: { sink?: string; chunkRows: number; recheck: number; show: number; json?: boolean }) => {
    const pipeline = loadPipelineFile(resolve(file));
    const result = await verifyPipeline(pipeline, {
      chunkRows: options.chunkRows,
      recheckMs: options.recheck,
      show: options.show,
      progress: !options.json && process.stderr.isTTY === true,
      ...(options.sink ? { sink: options.sink } : {}),
    });
    console.log(options.json ? JSON.stringify(result, null, 1) : renderVerify(result));
    if (!result.ok) process.exitCode = 1;
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  console.error(`cdc: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
