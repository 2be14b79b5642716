/**
 * `pnpm bench` (issue #5): how fast the four apps move changes on this machine, next to
 * the physical limit, in ONE run. Figures, not asserts — the only hard check is that the
 * sink equals the source after every workload (a fast wrong answer is no result).
 *
 * For each workload (fresh source + sink databases, a fresh pipeline of real processes,
 * sink = PostgreSQL):
 *   1. a publication and two extra pgoutput slots are created on the source (the limit);
 *   2. the pipeline starts and a sampler reads every 250 ms the source rows written, the
 *      last_seq of the RAW / ORDERED / DEDUPED streams, the sink rows applied and each
 *      app's RSS;
 *      a CPU meter (bench/cpu.ts) reads every process's utime+stime (apps, nats-server,
 *      redis-server, etcd, the Kafka broker in Kafka runs, PostgreSQL's children by role)
 *      over the workload window → CPU µs per change; Redis used_memory at the end;
 *   3. the generator (a server-side procedure, @cdc/testkit runBenchWorkload) writes;
 *   4. the bench waits (bounded) for the sink to hold every change, verifies sink ==
 *      source (@cdc/testkit verifier), reads latency/throughput from the sink's
 *      applied_at column, and stops the pipeline;
 *   5. the same WAL is drained by pg_recvlogical (--endpos = the workload's end LSN) and
 *      by pg-logical-replication's PgoutputPlugin in this process, BENCH_LIMIT_ATTEMPTS
 *      times each, alternating: the best attempt of each tool is its limit.
 * Results: bench/results/<ISO time>.json (machine, config, every number, samples) and the
 * tables below printed at the end. Every process and object the bench creates is removed
 * at the end, on failure and on Ctrl-C.
 *
 * Workloads (BENCH_WORKLOADS, comma list, default all, in this order):
 *   single-row   single-row transactions, as fast as the generator goes     (audit_events)
 *   txn-100      100-row transactions                                        (audit_events)
 *   wide-rows    100-row transactions of rows with a 2 KB note, TOASTed (STORAGE EXTERNAL; accounts)
 *   latency      BENCH_LATENCY_ROWS_PER_TXN-row transactions paced at BENCH_LATENCY_RATE changes/s
 *                for BENCH_LATENCY_SECONDS, synchronous_commit on (latency workload)
 *   one-big-txn  ONE transaction of BENCH_BIG_TXN_ROWS rows (INSERT ... SELECT generate_series)
 *
 * Environment (defaults in brackets; BENCH_QUICK=1 shrinks the sizes for a smoke run):
 *   BENCH_QUICK=1                 sizes 5k / 10k / 3k, latency 5 s, big transaction 20k
 *   BENCH_WORKLOADS               [single-row,txn-100,wide-rows,latency,one-big-txn]
 *   BENCH_PARTITIONS              [4]      partitions P
 *   BENCH_REORDERERS              [2]      reorderer processes (partitions dealt round-robin)
 *   BENCH_SINGLE_ROW_CHANGES      [30000]  (quick 5000)
 *   BENCH_TXN100_CHANGES          [60000]  (quick 10000)
 *   BENCH_BIG_TXN_ROWS            [1000000] (quick 20000) rows of the one big transaction
 *   BENCH_WIDE_CHANGES            [20000]  (quick 3000)
 *   BENCH_LATENCY_RATE            [5000]   offered changes/s (paced by the generator)
 *   BENCH_LATENCY_SECONDS         [10]     (quick 5)
 *   BENCH_LATENCY_CLIENTS         [4]      generator sessions sharing the offered rate
 *   BENCH_LATENCY_ROWS_PER_TXN    [10]     rows per transaction of the latency workload
 *   BENCH_LATENCY_WARMUP_SECONDS  [3]      same load, written and drained before the measured run (0 = none)
 *   BENCH_GENERATOR_CLIENTS       [2]      generator sessions of the throughput workloads
 *   BENCH_SAMPLE_MS               [250]    sampling period
 *   BENCH_DRAIN_TIMEOUT_S         [900]    bound for the pipeline to drain one workload
 *   BENCH_LIMIT_TIMEOUT_S         [180]    bound for each limit drain
 *   BENCH_LIMIT_ATTEMPTS          [3]      drains per tool (one slot each); the best is the limit
 *   BENCH_SINKS                   [postgres,kafka] each workload runs once per sink; the Kafka run is
 *                                 read back by a read_committed consumer (exactly once checked against
 *                                 the source history) and reuses the PostgreSQL run's limit
 *   BENCH_KAFKA_COMPRESSION       [none]   none or gzip (KAFKA_COMPRESSION of the Kafka committer)
 *   BENCH_KAFKA_BIG_TXN=0         skip one-big-txn into Kafka (the longest run)
 *   BENCH_FROM_SOURCE=1           run the apps from source under tsx, not from their bundles (pnpm build)
 *   BENCH_APP_NODE_OPTIONS        NODE_OPTIONS for every app instead of its Dockerfile's (heap caps)
 *   BENCH_APP_ENV                 K=V,K=V added to every app's environment (e.g. BATCH_LINGER_MS=10)
 *   BENCH_SETTLE_MS               how long the pipeline idles before the workload (default 1000): the idle floor
 *   BENCH_CPU_PROFILE_DIR         write a V8 CPU profile per app and workload there (.cpuprofile: Chrome DevTools)
 *   BENCH_RESULTS_DIR             [bench/results]
 *   BENCH_ECHO=1                  copy the apps' logs to stderr
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type pg from 'pg';
import { streamName } from '@cdc/core';
import {
  applyBenchSchema,
  runBenchWorkload,
  verifySourceAgainstSink,
  SINK_SCHEMA_SQL,
  SOURCE_SCHEMA_SQL,
  WATCHED_TABLES,
  type BenchRowShape,
  type BenchWorkloadResult,
} from '@cdc/testkit';
import { requestBackfill } from '@cdc/pg-source';
import { resolveServers, type ServerUrls } from '../tests/harness/servers.ts';
import { dropDatabase, recreateDatabase, withClient } from '../tests/e2e/databases.ts';
import { PipelineProcesses } from '../tests/e2e/pipeline.ts';
import { lastApplied, round, rssSummary, sinkLatency, slowestStage, stageRates } from './analysis.ts';
import { loadConfig, type BenchConfig, type WorkloadName } from './config.ts';
import { bestOf, copyToDevNull, createLimitSlots, drainWithNode, drainWithRecvlogical, dropLimitSlots, pgRecvlogicalPath, type LimitResult } from './limit.ts';
import { markdownLines, summaryLines, checkTargets, type WorkloadResult } from './report.ts';
import { memoryKb, Sampler, type Sample } from './sampler.ts';
import { KafkaSinkProbe } from './kafka.ts';
import { CpuMeter, findServers, redisUsedMemory, type CpuReport, type ServerName } from './cpu.ts';

interface WorkloadSpec {
  readonly name: WorkloadName;
  readonly description: string;
  readonly shape: BenchRowShape;
  readonly table: 'audit_events' | 'accounts';
  readonly changes: number;
  readonly rowsPerTxn: number;
  readonly clients: number;
  readonly rate: number;
  readonly synchronousCommit: boolean;
  /** Rows written (same shape and rate) and drained before the measured run: apps warm, not measured. */
  readonly warmupChanges: number;
}

