/**
 * Numbers from samples and from the sink, computed after a workload ran.
 *
 * A stage's own rate = 90 % of the workload's changes / (time its counter crossed 95 % −
 * time it crossed 5 % of them), crossing times interpolated between samples. The 5–95 %
 * window leaves out start-up and the tail, and makes the few heartbeat/watermark messages
 * in the stream counts (one per partition every ~50 ms) negligible. In a pipeline no stage
 * runs faster than its input for long, so every stage downstream of the bottleneck shows
 * (about) the bottleneck's rate; the bottleneck is where the completion times jump (see
 * slowestStage).
 */
import pg from 'pg';
import type { Sample } from './sampler.ts';

export const STAGES = [
  { key: 'source', name: 'generator', what: 'source rows written' },
  { key: 'raw', name: 'reader', what: 'raw stream messages' },
  { key: 'ordered', name: 'reorderer', what: 'ordered stream messages' },
  { key: 'deduped', name: 'gate', what: 'deduped stream messages' },
  { key: 'sink', name: 'committer', what: 'sink rows applied' },
] as const;

export type StageKey = (typeof STAGES)[number]['key'];
export type StageName = (typeof STAGES)[number]['name'];

export interface StageRate {
  readonly stage: StageName;
  readonly measures: string;
  /** changes/s between the 5 % and 95 % crossings; null when the counter never got there. */
  readonly changesPerSecond: number | null;
  /** ms after the workload started at which the counter reached 100 % of the changes (null: never). */
  readonly doneAtMs: number | null;
  /** Best rate over any 1 s window. */
  readonly peakPerSecond: number;
}

/** Time (ms since epoch) at which `value(sample) - base` first reached `target`, linearly interpolated. */
function crossing(samples: readonly Sample[], key: StageKey, base: number, target: number): number | null {
  for (let index = 0; index < samples.length; index++) {
    const sample = samples[index] as Sample;
    const value = sample[key] - base;
    if (value >= target) {
      const previous = samples[index - 1];
      if (!previous) return sample.t;
      const before = previous[key] - base;
      if (value === before) return sample.t;
      return previous.t + ((target - before) / (value - before)) * (sample.t - previous.t);
    }
  }
  return null;
}

function peakRate(samples: readonly Sample[], key: StageKey): number {
  let best = 0;
  let from = 0;
  for (let to = 1; to < samples.length; to++) {
    const end = samples[to] as Sample;
    while (from < to && end.t - (samples[from] as Sample).t > 1_000) from += 1;
    const start = samples[Math.max(0, from - 1)] as Sample;
    const span = end.t - start.t;
    if (span >= 500) best = Math.max(best, ((end[key] - start[key]) * 1000) / span);
  }
  return best;
}

export function stageRates(samples: readonly Sample[], baseline: Sample, changes: number, startedAt: number): StageRate[] {
  return STAGES.map(({ key, name, what }) => {
    const base = baseline[key];
    const low = crossing(samples, key, base, changes * 0.05);
    const high = crossing(samples, key, base, changes * 0.95);
    const done = crossing(samples, key, base, changes);
    const rate = low !== null && high !== null && high > low ? (changes * 0.9 * 1000) / (high - low) : null;
    return {
      stage: name,
      measures: what,
      changesPerSecond: rate,
      doneAtMs: done === null ? null : Math.max(0, done - startedAt),
      peakPerSecond: peakRate(samples, key),
    };
  });
}

/**
 * The bottleneck: the pipeline stage that adds the most wall time after its input stage
 * completed (done(stage) − done(previous stage); the reader's input is the generator).
 * A stage that never completed is the bottleneck outright. Its own rate is reported with it.
 */
export function slowestStage(rates: readonly StageRate[]): { stage: StageName; changesPerSecond: number; addedMs: number } | undefined {
  let best: { stage: StageName; changesPerSecond: number; addedMs: number } | undefined;
  for (let index = 1; index < rates.length; index++) {
    const stage = rates[index] as StageRate;
    const input = rates[index - 1] as StageRate;
    if (stage.doneAtMs === null) {
      return { stage: stage.stage, changesPerSecond: stage.changesPerSecond ?? 0, addedMs: Number.POSITIVE_INFINITY };
    }
    const addedMs = stage.doneAtMs - (input.doneAtMs ?? 0);
    if (!best || addedMs > best.addedMs) best = { stage: stage.stage, changesPerSecond: stage.changesPerSecond ?? 0, addedMs };
  }
  return best;
}

