/**
 * The bench's knobs, all from BENCH_* environment variables (documented in
 * bench/pipeline.bench.ts and bench/README.md). Parsed once; a bad value is an error
 * naming the variable.
 */

export type WorkloadName = 'single-row' | 'txn-100' | 'one-big-txn' | 'wide-rows' | 'latency' | 'snapshot';

// The big transaction last: it is the longest, and a stall there costs the others nothing.
export const ALL_WORKLOADS: readonly WorkloadName[] = ['single-row', 'txn-100', 'wide-rows', 'latency', 'one-big-txn', 'snapshot'];

export interface BenchConfig {
  readonly quick: boolean;
  readonly partitions: number;
  readonly reorderers: number;
  readonly workloads: readonly WorkloadName[];
  readonly singleRowChanges: number;
  readonly txn100Changes: number;
  readonly bigTxnRows: number;
  readonly wideRowChanges: number;
  /** Rows the snapshot workload's table holds before the pipeline starts. */
  readonly snapshotRows: number;
  readonly latencyRate: number;
  readonly latencySeconds: number;
  readonly latencyClients: number;
  readonly latencyRowsPerTxn: number;
  readonly latencyWarmupSeconds: number;
  readonly generatorClients: number;
  readonly sampleMs: number;
  /** How long the started pipeline idles before the workload (BENCH_SETTLE_MS): the idle floor's window. */
  readonly settleMs: number;
  /** Upper bound for the pipeline to drain one workload. */
  readonly drainTimeoutMs: number;
  readonly limitTimeoutMs: number;
  readonly limitAttempts: number;
  readonly resultsDir: string;
  readonly echo: boolean;
  /** Each workload runs once per sink (the Kafka sink skips one-big-txn when kafkaBigTxn is off). */
  readonly sinks: readonly ('postgres' | 'kafka')[];
  readonly kafkaCompression: 'none' | 'gzip';
  readonly kafkaBigTxn: boolean;
  /** Run the apps from their TypeScript sources under tsx instead of their bundles. */
  readonly fromSource: boolean;
  /** Added to every app's environment (BENCH_APP_ENV=K=V,K=V): settings to compare. */
  readonly appEnv: Readonly<Record<string, string>>;
  /** NODE_OPTIONS for every app instead of its Dockerfile's (BENCH_APP_NODE_OPTIONS). */
  readonly appNodeOptions: string | undefined;
  /** Where each app writes a V8 CPU profile per workload (BENCH_CPU_PROFILE_DIR). */
  readonly cpuProfileDir: string | undefined;
}

function int(name: string, fallback: number, errors: string[], min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw.replace(/_/g, ''));
  if (!Number.isInteger(value) || value < min) {
    errors.push(`${name}=${JSON.stringify(raw)} must be an integer >= ${min}`);
    return fallback;
  }
  return value;
}

