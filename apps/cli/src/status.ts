/**
 * `cdc status`: what a pipeline file's pipeline is doing, from the outside.
 *
 *   apps          each planned app's /readyz (ready, its checks), or unreachable
 *   sinks         per sink and partition the committed position (etcd: per source the
 *                 commit LSN, the watermark), and per source how many WAL bytes the
 *                 sink's oldest partition is behind the source's current WAL
 *   sources       the slot's confirmed_flush_lsn, active, lag in bytes (current WAL − it)
 *   dead letters  waiting in the pipeline's dlq stream
 *   lag seconds   the committers' cdc_stage_lag_seconds (worst partition), from /metrics
 *
 * Every part is read independently: one that cannot be reached says so (`error`) and the
 * others are still shown. URLs in errors are redacted.
 */
import { CheckpointStore } from '@cdc/checkpoint';
import { Lsn } from '@cdc/core';
import { redactUrl, type PipelineFile } from '@cdc/runtime';
import pg from 'pg';
import pino from 'pino';
import { DeadLetterStore } from './dlq.ts';
import { renderTable } from './letters.ts';
import { slotOf, type PlannedApp } from './plan.ts';

export interface AppHealth {
  readonly name: string;
  readonly url: string;
  readonly ready: boolean | null;
  readonly checks?: Record<string, { ok: boolean; detail?: string }>;
  readonly lagSeconds?: number;
  readonly error?: string;
}

export interface SinkPartition {
  readonly partition: number;
  readonly positions: Readonly<Record<string, string>>;
  readonly lamport: string;
  readonly updatedAt: string;
}

export interface SinkStatus {
  readonly sink: string;
  readonly kind: string;
  readonly partitions: readonly SinkPartition[];
  /** Partitions with no committed position in etcd (never committed, or the committer's lease is gone). */
  readonly missingPartitions: readonly number[];
  /** Per source: WAL bytes between the source's current WAL and this sink's oldest partition position. */
  readonly behindBytes: Readonly<Record<string, number | null>>;
  readonly error?: string;
}

export interface SourceStatus {
  readonly source: string;
  readonly slot: string;
  readonly exists: boolean;
  readonly active: boolean | null;
  readonly confirmedFlushLsn: string | null;
  readonly currentWalLsn: string | null;
  readonly lagBytes: number | null;
  readonly error?: string;
}

export interface PipelineStatus {
  readonly pipeline: string;
  readonly partitions: number;
  readonly apps: readonly AppHealth[];
  readonly sources: readonly SourceStatus[];
  readonly sinks: readonly SinkStatus[];
  readonly deadLetters: number | null;
  readonly deadLettersError?: string;
}

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

async function appHealth(app: PlannedApp): Promise<AppHealth> {
  const url = `http://${app.host}:${app.port}`;
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) });
    const body = (await response.json()) as { ready?: boolean; checks?: AppHealth['checks'] };
    let lagSeconds: number | undefined;
    if (app.app === 'committer') {
      const metrics = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.text(), () => '');
      for (const line of metrics.split('\n')) {
        const match = /^cdc_stage_lag_seconds(?:\{[^}]*\})?\s+(\S+)/.exec(line);
        if (match && Number.isFinite(Number(match[1]))) lagSeconds = Math.max(lagSeconds ?? 0, Number(match[1]));
      }
    }
    return { name: app.name, url, ready: body.ready === true, ...(body.checks ? { checks: body.checks } : {}), ...(lagSeconds === undefined ? {} : { lagSeconds }) };
  } catch {
    return { name: app.name, url, ready: null, error: 'unreachable' };
  }
}

