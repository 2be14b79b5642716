/**
 * The pure half of `cdc dlq`: what a stored letter says, whether it can be replayed into a
 * PostgreSQL sink, whether a later change supersedes it, and how results are printed.
 * No connection here (unit-tested in apps/cli/test).
 */
import { InvalidArgumentError } from 'commander';
import { Lsn, keyText, type ChangeEvent, type DeadLetter } from '@cdc/core';

export interface StoredLetter {
  /** Stream sequence in the dlq stream: what `show` and `replay` take. */
  readonly seq: number;
  readonly subject: string;
  readonly time: string;
  readonly letter: DeadLetter & { readonly sqlstate?: string };
  /** The letter's Nats-Msg-Id (stage:sink:eventId): what a replay is recorded under. */
  readonly id: string | undefined;
}

/** A row of `_cdc_dlq_replays`: when and how a letter was replayed into a sink. */
export interface ReplayRecord {
  readonly at: string;
  readonly outcome: string;
}

export type ReplayResult =
  | { readonly seq: number; readonly outcome: 'applied'; readonly rowsWritten: number }
  | { readonly seq: number; readonly outcome: 'already-replayed'; readonly at: string; readonly previous: string }
  | { readonly seq: number; readonly outcome: 'superseded'; readonly reason: string }
  | { readonly seq: number; readonly outcome: 'refused' | 'not-replayable'; readonly reason: string }
  | { readonly seq: number; readonly outcome: 'would-apply' };

/** A commander argument parser: a positive integer (stream sequences, limits), or a clear error. */
export function positiveInteger(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < 1) throw new InvalidArgumentError(`not a positive integer: ${JSON.stringify(text)}`);
  return value;
}

/** A commander argument parser: a stage name, one subject token (`cdc.<p>.dlq.<stage>`). */
export function stageName(text: string): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(text)) throw new InvalidArgumentError('a stage name: letters, digits, _ and - (committer, reader, lamport-reorderer, dedup-gate)');
  return text;
}

/**
 * The change event a letter carries, if a PostgreSQL committer named `sink` can replay it;
 * otherwise why not. Only committer letters reached a sink: a letter of another stage is
 * fixed at that stage (its event is re-read from the source), and a Kafka committer's
 * letter is not this sink's.
 */
export function replayableEvent(stored: StoredLetter, sink: string): { readonly event: ChangeEvent } | { readonly reason: string } {
  const { letter } = stored;
  if (letter.stage !== 'committer') return { reason: `a ${letter.stage} letter never reached a sink; fix its cause at the ${letter.stage}` };
  if (letter.sink !== sink) return { reason: `a letter of sink ${letter.sink ?? '?'}, not ${sink}` };
  if (letter.payloadTruncated) return { reason: 'its payload was cut to fit the bus' };
  if (stored.id === undefined) return { reason: 'the letter has no event id' };
  let event: ChangeEvent;
  try {
    event = JSON.parse(letter.payload) as ChangeEvent;
  } catch (error) {
    return { reason: `its payload is not JSON (${error instanceof Error ? error.message : String(error)})` };
  }
  if (event === null || typeof event !== 'object' || event.kind !== 'change' || typeof event.table !== 'string' || !Array.isArray(event.key)) {
    return { reason: 'its payload is not a change event' };
  }
  if (typeof event.commitLsn !== 'string' || typeof event.seq !== 'number') return { reason: 'its event has no position (commitLsn, seq)' };
  if (event.eventId !== letter.eventId) return { reason: `its payload is event ${String(event.eventId)}, the letter names ${String(letter.eventId)}` };
  return { event };
}

/** The sink's version order: (commitLsn, seq), as the version guard on every row compares them. */
export function compareVersion(a: Pick<ChangeEvent, 'commitLsn' | 'seq'>, b: Pick<ChangeEvent, 'commitLsn' | 'seq'>): number {
  const byLsn = Lsn.compare(Lsn.parse(a.commitLsn), Lsn.parse(b.commitLsn));
  return byLsn !== 0 ? byLsn : a.seq - b.seq;
}

/**
 * Whether `later` makes replaying `letter` wrong: a delete of its row, or a truncate of its
 * table, at a newer version. The sink keeps no tombstones, so after such a change the row
 * is simply absent and the version guard cannot tell an old insert from a new one: the
 * replay would bring back a row the source deleted. (A newer insert or update needs no
 * check here: it left a row with a newer version, and the guard skips the replay.) A
 * letter that is itself a delete is never superseded: applying it is guarded.
 */
export function supersedes(later: ChangeEvent, letter: ChangeEvent): boolean {
  if (letter.op === 'delete' || letter.op === 'truncate') return false;
  if (later.table !== letter.table) return false;
  if (later.op !== 'delete' && later.op !== 'truncate') return false;
  if (later.op === 'delete' && keyText(later.key) !== keyText(letter.key)) return false;
  return compareVersion(later, letter) > 0;
}

