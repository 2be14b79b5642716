/**
 * `cdc verify <file>`: every captured table of every source against each PostgreSQL sink,
 * by hash in key-range chunks, so the rows never leave the servers unless a chunk differs.
 *
 *   1. chunk bounds from the source: every `chunkRows`-th primary key in key order;
 *   2. per chunk, on both sides: count and md5 over the rows' md5(row(columns)::text) in key
 *      order — the source's columns only (the sink's _cdc_lsn/_cdc_seq are the guard's);
 *      the first chunk has no lower bound and the last no upper one, so sink rows outside
 *      the source's key range are counted too;
 *   3. a chunk that differs is compared again after `recheckMs` (a change still in flight
 *      through a running pipeline settles), and if it still differs its rows' hashes are
 *      read from both sides to name the rows: missing (source only), extra (sink only),
 *      different.
 *
 * Both connections pin the value-text settings (PITFALLS 23: DateStyle, TimeZone, …), so
 * equal values hash equal. A table without a primary key is keyed by all its columns.
 */
import { pinValueText } from '@cdc/core';
import { redactUrl, type PipelineFile, type PipelineSink } from '@cdc/runtime';
import cliProgress from 'cli-progress';
import pg from 'pg';
import { renderTable } from './letters.ts';

export interface RowDifference {
  readonly table: string;
  readonly key: Readonly<Record<string, string | null>>;
  readonly kind: 'missing' | 'extra' | 'different';
}

export interface TableVerdict {
  readonly source: string;
  readonly sink: string;
  readonly table: string;
  readonly sinkTable: string;
  readonly sourceRows: number;
  readonly sinkRows: number;
  readonly chunks: number;
  readonly differingChunks: number;
  readonly differences: readonly RowDifference[];
  readonly problem?: string;
}

export interface VerifyResult {
  readonly ok: boolean;
  readonly tables: readonly TableVerdict[];
  readonly skipped: readonly string[];
}

export interface VerifyOptions {
  readonly chunkRows: number;
  readonly recheckMs: number;
  /** Differences named per table at most. */
  readonly show: number;
  readonly sink?: string;
  readonly progress: boolean;
}

const ident = (name: string): string => `"${name.replace(/"/g, '""')}"`;
const qualified = (table: string): string => {
  const [schema, name] = table.includes('.') ? (table.split('.', 2) as [string, string]) : ['public', table];
  return `${ident(schema)}.${ident(name)}`;
};

