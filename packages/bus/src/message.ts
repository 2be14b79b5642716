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

export function toBusMessage(raw: { subject: string; seq: number; data: Uint8Array; headers?: MsgHdrs | undefined }): BusMessage {
  return {
    subject: raw.subject,
    seq: raw.seq,
    data: raw.data,
    header: (name) => {
      const value = raw.headers?.get(name);
      return value === undefined || value === '' ? undefined : value;
    },
    json: <T>() => JSON.parse(decoder.decode(raw.data)) as T,
  };
}
