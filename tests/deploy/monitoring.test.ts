/**
 * infra/monitoring checked by parsing (with the unit tests; promtool checks the rules
 * themselves: infra/monitoring/check.sh). The Grafana dashboard's structure — what Grafana
 * needs to import it (uid, schemaVersion, a datasource variable every panel uses, unique
 * ids, a grid that fits) — and that every metric the dashboard and the rules query is
 * one an app exports (names read from the apps' metric registrations), and that the README
 * lists each of them.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/** Every `cdc_*` family an app registers: metrics.counter/gauge/histogram('cdc_…') in packages/*\/src. */
function exportedFamilies(): { names: Set<string>; histograms: Set<string> } {
  const names = new Set<string>(['cdc_connection_up']);
  const histograms = new Set<string>();
  for (const pkg of readdirSync(join(ROOT, 'packages'))) {
    let files: string[];
    try {
      files = readdirSync(join(ROOT, 'packages', pkg, 'src')).filter((f) => f.endsWith('.ts'));
    } catch {
      continue;
    }
    for (const file of files) {
      const text = read(`packages/${pkg}/src/${file}`);
      for (const match of text.matchAll(/metrics\.(counter|gauge|histogram)\(\s*'(cdc_[a-z0-9_]+)'/g)) {
        names.add(match[2] as string);
        if (match[1] === 'histogram') histograms.add(match[2] as string);
      }
    }
  }
  return { names, histograms };
}

const { names: FAMILIES, histograms: HISTOGRAMS } = exportedFamilies();

it('finds the apps\' metric registrations (the checks below are not vacuous)', () => {
  expect(FAMILIES.size).toBeGreaterThanOrEqual(25);
  expect(HISTOGRAMS).toEqual(new Set(['cdc_committer_commit_duration_seconds', 'cdc_committer_batch_events']));
});
/** Series names Prometheus sees: histograms add _bucket, _sum and _count. */
const SERIES = new Set([...FAMILIES, ...[...HISTOGRAMS].flatMap((h) => [`${h}_bucket`, `${h}_sum`, `${h}_count`])]);

interface Rule {
  readonly record?: string;
  readonly alert?: string;
  readonly expr: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}
const rules = (parse(read('infra/monitoring/alerts.yml')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const RECORDED = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));

/** Metric names in a PromQL expression (cdc_… and recorded cdc:…), label values and strings left out. */
function metricsIn(expr: string): string[] {
  const withoutStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  return [...withoutStrings.matchAll(/\b(cdc[_:][a-z0-9_:]+)/g)].map((m) => m[1] as string);
}

interface Panel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly datasource?: { type: string; uid: string };
  readonly gridPos: { x: number; y: number; w: number; h: number };
  readonly targets?: { refId: string; expr: string; datasource?: { uid: string } }[];
  readonly fieldConfig?: { defaults?: { unit?: string } };
}
interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly schemaVersion: number;
  readonly templating: { list: { name: string; type: string; query?: unknown }[] };
  readonly panels: Panel[];
}
const dashboard = JSON.parse(read('infra/monitoring/grafana-dashboard.json')) as Dashboard;
const panels = dashboard.panels.filter((p) => p.type !== 'row');
const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