async function sourceStatus(file: PipelineFile, source: PipelineFile['sources'][number]): Promise<SourceStatus> {
  const slot = slotOf(file, source);
  const client = new pg.Client({ connectionString: source.connection, application_name: 'cdc-status', connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
    const { rows } = await client.query<{ current: string; confirmed: string | null; active: boolean | null; exists: boolean }>(
      `SELECT pg_current_wal_lsn()::text AS current, s.confirmed_flush_lsn::text AS confirmed, s.active, s.slot_name IS NOT NULL AS exists
         FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`,
      [slot],
    );
    const row = rows[0]!;
    const lag = row.confirmed ? Number(Lsn.parse(row.current) - Lsn.parse(row.confirmed)) : null;
    return { source: source.id, slot, exists: row.exists, active: row.active, confirmedFlushLsn: row.confirmed, currentWalLsn: row.current, lagBytes: lag };
  } catch (error) {
    return { source: source.id, slot, exists: false, active: null, confirmedFlushLsn: null, currentWalLsn: null, lagBytes: null, error: `${redactUrl(source.connection)}: ${message(error)}` };
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function sinkStatuses(file: PipelineFile, sources: readonly SourceStatus[]): Promise<SinkStatus[]> {
  let store: CheckpointStore;
  try {
    store = await CheckpointStore.create({ url: file.etcd.url, logger: pino({ level: 'silent' }) });
  } catch (error) {
    const text = `etcd ${redactUrl(file.etcd.url)}: ${message(error)}`;
    return file.sinks.map((sink) => ({ sink: sink.name, kind: sink.kind, partitions: [], missingPartitions: [], behindBytes: {}, error: text }));
  }
  try {
    const out: SinkStatus[] = [];
    for (const sink of file.sinks) {
      const stored = await store.readPartitions(file.pipeline, sink.name);
      const partitions = [...stored.values()].sort((a, b) => a.partition - b.partition).map((c) => ({ partition: c.partition, positions: c.positions, lamport: c.lamport, updatedAt: c.updatedAt }));
      const missing = Array.from({ length: file.partitions }, (_, p) => p).filter((p) => !stored.has(p));
      const behindBytes: Record<string, number | null> = {};
      for (const source of sources) {
        const positions = partitions.map((p) => p.positions[source.source]).filter((lsn): lsn is string => lsn !== undefined);
        if (!source.currentWalLsn || positions.length === 0 || missing.length > 0) {
          behindBytes[source.source] = null;
          continue;
        }
        const oldest = positions.map((lsn) => Lsn.parse(lsn)).reduce((a, b) => Lsn.min(a, b));
        const current = Lsn.parse(source.currentWalLsn);
        behindBytes[source.source] = current > oldest ? Number(current - oldest) : 0;
      }
      out.push({ sink: sink.name, kind: sink.kind, partitions, missingPartitions: missing, behindBytes });
    }
    return out;
  } finally {
    await store.close();
  }
}

async function deadLetters(file: PipelineFile): Promise<{ count: number | null; error?: string }> {
  try {
    const store = await DeadLetterStore.open(file.nats.url, file.pipeline);
    try {
      return { count: await store.count() };
    } finally {
      await store.close();
    }
  } catch (error) {
    return { count: null, error: message(error) };
  }
}

export async function pipelineStatus(file: PipelineFile, apps: readonly PlannedApp[]): Promise<PipelineStatus> {
  const [health, sources, letters] = await Promise.all([Promise.all(apps.map(appHealth)), Promise.all(file.sources.map((s) => sourceStatus(file, s))), deadLetters(file)]);
  const sinks = await sinkStatuses(file, sources);
  return {
    pipeline: file.pipeline,
    partitions: file.partitions,
    apps: health,
    sources,
    sinks,
    deadLetters: letters.count,
    ...(letters.error ? { deadLettersError: letters.error } : {}),
  };
}

const kib = (bytes: number | null): string => (bytes === null ? '-' : bytes < 10_240 ? `${bytes} B` : `${(bytes / 1024).toFixed(0)} KiB`);

export function renderStatus(status: PipelineStatus): string {
  const out: string[] = [`pipeline ${status.pipeline} (${status.partitions} partitions)`, ''];
  out.push(
    renderTable([
      ['app', 'health', 'ready', 'detail'],
      ...status.apps.map((a) => [
        a.name,
        a.url,
        a.ready === null ? 'unreachable' : a.ready ? 'ready' : 'NOT READY',
        [
          ...Object.entries(a.checks ?? {})
            .filter(([, c]) => !c.ok || c.detail)
            .map(([name, c]) => `${name}:${c.ok ? 'ok' : 'failing'}${c.detail ? `(${c.detail})` : ''}`),
          ...(a.lagSeconds === undefined ? [] : [`lag ${a.lagSeconds.toFixed(2)} s`]),
        ].join(' '),
      ]),
    ]),
    '',
  );
  out.push(
    renderTable([
      ['source', 'slot', 'active', 'confirmed_flush_lsn', 'current WAL', 'slot lag'],
      ...status.sources.map((s) =>
        s.error ? [s.source, s.slot, '-', '-', '-', s.error] : [s.source, s.slot, s.exists ? String(s.active) : 'no slot', s.confirmedFlushLsn ?? '-', s.currentWalLsn ?? '-', kib(s.lagBytes)],
      ),
    ]),
    '',
  );
  const rows: string[][] = [['sink', 'partition', 'committed (source=lsn)', 'watermark', 'updated']];
  for (const sink of status.sinks) {
    if (sink.error) rows.push([sink.sink, '-', sink.error, '', '']);
    for (const p of sink.partitions) rows.push([sink.sink, String(p.partition), Object.entries(p.positions).map(([s, l]) => `${s}=${l}`).join(' '), p.lamport, p.updatedAt.slice(0, 19)]);
    if (sink.missingPartitions.length > 0) rows.push([sink.sink, sink.missingPartitions.join(','), 'nothing committed (or committer gone)', '', '']);
    const behind = Object.entries(sink.behindBytes).map(([s, b]) => `${s} ${kib(b)}`);
    if (behind.length > 0) rows.push([sink.sink, 'all', `behind the source: ${behind.join(', ')}`, '', '']);
  }
  out.push(renderTable(rows), '');
  out.push(`dead letters waiting: ${status.deadLetters ?? `unknown (${status.deadLettersError ?? 'NATS unreachable'})`}`);
  return out.join('\n');
}