/** What a scan of one partition of the deduped stream found, up to `lastSeq` (resumable from there). */
export interface PartitionScan {
  readonly lastSeq: number;
  /** The letter's own event was read: everything after it is still in the stream. */
  readonly seen: boolean;
  /** The first change the partition still holds. */
  readonly first?: ChangeEvent;
  readonly superseding?: ChangeEvent;
}

export interface LaterScan {
  readonly partitions: ReadonlyMap<number, PartitionScan>;
  /** The stream has lost messages to retention (its first sequence is past 1). */
  readonly trimmed: boolean;
}

export type LaterVerdict = { readonly covered: false } | { readonly covered: true; readonly superseding?: ChangeEvent };

/**
 * Whether a scan proves the letter's event superseded, or proves it is not (`covered`).
 * Not covered when retention may have removed the change that matters: the letter's own
 * event is gone from its partition (so whatever followed it may be gone too), or partition
 * 0 (truncates) starts past the letter's version in a trimmed stream. A partition is in
 * order-key order, so a first change at or below the letter's version means every newer
 * one is still there.
 */
export function laterVerdict(scan: LaterScan, event: ChangeEvent, partition: number): LaterVerdict {
  const own = scan.partitions.get(partition);
  if (!own?.seen) return { covered: false };
  if (own.superseding) return { covered: true, superseding: own.superseding };
  if (partition === 0) return { covered: true };
  const zero = scan.partitions.get(0);
  if (zero?.superseding) return { covered: true, superseding: zero.superseding };
  if (zero?.first && compareVersion(zero.first, event) <= 0) return { covered: true };
  return scan.trimmed ? { covered: false } : { covered: true };
}

/** A fixed-width text table (first row: the header); cells never wrap. */
export function renderTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length))) ?? [];
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

export function shorten(text: string, max: number): string {
  const line = text.replace(/\s+/g, ' ');
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
}

/** One letter as `list --json` prints it (and the head of `show`). */
export function letterSummary(stored: StoredLetter, replays?: ReadonlyMap<string, ReplayRecord>): Record<string, unknown> {
  const { letter } = stored;
  return {
    ...(replays ? { replay: (stored.id !== undefined ? replays.get(stored.id) : undefined) ?? null } : {}),
    seq: stored.seq,
    time: stored.time,
    id: stored.id ?? null,
    stage: letter.stage,
    sink: letter.sink ?? null,
    code: letter.code,
    sqlstate: letter.sqlstate ?? null,
    reason: letter.reason,
    table: letter.table ?? null,
    column: letter.column ?? null,
    lsn: letter.lsn ?? null,
    eventId: letter.eventId ?? null,
    partition: letter.partition ?? null,
  };
}

/** With `replays`: a `replayed` column (the record's outcome and time, or blank). */
export function listTable(letters: readonly StoredLetter[], replays?: ReadonlyMap<string, ReplayRecord>): string {
  const replayed = (s: StoredLetter): string[] => {
    if (!replays) return [];
    const record = s.id !== undefined ? replays.get(s.id) : undefined;
    return [record ? `${record.outcome} ${record.at.slice(0, 19)}` : ''];
  };
  return renderTable([
    ['seq', 'time', 'stage', 'sink', 'code', 'table', 'lsn', 'event', ...(replays ? ['replayed'] : []), 'reason'],
    ...letters.map((s) => [
      String(s.seq),
      s.time.slice(0, 19),
      s.letter.stage,
      s.letter.sink ?? '',
      s.letter.code,
      s.letter.table ?? '',
      s.letter.lsn ?? '',
      s.letter.eventId ?? '',
      ...replayed(s),
      shorten(s.letter.reason, 80),
    ]),
  ]);
}

export function replayDetail(result: ReplayResult): string {
  switch (result.outcome) {
    case 'applied':
      return result.rowsWritten === 0 ? '0 rows written: the sink already holds a newer version of the row' : `${result.rowsWritten} row(s) written`;
    case 'already-replayed':
      return `replayed at ${result.at} (${result.previous}): nothing done`;
    case 'would-apply':
      return 'dry run: would apply';
    default:
      return result.reason;
  }
}

export function replayTable(results: readonly ReplayResult[]): string {
  return renderTable([['seq', 'outcome', 'detail'], ...results.map((r) => [String(r.seq), r.outcome, shorten(replayDetail(r), 120)])]);
}

/** The letters to replay: `--all` ones then named ones, each sequence once, in stream order. */
export function selectLetters(all: readonly StoredLetter[], named: readonly StoredLetter[]): StoredLetter[] {
  const bySeq = new Map<number, StoredLetter>();
  for (const stored of [...all, ...named]) bySeq.set(stored.seq, stored);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}
