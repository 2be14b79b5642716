/**
 * The processes of a pipeline file on one machine, in one fixed order, as `cdc run` starts
 * them and `cdc status` finds them: one reader per source, `relay.reorderer.processes`
 * reorderers (the partitions dealt round-robin), one dedup gate, one committer per sink.
 * Each gets the health port `health.firstPort + its index` (default 9400 + index), so
 * status knows where to ask without asking run.
 */
import type { PipelineApp, PipelineFile } from '@cdc/runtime';

export const DEFAULT_FIRST_PORT = 9400;

export interface PlannedApp {
  /** `reader:pg1`, `lamport-reorderer:0`, `dedup-gate`, `committer:postgres`. */
  readonly name: string;
  readonly app: PipelineApp;
  /** Over the file's variables (the app reads PIPELINE_FILE itself): which role, which port. */
  readonly env: Readonly<Record<string, string>>;
  readonly host: string;
  readonly port: number;
  /** 0 = upstream (readers) … 3 = committers: started from 3 down, stopped from 0 up. */
  readonly rank: number;
}

export function planApps(file: PipelineFile, path: string): PlannedApp[] {
  const host = file.health?.host && file.health.host !== '0.0.0.0' ? file.health.host : '127.0.0.1';
  const first = file.health?.firstPort ?? DEFAULT_FIRST_PORT;
  const out: Omit<PlannedApp, 'port' | 'host'>[] = [];
  for (const source of file.sources) out.push({ name: `reader:${source.id}`, app: 'reader', env: { SOURCE_ID: source.id }, rank: 0 });
  const reorderers = Math.max(1, Math.min(file.relay?.reorderer?.processes ?? 1, file.partitions));
  for (let index = 0; index < reorderers; index++) {
    const assigned = Array.from({ length: file.partitions }, (_, p) => p).filter((p) => p % reorderers === index);
    out.push({ name: `lamport-reorderer:${index}`, app: 'lamport-reorderer', env: { ASSIGNED_PARTITIONS: reorderers === 1 ? 'all' : assigned.join(',') }, rank: 1 });
  }
  out.push({ name: 'dedup-gate', app: 'dedup-gate', env: { ASSIGNED_PARTITIONS: 'all' }, rank: 2 });
  for (const sink of file.sinks) out.push({ name: `committer:${sink.name}`, app: 'committer', env: { SINK_NAME: sink.name }, rank: 3 });
  return out.map((app, index) => ({ ...app, host, port: first + index, env: { ...app.env, PIPELINE_FILE: path, HEALTH_PORT: String(first + index) } }));
}

/** `cdc_<pipeline>_<source>` as the reader names its slot when the file names none. */
export function slotOf(file: PipelineFile, source: PipelineFile['sources'][number]): string {
  return source.slot ?? `cdc_${file.pipeline}_${source.id}`.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 63);
}

/** The sum of every sample of `metric` in a Prometheus text exposition (undefined when absent). */
export function sumMetric(text: string, metric: string): number | undefined {
  let total: number | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== metric) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) total = (total ?? 0) + value;
  }
  return total;
}