export interface RssSummary {
  /** VmHWM at the end of the workload (the process's lifetime peak), kB. */
  readonly peakKb: number;
  /** VmRSS in the sample taken right before the workload started, kB. */
  readonly startKb: number;
  /** Highest sampled VmRSS during the workload, kB. */
  readonly maxSampledKb: number;
  /** maxSampledKb - startKb: warm-up included. */
  readonly growthKb: number;
  /**
   * Median VmRSS over the last quarter of the workload's samples minus the median over
   * 10–35 %: growth that continues after warm-up, i.e. memory that scales with the work.
   * Flat means this stays small (the targets use <= 25 MB).
   */
  readonly driftKb: number;
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

export function rssSummary(samples: readonly Sample[], baseline: Sample, final: Record<string, [number, number]>): Record<string, RssSummary> {
  const out: Record<string, RssSummary> = {};
  const n = samples.length;
  for (const [app, [, hwm]] of Object.entries(final)) {
    const startKb = baseline.rss[app]?.[0] ?? 0;
    const series = samples.map((sample) => sample.rss[app]?.[0] ?? 0);
    const maxSampledKb = Math.max(0, ...series);
    const early = series.slice(Math.floor(n * 0.1), Math.max(Math.floor(n * 0.1) + 1, Math.floor(n * 0.35)));
    const late = series.slice(Math.floor(n * 0.75));
    const peakKb = Math.max(hwm, maxSampledKb);
    out[app] = { peakKb, startKb, maxSampledKb, growthKb: Math.max(0, maxSampledKb - startKb), driftKb: median(late) - median(early) };
  }
  return out;
}

export interface LatencyReport {
  readonly rows: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** p50 / p99 per second of the run (by source write time): rising values = a growing queue. */
  readonly perSecond: { readonly second: number; readonly rows: number; readonly p50Ms: number; readonly p99Ms: number }[];
}

/**
 * Source write (written_at, same server clock) → sink commit, approximated by the newest
 * applied_at in the same sink transaction (rows of one sink transaction share xmin); rows
 * written from `fromMs` on (the warm-up before it is left out).
 */
export async function sinkLatency(sinkUrl: string, table: string, fromMs: number): Promise<LatencyReport> {
  const client = new pg.Client({ connectionString: sinkUrl });
  await client.connect();
  try {
    const sql = `
      WITH stamped AS (
        SELECT written_at, max(applied_at) OVER (PARTITION BY xmin::text::bigint) AS committed_at
        FROM ${table} WHERE written_at >= to_timestamp(${Number(fromMs) / 1000}) AND applied_at IS NOT NULL
      ), lat AS (
        SELECT written_at, extract(epoch FROM committed_at - written_at) * 1000 AS ms FROM stamped
      )`;
    const overall = await client.query<{ n: string; p50: number | null; p99: number | null; max: number | null }>(`${sql}
      SELECT count(*) AS n,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
             max(ms) AS max
      FROM lat`);
    const seconds = await client.query<{ s: number; n: string; p50: number; p99: number }>(`${sql}
      , bounds AS (SELECT min(written_at) AS t0 FROM lat)
      SELECT floor(extract(epoch FROM written_at - t0))::int AS s, count(*) AS n,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
      FROM lat, bounds GROUP BY 1 ORDER BY 1`);
    const row = overall.rows[0];
    return {
      rows: Number(row?.n ?? 0),
      p50Ms: Number(row?.p50 ?? 0),
      p99Ms: Number(row?.p99 ?? 0),
      maxMs: Number(row?.max ?? 0),
      perSecond: seconds.rows.map((r) => ({ second: Number(r.s), rows: Number(r.n), p50Ms: round(Number(r.p50)), p99Ms: round(Number(r.p99)) })),
    };
  } finally {
    await client.end();
  }
}

/** Newest applied_at in the sink table (ms since epoch), the end of the end-to-end clock. */
export async function lastApplied(sinkUrl: string, table: string): Promise<number | null> {
  const client = new pg.Client({ connectionString: sinkUrl });
  await client.connect();
  try {
    const result = await client.query<{ t: string | null }>(`SELECT (extract(epoch FROM max(applied_at)) * 1000)::text AS t FROM ${table}`);
    const t = result.rows[0]?.t;
    return t === null || t === undefined ? null : Number(t);
  } finally {
    await client.end();
  }
}

export function round(value: number, digits = 1): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
