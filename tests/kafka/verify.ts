/**
 * Exactly once, per-key order, checked between the source's own record of what it
 * committed (testkit's `change_history`, filled by triggers) and what a read_committed
 * consumer finds in the Kafka topics — never by trusting the pipeline's counters.
 *
 * Per (table, key) the source history is a sequence of upserts (with their version) and
 * deletes; the Kafka records of that key must be the same sequence, in the same order:
 * c/u/r ↔ upsert with after.version, d ↔ delete (before.version compared where the table
 * sends full before-images). Each delete is followed by its tombstone when enabled.
 */
import { withClient } from '../e2e/databases.ts';
import type { KafkaRecord } from './topics.ts';

interface HistoryEntry {
  readonly kind: 'upsert' | 'delete';
  readonly version: number | undefined;
}

export interface KafkaVerification {
  readonly sourceChanges: number;
  readonly kafkaChanges: number;
  readonly tombstones: number;
  readonly keys: number;
  /** Keys whose Kafka sequence is not the source's: with a short description each. */
  readonly mismatches: string[];
  /** Changes found in Kafka more often than the source committed them. */
  readonly duplicates: number;
  readonly missing: number;
  /** Keys whose changes are all present but not in source order. */
  readonly orderViolations: number;
  readonly deletesWithoutTombstone: number;
  readonly ok: boolean;
}

interface Envelope {
  readonly op: string;
  readonly before: Record<string, unknown> | null;
  readonly after: Record<string, unknown> | null;
  readonly source: { readonly table: string };
}

/** The history trigger's key text: `id`, or `order_id/line_no` for order_lines. */
function keyText(table: string, key: Record<string, unknown>): string {
  return table === 'order_lines' ? `${String(key.order_id)}/${String(key.line_no)}` : String(key.id);
}

export async function sourceHistory(sourceUrl: string): Promise<Map<string, HistoryEntry[]>> {
  return withClient(sourceUrl, async (client) => {
    const result = await client.query<{ tbl: string; key: string; version: number; kind: 'upsert' | 'delete' }>(
      'SELECT tbl, key, version, kind FROM change_history ORDER BY id',
    );
    const byKey = new Map<string, HistoryEntry[]>();
    for (const row of result.rows) {
      const id = `${row.tbl}|${row.key}`;
      let list = byKey.get(id);
      if (list === undefined) byKey.set(id, (list = []));
      list.push({ kind: row.kind, version: row.version });
    }
    return byKey;
  });
}

export function kafkaHistory(records: readonly KafkaRecord[]): { byKey: Map<string, HistoryEntry[]>; tombstones: number; deletesWithoutTombstone: number } {
  const byKey = new Map<string, HistoryEntry[]>();
  const awaitingTombstone = new Map<string, number>();
  let tombstones = 0;
  for (const record of records) {
    if (record.key === null) continue;
    if (record.value === null) {
      tombstones += 1;
      const pending = awaitingTombstone.get(`${record.topic}|${record.key}`) ?? 0;
      if (pending > 0) awaitingTombstone.set(`${record.topic}|${record.key}`, pending - 1);
      continue;
    }
    const envelope = JSON.parse(record.value) as Envelope;
    const key = JSON.parse(record.key) as Record<string, unknown>;
    const id = `${envelope.source.table}|${keyText(envelope.source.table, key)}`;
    let list = byKey.get(id);
    if (list === undefined) byKey.set(id, (list = []));
    if (envelope.op === 'd') {
      const version = envelope.before?.version;
      list.push({ kind: 'delete', version: typeof version === 'number' ? version : undefined });
      awaitingTombstone.set(`${record.topic}|${record.key}`, (awaitingTombstone.get(`${record.topic}|${record.key}`) ?? 0) + 1);
    } else {
      const version = envelope.after?.version;
      list.push({ kind: 'upsert', version: typeof version === 'number' ? version : undefined });
    }
  }
  const deletesWithoutTombstone = [...awaitingTombstone.values()].reduce((sum, n) => sum + n, 0);
  return { byKey, tombstones, deletesWithoutTombstone };
}

function same(a: HistoryEntry, b: HistoryEntry): boolean {
  // A delete's version is known only from a full before-image; compare it when both have it.
  if (a.kind !== b.kind) return false;
  if (a.kind === 'delete' && (a.version === undefined || b.version === undefined)) return true;
  return a.version === b.version;
}

function describe(list: readonly HistoryEntry[]): string {
  return list.map((entry) => `${entry.kind}${entry.version === undefined ? '' : ` v${entry.version}`}`).join(', ');
}

export function compareHistories(
  source: ReadonlyMap<string, readonly HistoryEntry[]>,
  kafka: { byKey: ReadonlyMap<string, readonly HistoryEntry[]>; tombstones: number; deletesWithoutTombstone: number },
  options: { tombstones: boolean },
): KafkaVerification {
  const mismatches: string[] = [];
  let duplicates = 0;
  let missing = 0;
  let orderViolations = 0;
  let sourceChanges = 0;
  let kafkaChanges = 0;
  const keys = new Set([...source.keys(), ...kafka.byKey.keys()]);
  for (const key of keys) {
    const expected = source.get(key) ?? [];
    const found = kafka.byKey.get(key) ?? [];
    sourceChanges += expected.length;
    kafkaChanges += found.length;
    if (expected.length === found.length && expected.every((entry, i) => same(entry, found[i] as HistoryEntry))) continue;
    // Multiset difference first: what is there too often or not at all; the rest is order.
    const unmatched = [...found];
    let missingHere = 0;
    for (const entry of expected) {
      const at = unmatched.findIndex((candidate) => same(entry, candidate));
      if (at < 0) missingHere += 1;
      else unmatched.splice(at, 1);
    }
    missing += missingHere;
    duplicates += unmatched.length;
    if (missingHere === 0 && unmatched.length === 0) orderViolations += 1;
    if (mismatches.length < 10) mismatches.push(`${key}: source [${describe(expected)}] kafka [${describe(found)}]`);
  }
  const deletesWithoutTombstone = options.tombstones ? kafka.deletesWithoutTombstone : 0;
  return {
    sourceChanges,
    kafkaChanges,
    tombstones: kafka.tombstones,
    keys: keys.size,
    mismatches,
    duplicates,
    missing,
    orderViolations,
    deletesWithoutTombstone,
    ok: mismatches.length === 0 && deletesWithoutTombstone === 0,
  };
}
