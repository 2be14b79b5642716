import type { MsgHdrs } from '@nats-io/nats-core';

/** A message read from a stream, with the sequence every stage checkpoints by. */
export interface BusMessage {
  readonly subject: string;
  readonly seq: number;
  readonly data: Uint8Array;
  header(name: string): string | undefined;
  json<T>(): T;
}

const decoder = new TextDecoder();

/**
 * Headers are decoded only when asked for: nats.js parses a message's header block on
 * first access of `headers`, and most messages are never asked (the committer reads
 * none). One class, no closures per message.
 */
class StoredMessage implements BusMessage {
  readonly subject: string;
  readonly seq: number;
  readonly data: Uint8Array;
  readonly #source: { readonly headers?: MsgHdrs | undefined };

  constructor(subject: string, seq: number, data: Uint8Array, source: { readonly headers?: MsgHdrs | undefined }) {
    this.subject = subject;
    this.seq = seq;
    this.data = data;
    this.#source = source;
  }

  header(name: string): string | undefined {
    const value = this.#source.headers?.get(name);
    return value === undefined || value === '' ? undefined : value;
  }

  json<T>(): T {
    return JSON.parse(decoder.decode(this.data)) as T;
  }
}

/** `raw.headers` may be a getter (a JsMsg): it is read only when a header is. */
export function toBusMessage(raw: { readonly subject: string; readonly seq: number; readonly data: Uint8Array; readonly headers?: MsgHdrs | undefined }): BusMessage {
  return new StoredMessage(raw.subject, raw.seq, raw.data, raw);
}
