/**
 * The human side of a bench run: the summary tables printed at the end (and the
 * markdown table bench/README.md carries), and the targets of issue #12 (which
 * supersede issue #5's), met or missed.
 */
import type { LatencyReport, RssSummary, StageName, StageRate } from './analysis.ts';
import type { CpuReport } from './cpu.ts';
import type { LimitResult } from './limit.ts';

export interface WorkloadResult {
  readonly name: string;
  readonly description: string;
  readonly sink: 'postgres' | 'kafka';
  /** Kafka runs: producer compression used. */
  readonly kafkaCompression?: string;
  readonly partitions: number;
  readonly changes: number;
  readonly rowsPerTxn: number;
  readonly shape: 'small' | 'wide';
  readonly ok: boolean;
  readonly error?: string;
  readonly generator?: {
    readonly changesPerSecond: number;
    readonly seconds: number;
    readonly clients: number;
    readonly offeredPerSecond: number | null;
    readonly synchronousCommit: boolean;
    readonly endLsn: string;
  };
  readonly pipeline?: {
    /** Clock start: the first source commit (generator start), or the one commit of a one-transaction workload. */
    readonly clockStart: 'generator-start' | 'source-commit';
    readonly seconds: number;
    readonly changesPerSecond: number;
    readonly drainedAfterGeneratorMs: number;
    readonly verified: boolean;
    readonly verifySummary: string;
  };
  /** copy: the snapshot workload's limit (COPY TO STDOUT into /dev/null). */
  readonly limit: { readonly recvlogical?: LimitResult; readonly node?: LimitResult; readonly copy?: LimitResult };
  readonly ratio?: { readonly vsRecvlogical: number | null; readonly vsNode: number | null; readonly vsCopy?: number | null };
  readonly stages?: readonly StageRate[];
  readonly slowestStage?: { readonly stage: StageName; readonly changesPerSecond: number; readonly addedMs: number };
  readonly rss?: Record<string, RssSummary>;
  readonly latency?: LatencyReport & { readonly offeredPerSecond: number; readonly sustained: boolean; readonly note: string };
  readonly toastBytes?: number;
  /** CPU per change of every process over the workload window (bench/cpu.ts). */
  readonly cpu?: CpuReport;
  /** Redis INFO memory used_memory, bytes (null: Redis could not be asked). */
  readonly redis?: { readonly usedMemoryBytes: number | null; readonly usedMemoryAtStartBytes: number | null };
  readonly samples?: unknown;
}

export interface TargetCheck {
  readonly target: string;
  readonly met: boolean | null;
  readonly measured: string;
  readonly slowestStage?: string;
  /** The process with the most CPU per change in that workload (bench/cpu.ts heaviest). */
  readonly heaviest?: { readonly name: string; readonly usPerChange: number };
}

const fmt = (value: number | null | undefined, digits = 0): string =>
  value === null || value === undefined || !Number.isFinite(value) ? '—' : value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

const mb = (kb: number): string => `${Math.round(kb / 1024)}`;

function describeSlowest(slowest: { stage: string; changesPerSecond: number; addedMs: number }): string {
  const added = Number.isFinite(slowest.addedMs) ? `+${(slowest.addedMs / 1000).toFixed(1)} s after its input was complete` : 'never completed';
  return `${slowest.stage} (own rate ${fmt(slowest.changesPerSecond)}/s, ${added})`;
}

export const SMALL_ROW_WORKLOADS = ['single-row', 'txn-100', 'one-big-txn'];

/** Throughput floors (changes/s), per workload and sink: issue #12's, and #13's for the snapshot. */
const THROUGHPUT_TARGETS: readonly { readonly name: string; readonly sink: 'postgres' | 'kafka'; readonly min: number }[] = [
  { name: 'txn-100', sink: 'postgres', min: 25_000 },
  { name: 'txn-100', sink: 'kafka', min: 15_000 },
  { name: 'wide-rows', sink: 'postgres', min: 10_000 },
  { name: 'one-big-txn', sink: 'postgres', min: 20_000 },
  // Issue #13's goal for the snapshot of small rows.
  { name: 'snapshot', sink: 'postgres', min: 50_000 },
];
/** Issue #12's p99 ceilings at the latency workload's offered rate (ms). */
const P99_TARGET_MS = { postgres: 100, kafka: 150 } as const;
/** Issue #12: pipeline CPU per change, 100-row transactions. */
export const CPU_TARGET_US = 80;