function specs(config: BenchConfig): WorkloadSpec[] {
  const all: Record<WorkloadName, WorkloadSpec> = {
    'single-row': {
      name: 'single-row', description: 'single-row transactions, small rows', shape: 'small', table: 'audit_events',
      changes: config.singleRowChanges, rowsPerTxn: 1, clients: config.generatorClients, rate: 0, synchronousCommit: false, warmupChanges: 0,
    },
    'txn-100': {
      name: 'txn-100', description: '100-row transactions, small rows', shape: 'small', table: 'audit_events',
      changes: config.txn100Changes, rowsPerTxn: 100, clients: config.generatorClients, rate: 0, synchronousCommit: false, warmupChanges: 0,
    },
    'one-big-txn': {
      name: 'one-big-txn', description: `one transaction of ${config.bigTxnRows} small rows`, shape: 'small', table: 'audit_events',
      changes: config.bigTxnRows, rowsPerTxn: config.bigTxnRows, clients: 1, rate: 0, synchronousCommit: false, warmupChanges: 0,
    },
    'wide-rows': {
      name: 'wide-rows', description: '100-row transactions, 2 KB TOASTed note per row', shape: 'wide', table: 'accounts',
      changes: config.wideRowChanges, rowsPerTxn: 100, clients: config.generatorClients, rate: 0, synchronousCommit: false, warmupChanges: 0,
    },
    snapshot: {
      name: 'snapshot',
      description: `backfill of a table holding ${config.snapshotRows.toLocaleString('en-US')} small rows before the pipeline started (signal table)`,
      shape: 'small', table: 'audit_events', changes: config.snapshotRows, rowsPerTxn: 10_000, clients: 1, rate: 0, synchronousCommit: false, warmupChanges: 0,
    },
    latency: {
      name: 'latency',
      description: `${config.latencyRowsPerTxn}-row transactions paced at ${config.latencyRate} changes/s for ${config.latencySeconds} s`,
      shape: 'small', table: 'audit_events', changes: config.latencyRate * config.latencySeconds, rowsPerTxn: config.latencyRowsPerTxn,
      clients: config.latencyClients, rate: config.latencyRate,
      // Latency needs each commit flushed at once: logical decoding only sends flushed WAL.
      // Flushing costs one fsync per commit, which is why the default is 10 rows per
      // transaction (500 commits/s at 5,000 changes/s): with single-row transactions the
      // generator alone stalled at ~1,300 commits/s on this shared 2-core machine.
      synchronousCommit: true,
      // Latency is a steady-state figure: the first seconds of fresh apps (JIT, connections)
      // would otherwise start a queue that the whole run then measures.
      warmupChanges: config.latencyRate * config.latencyWarmupSeconds,
    },
  };
  return config.workloads.map((name) => all[name]);
}

