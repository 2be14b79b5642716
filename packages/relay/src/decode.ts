/**
 * Input validation for the middle stages. A message a stage cannot interpret is a
 * poison message: it is dead-lettered with the reason and the partition keeps moving
 * (a stuck partition would stop every key hashed to it).
 *
 * Accepted wire shapes (JSON, see @cdc/core event.ts):
 *   change     {kind:'change', source, table, key[], lamport:"<decimal>", commitLsn:"X/Y", seq:<int>=0>, eventId, ...}
 *   heartbeat  {kind:'heartbeat', source, lamport:"<decimal>", lsn:"X/Y"}
 *   progress   {kind:'progress', source, lamport:"<decimal>", commitLsn:"X/Y", seq:<int>=0>}
 *   watermark  {kind:'watermark', lamport:"<decimal>", positions:{<source>:"X/Y"}}
 */
import { Lsn, type ChangeEvent, type OrderedMessage, type PartitionHeartbeat, type RawMessage, type SourceHeartbeat, type SourceProgress } from '@cdc/core';
import type { BusMessage } from '@cdc/bus';

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string; readonly code: string };

type Kind = 'change' | 'heartbeat' | 'progress' | 'watermark';

const DECIMAL = /^(0|[1-9][0-9]*)$/;
const decoder = new TextDecoder();

/** A raw stream carries changes, source heartbeats and progress inside large transactions. */
export function decodeRaw(message: BusMessage): Decoded<RawMessage> {
  return decode(message, ['change', 'heartbeat', 'progress']) as Decoded<RawMessage>;
}

/** The ordered and deduped streams carry changes and partition watermarks. */
export function decodeOrdered(message: BusMessage): Decoded<OrderedMessage> {
  return decode(message, ['change', 'watermark']) as Decoded<OrderedMessage>;
}

function decode(message: BusMessage, kinds: readonly Kind[]): Decoded<ChangeEvent | SourceHeartbeat | SourceProgress | PartitionHeartbeat> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(message.data));
  } catch {
    return bad('not valid JSON', 'INVALID_JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return bad('not a JSON object', 'INVALID_MESSAGE');
  const record = value as Record<string, unknown>;
  const kind = record.kind;
  if (typeof kind !== 'string' || !(kinds as readonly string[]).includes(kind)) {
    return bad(`unknown or unexpected kind ${JSON.stringify(kind)} (expected ${kinds.join(' or ')})`, 'UNKNOWN_KIND');
  }
  const problem =
    kind === 'change'
      ? changeProblem(record)
      : kind === 'heartbeat'
        ? heartbeatProblem(record)
        : kind === 'progress'
          ? progressProblem(record)
          : watermarkProblem(record);
  if (problem !== undefined) return bad(`malformed ${kind}: ${problem}`, 'INVALID_MESSAGE');
  return { ok: true, value: record as unknown as ChangeEvent | SourceHeartbeat | SourceProgress | PartitionHeartbeat };
}

function bad(reason: string, code: string): Decoded<never> {
  return { ok: false, reason, code };
}

function isLsn(value: unknown): boolean {
  if (typeof value !== 'string') return false;
  try {
    Lsn.parse(value);
    return true;
  } catch {
    return false;
  }
}

const nonEmpty = (value: unknown): boolean => typeof value === 'string' && value.length > 0;

function changeProblem(r: Record<string, unknown>): string | undefined {
  if (!nonEmpty(r.source)) return 'source must be a non-empty string';
  if (!nonEmpty(r.table)) return 'table must be a non-empty string';
  if (!nonEmpty(r.eventId)) return 'eventId must be a non-empty string';
  if (!Array.isArray(r.key)) return 'key must be an array';
  if (typeof r.lamport !== 'string' || !DECIMAL.test(r.lamport)) return 'lamport must be a decimal string';
  if (!isLsn(r.commitLsn)) return 'commitLsn must be an LSN (X/Y)';
  if (typeof r.seq !== 'number' || !Number.isInteger(r.seq) || r.seq < 0) return 'seq must be an integer >= 0';
  return undefined;
}

function heartbeatProblem(r: Record<string, unknown>): string | undefined {
  if (!nonEmpty(r.source)) return 'source must be a non-empty string';
  if (typeof r.lamport !== 'string' || !DECIMAL.test(r.lamport)) return 'lamport must be a decimal string';
  if (!isLsn(r.lsn)) return 'lsn must be an LSN (X/Y)';
  return undefined;
}

function progressProblem(r: Record<string, unknown>): string | undefined {
  if (!nonEmpty(r.source)) return 'source must be a non-empty string';
  if (typeof r.lamport !== 'string' || !DECIMAL.test(r.lamport)) return 'lamport must be a decimal string';
  if (!isLsn(r.commitLsn)) return 'commitLsn must be an LSN (X/Y)';
  if (typeof r.seq !== 'number' || !Number.isInteger(r.seq) || r.seq < 0) return 'seq must be an integer >= 0';
  return undefined;
}

function watermarkProblem(r: Record<string, unknown>): string | undefined {
  if (typeof r.lamport !== 'string' || !DECIMAL.test(r.lamport)) return 'lamport must be a decimal string';
  const positions = r.positions;
  if (typeof positions !== 'object' || positions === null || Array.isArray(positions)) return 'positions must be an object';
  for (const [source, lsn] of Object.entries(positions)) {
    if (!isLsn(lsn)) return `positions.${source} must be an LSN (X/Y)`;
  }
  return undefined;
}
