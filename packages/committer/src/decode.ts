/**
 * deduped.<p> carries OrderedMessage JSON. Anything else there is a poison message: it
 * is dead-lettered and its sequence counts as consumed, so the partition keeps moving.
 */
import { Lsn, PoisonEventError, type OrderedMessage } from '@cdc/core';

export function decodeOrdered(data: Uint8Array, context: { subject: string; partition: number }): OrderedMessage | PoisonEventError {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(data));
  } catch (error) {
    return new PoisonEventError('message is not JSON', context, error);
  }
  const message = value as Partial<Record<string, unknown>>;
  try {
    if (message.kind === 'watermark') {
      if (typeof message.lamport !== 'string' || typeof message.positions !== 'object' || message.positions === null) {
        throw new TypeError('a watermark needs lamport (decimal string) and positions');
      }
      BigInt(message.lamport);
      return value as OrderedMessage;
    }
    if (message.kind === 'change') {
      const ok =
        typeof message.table === 'string' &&
        typeof message.source === 'string' &&
        typeof message.lamport === 'string' &&
        typeof message.commitLsn === 'string' &&
        typeof message.eventId === 'string' &&
        Number.isInteger(message.seq) &&
        Array.isArray(message.keyColumns) &&
        Array.isArray(message.key) &&
        ['insert', 'update', 'delete', 'truncate'].includes(String(message.op));
      if (!ok) throw new TypeError('a change event needs source, table, op, key, keyColumns, commitLsn, seq, lamport, eventId');
      BigInt(message.lamport as string);
      Lsn.parse(message.commitLsn as string);
      return { unchanged: [], before: null, after: null, ...message } as unknown as OrderedMessage;
    }
    throw new TypeError(`unknown message kind ${JSON.stringify(message.kind)} (expected 'change' or 'watermark')`);
  } catch (error) {
    return new PoisonEventError(`undecodable message: ${error instanceof Error ? error.message : String(error)}`, {
      ...context,
      ...(typeof message.eventId === 'string' ? { eventId: message.eventId } : {}),
      ...(typeof message.table === 'string' ? { table: message.table } : {}),
    }, error);
  }
}