/**
 * LIFO clean-up steps, run once: by the normal path or by a signal handler, whichever comes
 * first; a second caller waits for the same run (so the process cannot exit mid-way).
 */
class Cleanup {
  readonly #steps: { label: string; run: () => Promise<unknown> }[] = [];
  #running: Promise<void> | undefined;
  defer(label: string, run: () => Promise<unknown>): void {
    this.#steps.push({ label, run });
  }
  run(): Promise<void> {
    this.#running ??= this.#drain();
    return this.#running;
  }
  async #drain(): Promise<void> {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop();
      if (!step) break;
      const bounded = Promise.race([step.run(), new Promise((_, reject) => setTimeout(() => reject(new Error('timed out after 30 s')), 30_000))]);
      await bounded.catch((error: unknown) => console.error(`cleanup: ${step.label}: ${error instanceof Error ? error.message : String(error)}`));
    }
  }
}

const cleanups = new Set<Cleanup>();
let interrupted = false;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function log(message: string): void {
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

async function deleteStreams(natsUrl: string, pipeline: string): Promise<void> {
  const nc = await connect({ servers: natsUrl.replace(/^nats:\/\//, ''), name: 'cdc-bench-cleanup' });
  try {
    const jsm = await jetstreamManager(nc, { timeout: 5_000 });
    for (const stage of ['raw', 'ordered', 'deduped', 'dlq'] as const) await jsm.streams.delete(streamName(pipeline, stage)).catch(() => false);
  } finally {
    await nc.close();
  }
}

async function committedChanges(sinkUrl: string): Promise<number> {
  return withClient(sinkUrl, async (client: pg.Client) => Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM change_history')).rows[0]?.n ?? 0));
}

/** Waits until the sink committed every change; bounded; fails fast when an app died or nothing moves for 90 s. */
async function waitForDrain(options: {
  sampler: Sampler;
  baseline: Sample;
  pipeline: PipelineProcesses;
  sinkUrl: string;
  changes: number;
  /** Changes the sink's history held before the baseline (a warm-up). */
  committedBefore?: number;
  timeoutMs: number;
  label: string;
  /** Changes the sink holds in all (default: the PostgreSQL sink's change_history). */
  sinkTotal?: () => Promise<number>;
}): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  const stallMs = 90_000;
  let lastProgress = Date.now();
  let lastSignature = '';
  let lastLog = 0;
  const streamSlack = Math.max(1_000, options.changes * 0.02);
  while (Date.now() < deadline) {
    if (interrupted) throw new Error('interrupted');
    for (const name of options.pipeline.names) {
      const status = options.pipeline.process(name).status;
      if (status) throw new Error(`${name} exited (code ${status.code}, signal ${status.signal}) during ${options.label}: ${lastWords(options.pipeline.process(name))}`);
    }
    const latest = options.sampler.latest ?? options.baseline;
    const applied = latest.sink - options.baseline.sink;
    const total = options.sinkTotal ?? (() => committedChanges(options.sinkUrl));
    if (applied >= options.changes && (await total()) >= (options.committedBefore ?? 0) + options.changes) return;
    // Progress = the sink moved, or a stream moved by more than heartbeats would.
    const q = (value: number): number => Math.floor(value / streamSlack);
    const signature = `${latest.source}:${latest.sink}:${q(latest.raw)}:${q(latest.ordered)}:${q(latest.deduped)}`;
    if (signature !== lastSignature) {
      lastSignature = signature;
      lastProgress = Date.now();
    } else if (Date.now() - lastProgress > stallMs) {
      throw new Error(
        `${options.label}: no progress for ${stallMs / 1000} s (source ${latest.source - options.baseline.source}, raw ${latest.raw - options.baseline.raw}, ` +
          `ordered ${latest.ordered - options.baseline.ordered}, deduped ${latest.deduped - options.baseline.deduped}, sink ${applied} of ${options.changes})`,
      );
    }
    if (Date.now() - lastLog > 5_000) {
      lastLog = Date.now();
      log(
        `  ${options.label}: source ${latest.source - options.baseline.source}, raw ${latest.raw - options.baseline.raw}, ordered ${latest.ordered - options.baseline.ordered}, ` +
          `deduped ${latest.deduped - options.baseline.deduped}, sink ${applied} / ${options.changes}`,
      );
    }
    await sleep(250);
  }
  throw new Error(`${options.label}: the sink did not hold all ${options.changes} changes within ${options.timeoutMs / 1000} s`);
}

/** The error lines of a dead app: its last error-level log line and the first lines of its last stack trace. */
function lastWords(app: { stdout: readonly string[]; stderr: readonly string[] }): string {
  const errorLog = [...app.stdout].reverse().find((line) => /"level":(50|60)/.test(line));
  const stderr = app.stderr.slice(-30);
  const start = stderr.findIndex((line) => /Error|error:/.test(line));
  const trace = (start >= 0 ? stderr.slice(start, start + 4) : stderr.slice(-4)).map((line) => line.trim()).join(' | ');
  return [errorLog?.slice(0, 600), trace].filter(Boolean).join(' || ');
}

function compactSamples(samples: readonly Sample[], t0: number): { columns: string[]; rows: number[][]; rssKb: Record<string, number[][]> } {
  const rssKb: Record<string, number[][]> = {};
  for (const sample of samples) for (const [app, [rss]] of Object.entries(sample.rss)) (rssKb[app] ??= []).push([sample.t - t0, rss]);
  return {
    columns: ['ms', 'source', 'raw', 'ordered', 'deduped', 'sink'],
    rows: samples.map((s) => [s.t - t0, s.source, s.raw, s.ordered, s.deduped, s.sink]),
    rssKb,
  };
}

/** Pids of the shared servers (bench/cpu.ts findServers), found once per run. */
let serverPids: Partial<Record<ServerName, number>> = {};

async function runWorkloadSpec(
  spec: WorkloadSpec,
  sink: 'postgres' | 'kafka',
  index: number,
  config: BenchConfig,
  servers: ServerUrls,
  /** Kafka runs: the limit measured by the PostgreSQL run of the same workload (same WAL shape). */
  sharedLimit?: { recvlogical?: LimitResult; node?: LimitResult; copy?: LimitResult },
): Promise<WorkloadResult> {
  const tag = `${process.pid}_${index}`;
  const sourceDb = `cdc_bench_${tag}_src`;
  const sinkDb = `cdc_bench_${tag}_sink`;
  const pipelineName = `bench_${tag}_${Date.now().toString(36)}`;
  const cleanup = new Cleanup();
  cleanups.add(cleanup);
  const kafka = sink === 'kafka';
  const base = {
    name: spec.name,
    description: spec.description,
    sink,
    ...(kafka ? { kafkaCompression: config.kafkaCompression } : {}),
    partitions: config.partitions, changes: spec.changes, rowsPerTxn: spec.rowsPerTxn, shape: spec.shape };
  let generator: BenchWorkloadResult | undefined;
  let partial: Partial<WorkloadResult> = {};
  const limit: { recvlogical?: LimitResult; node?: LimitResult; copy?: LimitResult } = {};
  try {
    log(`${spec.name} → ${sink}: ${spec.description}; ${spec.changes.toLocaleString('en-US')} changes, P=${config.partitions}`);
    cleanup.defer('drop databases', async () => {
      await dropDatabase(servers.postgres, sourceDb);
      await dropDatabase(servers.postgres, sinkDb);
    });
    const sourceUrl = await recreateDatabase(servers.postgres, sourceDb, SOURCE_SCHEMA_SQL);
    const sinkUrl = await recreateDatabase(servers.postgres, sinkDb, SINK_SCHEMA_SQL);
    await applyBenchSchema(sourceUrl, 'source');
    await applyBenchSchema(sinkUrl, 'sink');
    // The snapshot workload's rows are there before the pipeline (and its slot): they reach
    // the sink only through the snapshot. Its limit is COPY, not a WAL drain.
    const snapshot = spec.name === 'snapshot';
    let prefill: BenchWorkloadResult | undefined;
    if (snapshot) {
      prefill = await runBenchWorkload({ databaseUrl: sourceUrl, shape: spec.shape, changes: spec.changes, rowsPerTxn: spec.rowsPerTxn, clients: 1, ratePerSecond: 0, synchronousCommit: false });
      log(`  prefilled ${spec.changes.toLocaleString('en-US')} rows before the pipeline starts`);
    }
    const slots = kafka || snapshot ? undefined : await createLimitSlots(sourceUrl, tag, config.limitAttempts);
    if (slots) cleanup.defer('drop limit slots', () => dropLimitSlots(sourceUrl, slots));
    let probe: KafkaSinkProbe | undefined;
    if (kafka) {
      probe = await KafkaSinkProbe.start(servers.kafkaBrokers, WATCHED_TABLES.map((table) => `${pipelineName}.${table}`));
      const opened = probe;
      cleanup.defer('close kafka reader, delete topics', () => opened.close());
    }

    cleanup.defer('delete streams', () => deleteStreams(servers.nats, pipelineName));
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: config.partitions,
      reorderers: config.reorderers,
      sources: [{ id: 'src1', databaseUrl: sourceUrl, tables: WATCHED_TABLES }],
      sinkUrl,
      sinks: [sink],
      kafka: { topicPrefix: pipelineName, checkpointTopic: 'cdc.bench.checkpoints', env: { KAFKA_COMPRESSION: config.kafkaCompression } },
      servers,
      echo: config.echo,
      // What a container runs (dist/main.js): tsx's loader thread would count as the app's memory.
      built: !config.fromSource,
      ...(config.cpuProfileDir
        ? { nodeArgs: (app: string) => ['--cpu-prof', `--cpu-prof-dir=${join(config.cpuProfileDir ?? '', `${spec.name}-${sink}`, app.replace(/[^A-Za-z0-9_-]/g, '_'))}`] }
        : {}),
      // Shorter dedup window than the 15 min default: the bench's keys leave the shared Redis soon.
      extraEnv: {
        DEDUP_WINDOW_MS: '180000',
        // Every workload starts on empty tables but the snapshot one, which asks for a backfill when its clock starts.
        SNAPSHOT_MODE: 'never',
        ...(config.appNodeOptions ? { NODE_OPTIONS: config.appNodeOptions } : {}),
        ...config.appEnv,
      },
    });
    cleanup.defer('stop pipeline', () => pipeline.stop());
    const pids = (): Record<string, number | undefined> => Object.fromEntries(pipeline.names.map((name) => [name, pipeline.process(name).pid]));
    const sampler = await Sampler.start({
      natsUrl: servers.nats,
      sourceUrl,
      sinkUrl,
      pipeline: pipelineName,
      pids,
      periodMs: config.sampleMs,
      ...(probe ? { sinkCount: () => (probe as KafkaSinkProbe).count() } : {}),
    });
    const sinkTotal = probe ? async () => (probe as KafkaSinkProbe).count() : undefined;
    cleanup.defer('stop sampler', () => sampler.stop());
    // The Kafka broker is measured in the Kafka runs only (it idles, or serves others, otherwise).
    const { kafka: brokerPid, ...nonKafka } = serverPids;
    const cpu = await CpuMeter.create({
      urls: servers,
      servers: kafka && brokerPid !== undefined ? { ...nonKafka, kafka: brokerPid } : nonKafka,
      apps: pids,
      sourceDb,
      sinkDb,
    });
    cleanup.defer('stop cpu meter', () => cpu.close());
    await sleep(config.settleMs); // let the apps settle (first heartbeats) before the clock starts
    if (spec.warmupChanges > 0) {
      const before = (await sampler.sampleNow()) as Sample;
      await runBenchWorkload({
        databaseUrl: sourceUrl,
        shape: spec.shape,
        changes: spec.warmupChanges,
        rowsPerTxn: spec.rowsPerTxn,
        clients: spec.clients,
        ratePerSecond: spec.rate,
        synchronousCommit: spec.synchronousCommit,
        firstId: 1_000_000_000,
      });
      await waitForDrain({
        sampler, baseline: before, pipeline, sinkUrl, changes: spec.warmupChanges, timeoutMs: config.drainTimeoutMs, label: `${spec.name} warm-up`,
        ...(sinkTotal ? { sinkTotal } : {}),
      });
      log(`  warm-up: ${spec.warmupChanges} changes written and applied (not measured)`);
    }
    const baseline = (await sampler.sampleNow()) as Sample;
    await cpu.begin({ idle: spec.warmupChanges === 0 });
    const redisAtStart = await redisUsedMemory(servers.redis);

    if (snapshot && prefill) {
      const startedAt = Date.now();
      await withClient(sourceUrl, (client: pg.Client) => requestBackfill(client, { slot: `cdc_${pipelineName}_src1`, tables: [`public.${spec.table}`] }));
      generator = { ...prefill, startedAt, finishedAt: startedAt };
    } else {
      generator = await runBenchWorkload({
        databaseUrl: sourceUrl,
        shape: spec.shape,
        changes: spec.changes,
        rowsPerTxn: spec.rowsPerTxn,
        clients: spec.clients,
        ratePerSecond: spec.rate,
        synchronousCommit: spec.synchronousCommit,
      });
    }
    log(`  generator: ${Math.round(generator.changesPerSecond).toLocaleString('en-US')} changes/s (${((generator.finishedAt - generator.startedAt) / 1000).toFixed(1)} s), WAL ends at ${generator.endLsn}`);
    const generatorInfo = {
      changesPerSecond: generator.changesPerSecond,
      seconds: (generator.finishedAt - generator.startedAt) / 1000,
      clients: spec.clients,
      offeredPerSecond: spec.rate > 0 ? spec.rate : null,
      synchronousCommit: spec.synchronousCommit,
      endLsn: generator.endLsn,
    };
    partial = { generator: generatorInfo };

    await waitForDrain({
      sampler, baseline, pipeline, sinkUrl, changes: spec.changes, committedBefore: spec.warmupChanges, timeoutMs: config.drainTimeoutMs, label: spec.name,
      ...(sinkTotal ? { sinkTotal } : {}),
    });
    const cpuReport = await cpu.end(spec.changes);
    const redisAtEnd = await redisUsedMemory(servers.redis);
    await cpu.close();
    log(`  cpu: ${cpuLine(cpuReport)}`);
    log(`  redis used_memory: ${mib(redisAtEnd)} MiB at the end (${mib(redisAtStart)} MiB before the workload)`);
    partial = { ...partial, cpu: cpuReport, redis: { usedMemoryBytes: redisAtEnd, usedMemoryAtStartBytes: redisAtStart } };
    await sampler.sampleNow();
    const finalRss: Record<string, [number, number]> = {};
    for (const [name, pid] of Object.entries(pids())) finalRss[name] = memoryKb(pid);
    await sampler.stop();
    const samples = sampler.samples.filter((s) => s.t >= baseline.t);

    // One transaction: nothing can flow before its commit (proto 1), so the clock starts there.
    const bigTxn = spec.rowsPerTxn >= spec.changes && spec.changes > 1;
    const clockStart = bigTxn ? generator.finishedAt : generator.startedAt;
    const lastAppliedAt = (probe ? probe.lastTimestampMs() : await lastApplied(sinkUrl, spec.table)) ?? Date.now();
    const seconds = Math.max(0.001, (lastAppliedAt - clockStart) / 1000);
    const stages = stageRates(samples, baseline, spec.changes, generator.startedAt);
    const report = probe ? kafkaReport(await probe.verify(sourceUrl)) : await verifySourceAgainstSink(sourceUrl, sinkUrl);
    log(`  pipeline: ${Math.round(spec.changes / seconds).toLocaleString('en-US')} changes/s (${seconds.toFixed(1)} s); ${report.summary}`);
    let latency: WorkloadResult['latency'];
    if (spec.rate > 0) {
      const measured = probe ? { ...probe.latency(generator.startedAt), perSecond: [] } : await sinkLatency(sinkUrl, spec.table, generator.startedAt);
      const drainedAfter = lastAppliedAt - generator.finishedAt;
      const offeredOk = generator.changesPerSecond >= spec.rate * 0.95;
      const sustained = offeredOk && drainedAfter <= 1_000;
      const note = !offeredOk
        ? `the GENERATOR reached only ${Math.round(generator.changesPerSecond)}/s of ${spec.rate}/s offered`
        : sustained
          ? `the pipeline sustained ${spec.rate}/s (sink caught up ${Math.round(drainedAfter)} ms after the generator stopped)`
          : `the pipeline could NOT sustain ${spec.rate}/s: the sink finished ${(drainedAfter / 1000).toFixed(1)} s after the generator stopped, so latency measures queueing`;
      latency = { ...measured, p50Ms: round(measured.p50Ms), p99Ms: round(measured.p99Ms), maxMs: round(measured.maxMs), offeredPerSecond: spec.rate, sustained, note };
      log(`  latency: p50 ${latency.p50Ms} ms, p99 ${latency.p99Ms} ms, max ${latency.maxMs} ms — ${note}`);
    }
    let toastBytes: number | undefined;
    if (spec.shape === 'wide') {
      toastBytes = await withClient(sourceUrl, async (client: pg.Client) =>
        Number((await client.query<{ b: string }>(`SELECT pg_total_relation_size(reltoastrelid) AS b FROM pg_class WHERE relname = 'accounts'`)).rows[0]?.b ?? 0),
      );
    }
    partial = {
      generator: generatorInfo,
      pipeline: {
        clockStart: bigTxn ? 'source-commit' : 'generator-start',
        seconds,
        changesPerSecond: spec.changes / seconds,
        drainedAfterGeneratorMs: lastAppliedAt - generator.finishedAt,
        verified: report.ok,
        verifySummary: report.summary,
      },
      stages,
      ...(slowestStage(stages) ? { slowestStage: slowestStage(stages) } : {}),
      rss: rssSummary(samples, baseline, finalRss),
      ...(latency ? { latency } : {}),
      ...(toastBytes === undefined ? {} : { toastBytes }),
      cpu: cpuReport,
      redis: { usedMemoryBytes: redisAtEnd, usedMemoryAtStartBytes: redisAtStart },
      samples: compactSamples(samples, generator.startedAt),
    };

    // The limit, on an otherwise idle pipeline: stop the apps first.
    await pipeline.stop();
    if (snapshot) {
      const pipelineRate = spec.changes / seconds;
      let copy = sharedLimit?.copy;
      if (!kafka) {
        const runs: LimitResult[] = [];
        for (let attempt = 0; attempt < config.limitAttempts; attempt++) {
          runs.push(await copyToDevNull({ sourceUrl, table: spec.table, rows: spec.changes, timeoutMs: config.limitTimeoutMs }));
        }
        copy = bestOf(runs) as LimitResult;
        log(`  limit: COPY ${spec.table} TO STDOUT into /dev/null ${copy.ok ? `${Math.round(copy.changesPerSecond).toLocaleString('en-US')} rows/s (attempts ${copy.attempts?.join(', ')})` : `failed: ${copy.error}`}`);
      }
      return {
        ...base,
        ok: report.ok,
        ...partial,
        limit: copy ? { copy } : {},
        ratio: { vsRecvlogical: null, vsNode: null, vsCopy: copy?.ok ? pipelineRate / copy.changesPerSecond : null },
      };
    }
    if (kafka || slots === undefined) {
      // Same workload, same WAL shape: the PostgreSQL run's limit stands for this one.
      const pipelineRate = spec.changes / seconds;
      const recv = sharedLimit?.recvlogical;
      const node = sharedLimit?.node;
      return {
        ...base,
        ok: report.ok,
        ...partial,
        limit: { ...(recv ? { recvlogical: recv } : {}), ...(node ? { node } : {}) },
        ratio: {
          vsRecvlogical: recv?.ok ? pipelineRate / recv.changesPerSecond : null,
          vsNode: node?.ok ? pipelineRate / node.changesPerSecond : null,
        },
      };
    }
    // Alternating attempts, best of each tool: the machine is shared, the limit is what the tool can do.
    const recvRuns: LimitResult[] = [];
    const nodeRuns: LimitResult[] = [];
    for (let attempt = 0; attempt < config.limitAttempts; attempt++) {
      // The slots were created before the warm-up: they drain it too.
      const common = { sourceUrl, publication: slots.publication, endLsn: generator.endLsn, changes: spec.changes + spec.warmupChanges, timeoutMs: config.limitTimeoutMs };
      recvRuns.push(await drainWithRecvlogical({ ...common, slot: slots.recvlogicalSlots[attempt] as string }));
      nodeRuns.push(await drainWithNode({ ...common, slot: slots.nodeSlots[attempt] as string }));
    }
    limit.recvlogical = bestOf(recvRuns) as LimitResult;
    limit.node = bestOf(nodeRuns) as LimitResult;
    const describe = (r: LimitResult): string =>
      r.ok ? `${Math.round(r.changesPerSecond).toLocaleString('en-US')} changes/s (${r.seconds.toFixed(2)} s; attempts ${r.attempts?.join(', ')})` : `failed: ${r.error}`;
    log(`  limit: pg_recvlogical ${describe(limit.recvlogical)}; node pgoutput ${describe(limit.node)}`);
    if (limit.node.ok && limit.node.decodedChanges !== spec.changes + spec.warmupChanges) {
      log(`  note: node pgoutput decoded ${limit.node.decodedChanges} changes, expected ${spec.changes + spec.warmupChanges}`);
    }
    const pipelineRate = spec.changes / seconds;
    return {
      ...base,
      ok: report.ok,
      ...partial,
      limit,
      ratio: {
        vsRecvlogical: limit.recvlogical.ok ? pipelineRate / limit.recvlogical.changesPerSecond : null,
        vsNode: limit.node.ok ? pipelineRate / limit.node.changesPerSecond : null,
      },
    };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log(`  ${spec.name} FAILED: ${message}`);
    return { ...base, ok: false, error: message, ...partial, limit };
  } finally {
    await cleanup.run();
    cleanups.delete(cleanup);
  }
}

const mib = (bytes: number | null): string => (bytes === null ? '?' : (bytes / 1048576).toFixed(1));

/** One log line: the pipeline total, then every counted process, heaviest first. */
function cpuLine(report: CpuReport): string {
  const parts = report.entries
    .filter((e) => e.counted)
    .sort((a, b) => b.usPerChange - a.usPerChange)
    .map((e) => `${e.name} ${e.usPerChange.toFixed(1)}`);
  const generator = report.entries.find((e) => e.name === 'postgres: generator');
  const idle = report.entries.filter((e) => e.idleCpuPercent !== undefined).map((e) => `${e.name} ${(e.idleCpuPercent ?? 0).toFixed(1)}`);
  return (
    `${report.totalUsPerChange.toFixed(1)} µs/change in all (${parts.join(', ')}); not counted: generator ${generator?.usPerChange.toFixed(1) ?? '?'}, ` +
    `all PostgreSQL ${report.postgresUsPerChange.toFixed(1)}, every process ${report.allUsPerChange.toFixed(1)}` +
    (report.missing.length > 0 ? `; NOT FOUND: ${report.missing.join(', ')}` : '') +
    (idle.length > 0 ? `; idle before the workload (% of a core): ${idle.join(', ')}` : '')
  );
}

/** The Kafka verification in the shape the PostgreSQL verifier reports. */
function kafkaReport(v: Awaited<ReturnType<KafkaSinkProbe['verify']>>): { ok: boolean; summary: string } {
  return {
    ok: v.ok && v.sourceChanges === v.kafkaChanges,
    summary:
      `kafka (read_committed): ${v.kafkaChanges} change records for ${v.sourceChanges} source changes, ${v.tombstones} tombstones; ` +
      `missing ${v.missing}, duplicates ${v.duplicates}, per-key order violations ${v.orderViolations}`,
  };
}

/** Which code was measured: HEAD plus uncommitted changes under apps/ and packages/ (others edit the same tree). */
function codeVersion(): { commit: string; uncommitted: string[] } {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--', 'apps', 'packages'], { encoding: 'utf8' });
    return { commit, uncommitted: status.split('\n').map((line) => line.trim()).filter(Boolean) };
  } catch {
    return { commit: 'unknown', uncommitted: [] };
  }
}

async function serverVersion(adminUrl: string): Promise<string> {
  return withClient(adminUrl, async (client: pg.Client) => String((await client.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0]?.v ?? '?'));
}

async function main(): Promise<number> {
  const config = loadConfig();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping the pipeline and removing what the bench created…`);
    void Promise.all([...cleanups].map((c) => c.run())).finally(() => {
      console.error('clean-up done');
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const servers = await resolveServers();
  serverPids = findServers(servers.urls);
  const cpus = os.cpus();
  const machine = {
    cpus: cpus.length,
    model: cpus[0]?.model ?? 'unknown',
    memoryGb: os.totalmem() / 2 ** 30,
    totalMemoryBytes: os.totalmem(),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    loadAverageAtStart: os.loadavg(),
    postgres: await serverVersion(servers.urls.postgres),
    pgRecvlogical: pgRecvlogicalPath() ?? null,
    serverPids,
  };
  const code = codeVersion();
  const startedAt = new Date();
  log(`server pids (CPU per change): ${Object.entries(serverPids).map(([name, pid]) => `${name} ${pid}`).join(', ') || 'none found'}`);
  log(`${machine.cpus} cores (${machine.model}), node ${machine.node}, PostgreSQL ${machine.postgres}${config.quick ? ' — QUICK mode (small sizes)' : ''}`);
  log(
    `sizes: single-row ${config.singleRowChanges}, txn-100 ${config.txn100Changes}, wide-rows ${config.wideRowChanges}, ` +
      `latency ${config.latencyRate}/s × ${config.latencySeconds} s, one-big-txn ${config.bigTxnRows.toLocaleString('en-US')} rows in ONE transaction` +
      (config.bigTxnRows === 1_000_000 ? '' : ' (NOT the issue\'s 1,000,000: BENCH_BIG_TXN_ROWS=1000000 to run that)'),
  );
  const results: WorkloadResult[] = [];
  try {
    let index = 0;
    for (const spec of specs(config)) {
      let postgresLimit: WorkloadResult['limit'] | undefined;
      for (const sink of config.sinks) {
        if (interrupted) break;
        if (sink === 'kafka' && spec.name === 'one-big-txn' && !config.kafkaBigTxn) {
          log(`${spec.name} → kafka: skipped (BENCH_KAFKA_BIG_TXN=0)`);
          continue;
        }
        const result = await runWorkloadSpec(spec, sink, index++, config, servers.urls, postgresLimit);
        if (sink === 'postgres') postgresLimit = result.limit;
        results.push(result);
      }
    }
  } finally {
    await servers.stop();
  }
  if (interrupted) {
    // The signal handler finishes the clean-up and exits; no partial results file.
    await new Promise(() => undefined);
  }
  const finishedAt = new Date();
  const output = {
    issue: 5,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    machine,
    code,
    config,
    targets: checkTargets(results),
    workloads: results,
  };
  mkdirSync(config.resultsDir, { recursive: true });
  const file = join(config.resultsDir, `${startedAt.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`);
  writeFileSync(file, `${JSON.stringify(output, null, 1)}\n`);
  for (const line of summaryLines(results, machine, config.partitions)) console.log(line);
  console.log(`\nmarkdown (bench/README.md):\n`);
  for (const line of markdownLines(results)) console.log(line);
  console.log(`\nresults: ${file} (${((finishedAt.getTime() - startedAt.getTime()) / 60_000).toFixed(1)} min)`);
  return results.every((r) => r.ok) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    void Promise.all([...cleanups].map((c) => c.run())).finally(() => process.exit(1));
  },
);