export function loadConfig(): BenchConfig {
  const errors: string[] = [];
  const quick = process.env.BENCH_QUICK === '1';
  const scale = (full: number, small: number): number => (quick ? small : full);
  const workloadsRaw = process.env.BENCH_WORKLOADS?.trim();
  let workloads: WorkloadName[] = [...ALL_WORKLOADS];
  if (workloadsRaw) {
    workloads = [];
    for (const name of workloadsRaw.split(',').map((item) => item.trim()).filter(Boolean)) {
      if ((ALL_WORKLOADS as readonly string[]).includes(name)) workloads.push(name as WorkloadName);
      else errors.push(`BENCH_WORKLOADS: unknown workload ${JSON.stringify(name)} (known: ${ALL_WORKLOADS.join(', ')})`);
    }
  }
  const partitions = int('BENCH_PARTITIONS', 4, errors);
  const config: BenchConfig = {
    quick,
    partitions,
    reorderers: Math.min(partitions, int('BENCH_REORDERERS', 2, errors)),
    workloads,
    singleRowChanges: int('BENCH_SINGLE_ROW_CHANGES', scale(30_000, 5_000), errors),
    txn100Changes: int('BENCH_TXN100_CHANGES', scale(60_000, 10_000), errors),
    // The size. Before the reorderer streamed large transactions (c64292e) it alone
    // took ~11 min here; lower it with BENCH_BIG_TXN_ROWS if it gets that slow again. The
    // start line and the summary print the size used.
    bigTxnRows: int('BENCH_BIG_TXN_ROWS', scale(1_000_000, 20_000), errors),
    wideRowChanges: int('BENCH_WIDE_CHANGES', scale(20_000, 3_000), errors),
    snapshotRows: int('BENCH_SNAPSHOT_ROWS', scale(200_000, 20_000), errors),
    latencyRate: int('BENCH_LATENCY_RATE', 5_000, errors),
    latencySeconds: int('BENCH_LATENCY_SECONDS', scale(10, 5), errors),
    latencyClients: int('BENCH_LATENCY_CLIENTS', 4, errors),
    latencyRowsPerTxn: int('BENCH_LATENCY_ROWS_PER_TXN', 10, errors),
    latencyWarmupSeconds: int('BENCH_LATENCY_WARMUP_SECONDS', 3, errors, 0),
    generatorClients: int('BENCH_GENERATOR_CLIENTS', 2, errors),
    sampleMs: int('BENCH_SAMPLE_MS', 250, errors, 50),
    settleMs: int('BENCH_SETTLE_MS', 1_000, errors, 0),
    drainTimeoutMs: int('BENCH_DRAIN_TIMEOUT_S', 900, errors) * 1000,
    limitTimeoutMs: int('BENCH_LIMIT_TIMEOUT_S', 180, errors) * 1000,
    limitAttempts: int('BENCH_LIMIT_ATTEMPTS', 3, errors),
    resultsDir: process.env.BENCH_RESULTS_DIR ?? 'bench/results',
    echo: process.env.BENCH_ECHO === '1',
    sinks: sinksFrom(process.env.BENCH_SINKS, errors),
    kafkaCompression: process.env.BENCH_KAFKA_COMPRESSION === 'gzip' ? 'gzip' : 'none',
    kafkaBigTxn: process.env.BENCH_KAFKA_BIG_TXN !== '0',
    fromSource: process.env.BENCH_FROM_SOURCE === '1',
    appEnv: appEnvFrom(process.env.BENCH_APP_ENV, errors),
    appNodeOptions: process.env.BENCH_APP_NODE_OPTIONS?.trim() || undefined,
    cpuProfileDir: process.env.BENCH_CPU_PROFILE_DIR?.trim() || undefined,
  };
  if (process.env.BENCH_KAFKA_COMPRESSION && !['none', 'gzip'].includes(process.env.BENCH_KAFKA_COMPRESSION)) {
    errors.push(`BENCH_KAFKA_COMPRESSION=${JSON.stringify(process.env.BENCH_KAFKA_COMPRESSION)} must be none or gzip`);
  }
  if (workloads.length === 0) errors.push('BENCH_WORKLOADS selects no workload');
  if (errors.length > 0) throw new RangeError(`bad bench configuration:\n  ${errors.join('\n  ')}`);
  return config;
}

function appEnvFrom(raw: string | undefined, errors: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of (raw ?? '').split(',').map((item) => item.trim()).filter(Boolean)) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair);
    if (match?.[1] === undefined) errors.push(`BENCH_APP_ENV: ${JSON.stringify(pair)} is not NAME=value`);
    else env[match[1]] = match[2] ?? '';
  }
  return env;
}

function sinksFrom(raw: string | undefined, errors: string[]): ('postgres' | 'kafka')[] {
  const names = (raw ?? 'postgres,kafka').split(',').map((item) => item.trim()).filter(Boolean);
  const sinks: ('postgres' | 'kafka')[] = [];
  for (const name of names) {
    if (name === 'postgres' || name === 'kafka') sinks.push(name);
    else errors.push(`BENCH_SINKS: unknown sink ${JSON.stringify(name)} (postgres, kafka)`);
  }
  if (sinks.length === 0) errors.push('BENCH_SINKS selects no sink');
  return sinks;
}
