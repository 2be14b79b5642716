/**
 * Source vs sink, independently of the pipeline's own bookkeeping:
 *  - rows: every watched table, row by row, by an md5 of the source's columns;
 *  - exactly once: the multiset of applied changes (sink change_history) equals the
 *    committed changes (source change_history), each (table, key, version, kind) once;
 *  - order: per key, the sink applied versions that never go backwards.
 */
import { pinValueText } from '@cdc/core';
import pg from 'pg';

interface TableSpec {
  readonly table: string;
  readonly key: string;
  readonly columns: string;
}

const TABLES: readonly TableSpec[] = [
  { table: 'accounts', key: 'id::text', columns: 'id, owner, balance, note, version' },
  { table: 'order_lines', key: "order_id || '/' || line_no", columns: 'order_id, line_no, sku, qty, version' },
  { table: 'audit_events', key: 'id::text', columns: 'id, kind, payload, version' },
];

export interface TableDiff {
  readonly table: string;
  readonly sourceRows: number;
  readonly sinkRows: number;
  readonly missing: string[];
  readonly extra: string[];
  readonly different: string[];
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly tables: TableDiff[];
  readonly sourceChanges: number;
  readonly sinkChanges: number;
  readonly appliedTwice: number;
  readonly neverApplied: number;
  readonly unexpected: number;
  readonly orderViolations: number;
  readonly summary: string;
}

async function rowHashes(client: pg.Client, spec: TableSpec): Promise<Map<string, string>> {
  const result = await client.query<{ k: string; h: string }>(
    `SELECT ${spec.key} AS k, md5(row(${spec.columns})::text) AS h FROM ${spec.table}`,
  );
  return new Map(result.rows.map((row) => [row.k, row.h]));
}

async function history(client: pg.Client): Promise<Map<string, number>> {
  const result = await client.query<{ t: string; n: string }>(
    `SELECT tbl || ':' || key || ':' || version || ':' || kind AS t, count(*) AS n FROM change_history GROUP BY 1`,
  );
  return new Map(result.rows.map((row) => [row.t, Number(row.n)]));
}

async function orderViolations(client: pg.Client): Promise<number> {
  const result = await client.query<{ n: string }>(`
    SELECT count(*) AS n FROM (
      SELECT version, lag(version) OVER (PARTITION BY tbl, key ORDER BY id) AS previous FROM change_history
    ) steps WHERE previous IS NOT NULL AND version < previous`);
  return Number(result.rows[0]?.n ?? 0);
}

const sample = (items: string[]): string[] => items.slice(0, 5);

/** Several sources writing disjoint keys into one sink: the sink must equal their union. */
export async function verifySourcesAgainstSink(sourceUrls: readonly string[], sinkUrl: string): Promise<VerifyReport> {
  // Both sides read with the pinned value-text settings, so rows compare whatever the databases' defaults.
  const sources = sourceUrls.map((url) => new pg.Client(pinValueText(url)));
  const sink = new pg.Client(pinValueText(sinkUrl));
  await Promise.all([...sources, sink].map((client) => client.connect()));
  const union = async <V>(read: (client: pg.Client) => Promise<Map<string, V>>): Promise<Map<string, V>> => {
    const merged = new Map<string, V>();
    for (const client of sources) for (const [key, value] of await read(client)) merged.set(key, value);
    return merged;
  };
  try {
    const tables: TableDiff[] = [];
    for (const spec of TABLES) {
      const [expected, actual] = await Promise.all([union((client) => rowHashes(client, spec)), rowHashes(sink, spec)]);
      const missing: string[] = [];
      const different: string[] = [];
      for (const [key, hash] of expected) {
        const got = actual.get(key);
        if (got === undefined) missing.push(key);
        else if (got !== hash) different.push(key);
      }
      const extra = [...actual.keys()].filter((key) => !expected.has(key));
      tables.push({ table: spec.table, sourceRows: expected.size, sinkRows: actual.size, missing: sample(missing), extra: sample(extra), different: sample(different) });
    }
    const [committed, applied] = await Promise.all([union(history), history(sink)]);
    let appliedTwice = 0;
    let neverApplied = 0;
    let unexpected = 0;
    let sourceChanges = 0;
    let sinkChanges = 0;
    for (const [change, count] of committed) {
      sourceChanges += count;
      const got = applied.get(change) ?? 0;
      if (got === 0) neverApplied += 1;
      else if (got > 1) appliedTwice += 1;
    }
    for (const [change, count] of applied) {
      sinkChanges += count;
      if (!committed.has(change)) unexpected += 1;
    }
    const violations = await orderViolations(sink);
    const tablesOk = tables.every((t) => t.missing.length === 0 && t.extra.length === 0 && t.different.length === 0 && t.sourceRows === t.sinkRows);
    const ok = tablesOk && appliedTwice === 0 && neverApplied === 0 && unexpected === 0 && violations === 0;
    const rows = tables.map((t) => `${t.table} ${t.sinkRows}/${t.sourceRows}`).join(', ');
    const summary =
      `${ok ? 'source == sink' : 'source != sink'}: rows ${rows}; changes applied ${sinkChanges}/${sourceChanges}, ` +
      `twice ${appliedTwice}, never ${neverApplied}, unexpected ${unexpected}, order violations ${violations}`;
    return { ok, tables, sourceChanges, sinkChanges, appliedTwice, neverApplied, unexpected, orderViolations: violations, summary };
  } finally {
    await Promise.all([...sources, sink].map((client) => client.end()));
  }
}

export function verifySourceAgainstSink(sourceUrl: string, sinkUrl: string): Promise<VerifyReport> {
  return verifySourcesAgainstSink([sourceUrl], sinkUrl);
}