async function connect(url: string, what: string): Promise<pg.Client> {
  const pinned = pinValueText(url);
  const client = new pg.Client({ connectionString: pinned.connectionString, options: pinned.options, application_name: 'cdc-verify', connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(`cannot reach the ${what} at ${redactUrl(url)}: ${error instanceof Error ? error.message : String(error)}`);
  }
  return client;
}

async function columnsOf(client: pg.Client, table: string): Promise<{ columns: string[]; key: string[] } | undefined> {
  const { rows } = await client.query<{ name: string; key: boolean }>(
    `SELECT a.attname AS name, coalesce(a.attnum = ANY (i.indkey), false) AS key
       FROM pg_attribute a
       LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [qualified(table)],
  );
  if (rows.length === 0) return undefined;
  const key = rows.filter((r) => r.key).map((r) => r.name);
  return { columns: rows.map((r) => r.name), key: key.length > 0 ? key : rows.map((r) => r.name) };
}

interface Shape {
  readonly columns: readonly string[];
  readonly key: readonly string[];
}

type Bound = readonly (string | null)[] | undefined;

/** WHERE of the chunk (lower, upper] with its parameters. */
function range(shape: Shape, lower: Bound, upper: Bound): { where: string; params: (string | null)[] } {
  const keys = `(${shape.key.map(ident).join(', ')})`;
  const params: (string | null)[] = [];
  const place = (bound: readonly (string | null)[]): string => `(${bound.map((value) => (params.push(value), `$${params.length}`)).join(', ')})`;
  const parts: string[] = [];
  if (lower) parts.push(`${keys} > ${place(lower)}`);
  if (upper) parts.push(`${keys} <= ${place(upper)}`);
  return { where: parts.length > 0 ? `WHERE ${parts.join(' AND ')}` : '', params };
}

const rowHash = (shape: Shape): string => `md5(row(${shape.columns.map(ident).join(', ')})::text)`;
const keyOrder = (shape: Shape): string => shape.key.map(ident).join(', ');

async function chunkHash(client: pg.Client, table: string, shape: Shape, lower: Bound, upper: Bound): Promise<{ rows: number; hash: string }> {
  const { where, params } = range(shape, lower, upper);
  const { rows } = await client.query<{ n: string; h: string }>(
    `SELECT count(*)::text AS n, md5(coalesce(string_agg(${rowHash(shape)}, '' ORDER BY ${keyOrder(shape)}), '')) AS h FROM ${qualified(table)} ${where}`,
    params,
  );
  return { rows: Number(rows[0]!.n), hash: rows[0]!.h };
}

async function rowHashes(client: pg.Client, table: string, shape: Shape, lower: Bound, upper: Bound): Promise<Map<string, { key: (string | null)[]; hash: string }>> {
  const { where, params } = range(shape, lower, upper);
  const { rows } = await client.query<{ k: (string | null)[]; h: string }>(
    `SELECT ARRAY[${shape.key.map((k) => `${ident(k)}::text`).join(', ')}] AS k, ${rowHash(shape)} AS h FROM ${qualified(table)} ${where} ORDER BY ${keyOrder(shape)}`,
    params,
  );
  return new Map(rows.map((row) => [JSON.stringify(row.k), { key: row.k, hash: row.h }]));
}

async function nextBound(client: pg.Client, table: string, shape: Shape, lower: Bound, chunkRows: number): Promise<Bound> {
  const { where, params } = range(shape, lower, undefined);
  const { rows } = await client.query<{ k: (string | null)[] }>(
    `SELECT ARRAY[${shape.key.map((k) => `${ident(k)}::text`).join(', ')}] AS k FROM ${qualified(table)} ${where} ORDER BY ${keyOrder(shape)} OFFSET ${chunkRows - 1} LIMIT 1`,
    params,
  );
  return rows[0]?.k;
}

async function verifyTable(
  source: pg.Client,
  sink: pg.Client,
  ids: { source: string; sink: string; table: string; sinkTable: string },
  options: VerifyOptions,
  tick: (rows: number) => void,
): Promise<TableVerdict> {
  const base = { ...ids, sourceRows: 0, sinkRows: 0, chunks: 0, differingChunks: 0, differences: [] };
  const shape = await columnsOf(source, ids.table);
  if (!shape) return { ...base, problem: `no table ${ids.table} in the source` };
  const sinkShape = await columnsOf(sink, ids.sinkTable);
  if (!sinkShape) return { ...base, problem: `no table ${ids.sinkTable} in the sink` };
  const lacking = shape.columns.filter((c) => !sinkShape.columns.includes(c));
  if (lacking.length > 0) return { ...base, problem: `the sink table lacks column(s) ${lacking.join(', ')}` };

  let sourceRows = 0;
  let sinkRows = 0;
  let chunks = 0;
  const differing: [Bound, Bound][] = [];
  let lower: Bound;
  for (;;) {
    const upper = await nextBound(source, ids.table, shape, lower, options.chunkRows);
    const [a, b] = await Promise.all([chunkHash(source, ids.table, shape, lower, upper), chunkHash(sink, ids.sinkTable, shape, lower, upper)]);
    chunks += 1;
    sourceRows += a.rows;
    sinkRows += b.rows;
    tick(a.rows);
    if (a.hash !== b.hash || a.rows !== b.rows) differing.push([lower, upper]);
    if (!upper) break;
    lower = upper;
  }
  const differences: RowDifference[] = [];
  let still = 0;
  if (differing.length > 0 && options.recheckMs > 0) await new Promise((resolve) => setTimeout(resolve, options.recheckMs));
  for (const [from, to] of differing) {
    if (options.recheckMs > 0) {
      const [a, b] = await Promise.all([chunkHash(source, ids.table, shape, from, to), chunkHash(sink, ids.sinkTable, shape, from, to)]);
      if (a.hash === b.hash && a.rows === b.rows) continue;
    }
    still += 1;
    if (differences.length >= options.show) continue;
    const [left, right] = await Promise.all([rowHashes(source, ids.table, shape, from, to), rowHashes(sink, ids.sinkTable, shape, from, to)]);
    const named = (key: (string | null)[]): Record<string, string | null> => Object.fromEntries(shape.key.map((column, i) => [column, key[i] ?? null]));
    const found: RowDifference[] = [];
    for (const [id, row] of left) {
      const other = right.get(id);
      if (!other) found.push({ table: ids.table, key: named(row.key), kind: 'missing' });
      else if (other.hash !== row.hash) found.push({ table: ids.table, key: named(row.key), kind: 'different' });
    }
    for (const [id, row] of right) if (!left.has(id)) found.push({ table: ids.table, key: named(row.key), kind: 'extra' });
    differences.push(...found.slice(0, options.show - differences.length));
  }
  return { ...ids, sourceRows, sinkRows, chunks, differingChunks: still, differences };
}

async function estimate(client: pg.Client, table: string): Promise<number> {
  const { rows } = await client.query<{ n: string | null }>(`SELECT greatest(reltuples, 0)::bigint::text AS n FROM pg_class WHERE oid = to_regclass($1)`, [qualified(table)]);
  return Number(rows[0]?.n ?? 0);
}

export async function verifyPipeline(file: PipelineFile, options: VerifyOptions): Promise<VerifyResult> {
  const sinks = file.sinks.filter((sink) => options.sink === undefined || sink.name === options.sink);
  if (sinks.length === 0) throw new Error(`no sink named ${options.sink} in the file (${file.sinks.map((s) => s.name).join(', ')})`);
  const skipped = sinks.filter((s) => s.kind !== 'postgres').map((s) => `${s.name}: a ${s.kind} sink (cdc verify compares PostgreSQL sinks)`);
  const postgresSinks = sinks.filter((s): s is Extract<PipelineSink, { kind: 'postgres' }> => s.kind === 'postgres');
  const tables: TableVerdict[] = [];
  for (const sinkSpec of postgresSinks) {
    const sink = await connect(sinkSpec.connection, `sink ${sinkSpec.name}`);
    try {
      for (const sourceSpec of file.sources) {
        const source = await connect(sourceSpec.connection, `source ${sourceSpec.id}`);
        const bar = options.progress ? new cliProgress.SingleBar({ format: `${sourceSpec.id} → ${sinkSpec.name} {bar} {value}/{total} rows | {table}`, hideCursor: true }, cliProgress.Presets.shades_classic) : undefined;
        try {
          let total = 0;
          for (const table of sourceSpec.tables) total += await estimate(source, table);
          bar?.start(Math.max(total, 1), 0, { table: '' });
          for (const table of sourceSpec.tables) {
            const sinkTable = sinkSpec.tables?.[table] ?? table;
            bar?.update({ table });
            tables.push(await verifyTable(source, sink, { source: sourceSpec.id, sink: sinkSpec.name, table, sinkTable }, options, (rows) => bar?.increment(rows)));
          }
        } finally {
          bar?.stop();
          await source.end().catch(() => undefined);
        }
      }
    } finally {
      await sink.end().catch(() => undefined);
    }
  }
  // Row counts are compared per chunk (rechecked): a chunk that still differs is counted there.
  const ok = tables.every((t) => t.problem === undefined && t.differingChunks === 0);
  return { ok, tables, skipped };
}

const keyText = (key: Readonly<Record<string, string | null>>): string => `(${Object.keys(key).join(', ')})=(${Object.values(key).map((v) => v ?? 'NULL').join(', ')})`;

export function renderVerify(result: VerifyResult): string {
  const out = [
    renderTable([
      ['source', 'sink', 'table', 'sink table', 'source rows', 'sink rows', 'chunks', 'differing', 'problem'],
      ...result.tables.map((t) => [t.source, t.sink, t.table, t.sinkTable, String(t.sourceRows), String(t.sinkRows), String(t.chunks), String(t.differingChunks), t.problem ?? '']),
    ]),
  ];
  for (const skipped of result.skipped) out.push(`skipped ${skipped}`);
  const differences = result.tables.flatMap((t) => t.differences.map((d) => `${d.kind.toUpperCase()} ${t.sink}: ${t.table} ${keyText(d.key)}${d.kind === 'missing' ? ' (in the source, not the sink)' : d.kind === 'extra' ? ' (in the sink, not the source)' : ' (values differ)'}`));
  out.push(...differences);
  const rows = result.tables.reduce((sum, t) => sum + t.sourceRows, 0);
  const chunks = result.tables.reduce((sum, t) => sum + t.chunks, 0);
  if (result.ok) out.push(`VERIFIED: source == sink: ${result.tables.length} table(s), ${rows} rows compared by hash in ${chunks} chunks`);
  else {
    const bad = result.tables.filter((t) => t.problem !== undefined || t.differingChunks > 0);
    out.push(`MISMATCH: ${bad.length} table(s) differ: ${bad.map((t) => `${t.sink}:${t.table}`).join(', ')}${differences[0] ? `; first: ${differences[0]}` : ''}`);
  }
  return out.join('\n');
}
