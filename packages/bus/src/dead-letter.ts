/**
 * A dead letter must always fit in one NATS message (PITFALLS 25): a letter that cannot be
 * published makes its stage fail, restart and meet the same poison again — a stall.
 * Letters carry the original payload, which can be as large as the message that caused
 * them (a Kafka record over `message.max.bytes`, a malformed event near `max_payload`),
 * and JSON-in-JSON escaping makes it larger still. So the payload is cut to fit, and the
 * letter says so: `payloadTruncated: true`, `payloadBytes` = the original size in bytes.
 */
import type { DeadLetter } from '@cdc/core';

const encoder = new TextEncoder();

/**
 * The letter as JSON bytes of at most `maxBytes` (when anything can make it fit: the
 * payload is cut first, then the reason). Never throws for size; the caller's publish
 * decides whether the server takes it.
 */
export function encodeDeadLetter(letter: DeadLetter, maxBytes: number): Uint8Array {
  const whole = encoder.encode(JSON.stringify(letter));
  if (whole.length <= maxBytes) return whole;
  const payloadBytes = Buffer.byteLength(letter.payload, 'utf8');
  const cut = (payload: string, reason: string): Uint8Array =>
    encoder.encode(JSON.stringify({ ...letter, reason, payload, payloadTruncated: true, payloadBytes }));
  let reason = letter.reason;
  if (cut('', reason).length > maxBytes) reason = prefixFitting(letter.reason, (r) => cut('', r).length <= maxBytes);
  return cut(prefixFitting(letter.payload, (p) => cut(p, reason).length <= maxBytes), reason);
}

/** The longest prefix of `text` that `fits` (binary search; `fits('')` is assumed). */
function prefixFitting(text: string, fits: (prefix: string) => boolean): string {
  let low = 0;
  let high = text.length;
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (fits(safeSlice(text, mid))) low = mid;
    else high = mid - 1;
  }
  return safeSlice(text, low);
}

/** Never ends on the first half of a surrogate pair. */
function safeSlice(text: string, end: number): string {
  const code = text.charCodeAt(end - 1);
  return code >= 0xd800 && code <= 0xdbff ? text.slice(0, end - 1) : text.slice(0, end);
}