describe('Grafana dashboard (infra/monitoring/grafana-dashboard.json)', () => {
  it('has what Grafana needs to import it: a uid, a title, a current schemaVersion, a Prometheus datasource variable and a pipeline variable', () => {
    expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    expect(dashboard.title.length).toBeGreaterThan(0);
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const variables = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
    expect(variables['datasource']).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(variables['pipeline']).toMatchObject({ type: 'query' });
  });

  it('every panel has a unique id, a known type, the datasource variable, a unit and a place on the 24-column grid that no other panel takes', () => {
    const problems: string[] = [];
    const ids = dashboard.panels.map((p) => p.id);
    if (new Set(ids).size !== ids.length) problems.push(`duplicate panel ids: ${ids.join(',')}`);
    const taken = new Map<string, string>();
    for (const p of dashboard.panels) {
      const { x, y, w, h } = p.gridPos;
      if (![x, y, w, h].every((n) => Number.isInteger(n) && n >= 0) || w < 1 || h < 1 || x + w > 24) problems.push(`${p.title}: gridPos ${JSON.stringify(p.gridPos)}`);
      for (let col = x; col < x + w; col++) {
        for (let line = y; line < y + h; line++) {
          const other = taken.get(`${col},${line}`);
          if (other) problems.push(`${p.title} overlaps ${other} at ${col},${line}`);
          taken.set(`${col},${line}`, p.title);
        }
      }
      if (p.type === 'row') continue;
      if (!['timeseries', 'stat'].includes(p.type)) problems.push(`${p.title}: type ${p.type}`);
      if (p.datasource?.uid !== '${datasource}') problems.push(`${p.title}: datasource ${JSON.stringify(p.datasource)}`);
      if (!p.fieldConfig?.defaults?.unit) problems.push(`${p.title}: no unit`);
      const refIds = (p.targets ?? []).map((t) => t.refId);
      if (refIds.length === 0) problems.push(`${p.title}: no query`);
      if (new Set(refIds).size !== refIds.length) problems.push(`${p.title}: duplicate refIds`);
    }
    expect([...new Set(problems)].slice(0, 20)).toEqual([]);
  });

  it('every query is balanced, selects the pipeline variable, and names only metrics an app exports (or a recorded rule, or process metrics)', () => {
    const problems: string[] = [];
    for (const { panel, expr } of exprs) {
      for (const [open, close] of [['(', ')'], ['{', '}'], ['[', ']']] as const) {
        if (expr.split(open).length !== expr.split(close).length) problems.push(`${panel}: unbalanced ${open}${close} in ${expr}`);
      }
      if (!expr.includes('pipeline=~"$pipeline"')) problems.push(`${panel}: does not filter by $pipeline: ${expr}`);
      for (const name of metricsIn(expr)) if (!SERIES.has(name) && !RECORDED.has(name)) problems.push(`${panel}: ${name} is not exported by any app`);
    }
    expect(problems).toEqual([]);
  });

  it('shows throughput per stage, lag, slot lag, dead letters, commit latency and memory', () => {
    const uses = (pattern: RegExp) => exprs.some(({ expr }) => pattern.test(expr));
    expect({
      throughputPerStage: uses(/sum by \(stage[^)]*\) \(rate\(cdc_stage_events_out_total/),
      lag: uses(/cdc_stage_lag_seconds/),
      slotLag: uses(/cdc_reader_slot_lag_bytes/),
      deadLetters: uses(/cdc_dead_letters_total/),
      commitLatency: uses(/histogram_quantile\(0\.99, .*cdc_committer_commit_duration_seconds_bucket/),
      memory: uses(/process_resident_memory_bytes/),
    }).toEqual({ throughputPerStage: true, lag: true, slotLag: true, deadLetters: true, commitLatency: true, memory: true });
  });
});

describe('Prometheus rules (infra/monitoring/alerts.yml)', () => {
  it('has the alerts the pipeline needs, each with a severity and a summary', () => {
    const alerts = rules.filter((r) => r.alert);
    expect(alerts.map((a) => a.alert)).toEqual(expect.arrayContaining(['CdcSlotLagGrowing', 'CdcSlotInactive', 'CdcStageStalled', 'CdcDeadLetters', 'CdcCommitterFenced', 'CdcHeartbeatStale']));
    expect(alerts.filter((a) => !['warning', 'critical'].includes(a.labels?.['severity'] ?? '') || !a.annotations?.['summary']).map((a) => a.alert)).toEqual([]);
  });

  it('queries only metrics an app exports (or a recorded rule)', () => {
    const unknown = rules.flatMap((r) => metricsIn(r.expr).filter((name) => !SERIES.has(name) && !RECORDED.has(name)).map((name) => `${r.alert ?? r.record}: ${name}`));
    expect(unknown).toEqual([]);
  });
});

describe('README "Metrics"', () => {
  it('lists every metric family the apps export', () => {
    const readme = read('README.md');
    const section = readme.slice(readme.indexOf('## Metrics'), readme.indexOf('\n## ', readme.indexOf('## Metrics') + 5));
    expect(section.length).toBeGreaterThan(100);
    expect([...FAMILIES].filter((name) => !section.includes(`\`${name}\``)).sort()).toEqual([]);
  });
});