export function checkTargets(results: readonly WorkloadResult[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const into = (result: WorkloadResult): string => (result.sink === 'kafka' ? ' → kafka' : '');
  const slowest = (result: WorkloadResult): Pick<TargetCheck, 'slowestStage' | 'heaviest'> => ({
    ...(result.slowestStage ? { slowestStage: describeSlowest(result.slowestStage) } : {}),
    ...(result.cpu?.heaviest ? { heaviest: result.cpu.heaviest } : {}),
  });
  for (const target of THROUGHPUT_TARGETS) {
    for (const result of results.filter((r) => r.name === target.name && r.sink === target.sink)) {
      const rate = result.pipeline?.changesPerSecond ?? null;
      checks.push({
        target: `>= ${fmt(target.min)} changes/s end to end (${result.name}${into(result)})`,
        met: rate === null ? null : rate >= target.min && result.ok,
        measured: rate === null ? (result.error ?? 'no result') : `${fmt(rate)} changes/s${result.ok ? '' : ' (NOT verified)'}`,
        ...slowest(result),
      });
    }
  }
  for (const result of results.filter((r) => r.name === 'single-row')) {
    const behind = result.pipeline?.drainedAfterGeneratorMs ?? null;
    checks.push({
      target: `single-row${into(result)}: the sink finishes within 1 s of the generator (keeps pace)`,
      met: behind === null ? null : behind <= 1_000 && result.ok,
      measured: behind === null ? (result.error ?? 'no result') : `${fmt(behind / 1000, 1)} s after the generator${result.ok ? '' : ' (NOT verified)'}`,
      ...slowest(result),
    });
  }
  for (const latency of results.filter((r) => r.name === 'latency')) {
    const l = latency.latency;
    const ceiling = P99_TARGET_MS[latency.sink];
    checks.push({
      target: `p99 <= ${ceiling} ms at ${fmt(l?.offeredPerSecond ?? null)} changes/s sustained${into(latency)}`,
      met: l ? l.p99Ms <= ceiling && l.sustained && latency.ok : null,
      measured: l ? `p99 ${fmt(l.p99Ms, 1)} ms${l.sustained ? '' : ' (rate NOT sustained: queueing)'}` : (latency.error ?? 'no result'),
      ...slowest(latency),
    });
  }
  for (const result of results.filter((r) => r.name === 'txn-100')) {
    const cpu = result.cpu;
    checks.push({
      target: `<= ${CPU_TARGET_US} µs CPU per change in total (txn-100${into(result)})`,
      met: cpu ? cpu.totalUsPerChange <= CPU_TARGET_US && cpu.missing.length === 0 : null,
      measured: cpu ? `${fmt(cpu.totalUsPerChange, 1)} µs/change${cpu.missing.length > 0 ? ` (not found: ${cpu.missing.join(', ')})` : ''}` : (result.error ?? 'no result'),
      ...slowest(result),
    });
  }
  const apps = new Map<string, number>();
  for (const result of results) for (const [app, rss] of Object.entries(result.rss ?? {})) apps.set(app, Math.max(apps.get(app) ?? 0, rss.peakKb));
  for (const [app, peakKb] of apps) {
    checks.push({ target: `${app} <= 200 MB RSS (peak over all workloads)`, met: peakKb <= 200 * 1024, measured: `${mb(peakKb)} MB` });
  }
  for (const big of results.filter((r) => r.name === 'one-big-txn')) {
    for (const [app, rss] of Object.entries(big.rss ?? {})) {
      checks.push({
        target: `${app} flat through the ${fmt(big.changes)}-row transaction${into(big)} (drift after warm-up <= 25 MB)`,
        met: rss.driftKb <= 25 * 1024,
        measured: `drift ${rss.driftKb >= 0 ? '+' : ''}${mb(rss.driftKb)} MB (${mb(rss.startKb)} MB before, max ${mb(rss.maxSampledKb)} MB)`,
      });
    }
  }
  return checks;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
}

function markdown(header: string[], rows: string[][]): string[] {
  return [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

/** Workload name, with the sink when it is not the PostgreSQL one. */
export function label(r: Pick<WorkloadResult, 'name' | 'sink' | 'kafkaCompression'>): string {
  if (r.sink === 'postgres') return r.name;
  return `${r.name} → kafka${r.kafkaCompression && r.kafkaCompression !== 'none' ? ` (${r.kafkaCompression})` : ''}`;
}

function mainRows(results: readonly WorkloadResult[]): { header: string[]; rows: string[][] } {
  const header = ['workload', 'changes', 'generator/s', 'pg_recvlogical/s', 'node pgoutput/s', 'pipeline/s', 'pipeline/limit', 'verified', 'slowest stage'];
  const rows = results.map((r) => [
    label(r),
    fmt(r.changes),
    fmt(r.generator?.changesPerSecond),
    // Absent (a Kafka run without a PostgreSQL run to share the limit of): '—'.
    // The snapshot workload's limit is COPY (marked), the others' the WAL drain.
    r.limit.copy !== undefined ? (r.limit.copy.ok ? `COPY ${fmt(r.limit.copy.changesPerSecond)}` : 'COPY failed') : r.limit.recvlogical === undefined ? '—' : r.limit.recvlogical.ok ? fmt(r.limit.recvlogical.changesPerSecond) : 'failed',
    r.limit.node === undefined ? '—' : r.limit.node.ok ? fmt(r.limit.node.changesPerSecond) : 'failed',
    r.pipeline ? fmt(r.pipeline.changesPerSecond) : 'failed',
    r.ratio?.vsCopy != null ? `${(r.ratio.vsCopy * 100).toFixed(1)} % of COPY` : r.ratio?.vsRecvlogical != null ? `${(r.ratio.vsRecvlogical * 100).toFixed(1)} %` : '—',
    r.pipeline?.verified ? 'yes' : 'NO',
    r.slowestStage ? `${r.slowestStage.stage}${Number.isFinite(r.slowestStage.addedMs) ? ` (+${(r.slowestStage.addedMs / 1000).toFixed(1)} s)` : ' (stuck)'}` : '—',
  ]);
  return { header, rows };
}

function stageRows(results: readonly WorkloadResult[]): { header: string[]; rows: string[][] } {
  const header = ['workload', 'generator/s', 'reader/s', 'reorderer/s', 'gate/s', 'committer/s', 'done at (s): reader / reorderer / gate / committer'];
  const rows = results.map((r) => {
    const by = (stage: StageName): StageRate | undefined => r.stages?.find((s) => s.stage === stage);
    const done = (['reader', 'reorderer', 'gate', 'committer'] as const).map((s) => {
      const at = by(s)?.doneAtMs;
      return at === null || at === undefined ? '—' : (at / 1000).toFixed(1);
    });
    return [label(r), ...(['generator', 'reader', 'reorderer', 'gate', 'committer'] as const).map((s) => fmt(by(s)?.changesPerSecond)), done.join(' / ')];
  });
  return { header, rows };
}

/** Column order of the CPU table: apps as spawned, then the servers, then PostgreSQL's parts. */
function cpuColumns(results: readonly WorkloadResult[]): string[] {
  const names: string[] = [];
  for (const kind of ['app', 'server', 'postgres'] as const) {
    for (const r of results) for (const e of r.cpu?.entries ?? []) if (e.kind === kind && e.counted && !names.includes(e.name)) names.push(e.name);
  }
  return names;
}

const short = (name: string): string => name.replace(/^postgres: /, 'pg ').replace(/^nats-server$/, 'nats').replace(/^redis-server$/, 'redis');

function cpuRows(results: readonly WorkloadResult[]): { header: string[]; rows: string[][] } {
  const columns = cpuColumns(results);
  const header = ['workload', ...columns.map(short), 'total', '(pg generator)', '(not counted, rest)', 'redis used_memory MB'];
  const rows = results.map((r) => {
    const cpu = r.cpu;
    const value = (name: string): string => {
      const e = cpu?.entries.find((x) => x.name === name);
      return e ? fmt(e.usPerChange, 1) : '—';
    };
    const generator = cpu?.entries.find((e) => e.name === 'postgres: generator')?.usPerChange;
    const rest = cpu ? cpu.entries.filter((e) => !e.counted && e.name !== 'postgres: generator').reduce((sum, e) => sum + e.usPerChange, 0) : undefined;
    const used = r.redis?.usedMemoryBytes;
    return [
      label(r),
      ...columns.map(value),
      cpu ? fmt(cpu.totalUsPerChange, 1) : '—',
      fmt(generator, 1),
      fmt(rest, 1),
      used === null || used === undefined ? '—' : fmt(used / 1048576, 1),
    ];
  });
  return { header, rows };
}

function rssRows(results: readonly WorkloadResult[]): { header: string[]; rows: string[][] } {
  const apps = [...new Set(results.flatMap((r) => Object.keys(r.rss ?? {})))];
  const header = ['workload', ...apps.map((a) => `${a} MB (+drift)`)];
  const drift = (kb: number): string => `${kb >= 0 ? '+' : '−'}${mb(Math.abs(kb))}`;
  const rows = results.map((r) => [label(r), ...apps.map((a) => (r.rss?.[a] ? `${mb(r.rss[a].peakKb)} (${drift(r.rss[a].driftKb)})` : '—'))]);
  return { header, rows };
}

export function summaryLines(results: readonly WorkloadResult[], machine: { cpus: number; model: string; memoryGb: number; node: string }, partitions: number): string[] {
  const lines: string[] = [];
  lines.push('', `== cdc bench: ${machine.cpus} cores (${machine.model}), ${machine.memoryGb.toFixed(0)} GB, node ${machine.node}, P=${partitions}, sinks=${[...new Set(results.map((r) => r.sink))].join('+')} ==`, '');
  const main = mainRows(results);
  lines.push('throughput (changes/s; pipeline = first source commit → last sink commit; limit = same WAL drained by a decoder that discards):');
  lines.push(...table(main.header, main.rows), '');
  const stages = stageRows(results);
  lines.push("each stage's own rate (5–95 % of the changes, from 250 ms samples of stream last_seq / sink rows; heartbeats included)");
  lines.push('and when it held all changes (s after the generator started); slowest stage = the one adding the most time after its input was complete:');
  lines.push(...table(stages.header, stages.rows), '');
  const rss = rssRows(results);
  lines.push('peak RSS per app (VmHWM, MB) and drift (median VmRSS of the last quarter of the workload − median of 10–35 %: growth after warm-up):');
  lines.push(...table(rss.header, rss.rows), '');
  const cpu = cpuRows(results);
  lines.push('CPU µs per change (utime+stime from /proc over the workload window ÷ changes; total = the pipeline: apps, servers, PostgreSQL walsender +');
  lines.push('sink + reader sessions + background; not counted: the generator\'s sessions, the bench\'s own, other databases, exited unattributed)');
  lines.push('and Redis used_memory at the end of the workload (the shared server: every user\'s keys):');
  lines.push(...table(cpu.header, cpu.rows), '');
  const idle = results.filter((r) => r.cpu?.entries.some((e) => e.idleCpuPercent !== undefined));
  if (idle.length > 0) {
    lines.push('idle floor: CPU of each app and server while the pipeline idled ~1 s before the workload, % of one core (short workloads divide it by few changes):');
    for (const r of idle) {
      const parts = (r.cpu?.entries ?? []).filter((e) => e.idleCpuPercent !== undefined).map((e) => `${short(e.name)} ${fmt(e.idleCpuPercent, 1)}`);
      lines.push(`  ${label(r)}: ${parts.join(', ')}`);
    }
    lines.push('');
  }
  for (const r of results) {
    if (r.latency) {
      const l = r.latency;
      lines.push(
        `latency at ${fmt(l.offeredPerSecond)} changes/s offered (${fmt(r.generator?.changesPerSecond)} achieved), source write → sink commit, ${fmt(l.rows)} rows: ` +
          `p50 ${fmt(l.p50Ms, 1)} ms, p99 ${fmt(l.p99Ms, 1)} ms, max ${fmt(l.maxMs, 1)} ms`,
      );
      lines.push(`  ${l.note}`);
    }
    if (r.error) lines.push(`${r.name}: ERROR ${r.error}`);
  }
  const big = results.find((r) => r.name === 'one-big-txn');
  if (big) lines.push(`one-big-txn: ${fmt(big.changes)} rows in ONE source transaction${big.changes === 1_000_000 ? '' : " (smaller than the issue's 1,000,000: BENCH_BIG_TXN_ROWS)"}`);
  for (const r of results) if (r.toastBytes !== undefined) lines.push(`${r.name}: TOAST table holds ${(r.toastBytes / 1048576).toFixed(1)} MB (the 2 KB notes are stored out of line)`);
  lines.push('', 'targets:');
  for (const check of checkTargets(results)) {
    const verdict = check.met === null ? 'n/a   ' : check.met ? 'MET   ' : 'MISSED';
    lines.push(`  ${verdict} ${check.target}: ${check.measured}${!check.met && check.slowestStage ? `; last to finish: ${check.slowestStage}` : ''}`);
    // The stage to work on: the most CPU per change (robust on a shared machine, unlike rates).
    if (check.met === false && check.heaviest) lines.push(`         slowest stage: ${check.heaviest.name} ${fmt(check.heaviest.usPerChange)} µs/change`);
  }
  return lines;
}

/** The tables again in markdown, for bench/README.md. */
export function markdownLines(results: readonly WorkloadResult[]): string[] {
  const main = mainRows(results);
  const stages = stageRows(results);
  const rss = rssRows(results);
  const cpu = cpuRows(results);
  return [
    ...markdown(main.header, main.rows), '',
    ...markdown(stages.header, stages.rows), '',
    ...markdown(rss.header, rss.rows), '',
    ...markdown(cpu.header, cpu.rows),
  ];
}
