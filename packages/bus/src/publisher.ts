/**
 * Publishing is done when the PubAck arrives, not when publish() returns (PITFALLS 12).
 * The publisher keeps at most `maxInFlight` un-acknowledged publishes (back-pressure:
 * `publish` waits for a free slot) and fails for good after the first error: the caller
 * must restart from its checkpoint, because later publishes may have been stored
 * after the failed one and order within a subject matters.
 */
import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { PublishError } from './errors.ts';

export interface PublishOptions {
  readonly msgId: string;
  readonly headers?: Readonly<Record<string, string>>;
}

const encoder = new TextEncoder();

export class AckedPublisher {
  readonly #js: JetStreamClient;
  readonly #maxInFlight: number;
  readonly #timeoutMs: number;
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #waiters: (() => void)[] = [];
  #failure: PublishError | undefined;
  #published = 0;
  #duplicates = 0;

  constructor(js: JetStreamClient, options: { maxInFlight: number; timeoutMs?: number }) {
    this.#js = js;
    this.#maxInFlight = options.maxInFlight;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  get failure(): PublishError | undefined {
    return this.#failure;
  }

  get stats(): { published: number; duplicates: number; inFlight: number } {
    return { published: this.#published, duplicates: this.#duplicates, inFlight: this.#inFlight.size };
  }

  /** Sends now (in order with earlier calls) once a slot is free; the returned promise is the PubAck. */
  async publish(subject: string, payload: unknown, options: PublishOptions): Promise<PubAck> {
    while (this.#inFlight.size >= this.#maxInFlight) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    if (this.#failure) throw this.#failure;
    const hdrs = natsHeaders();
    for (const [name, value] of Object.entries(options.headers ?? {})) hdrs.set(name, value);
    const data = payload instanceof Uint8Array ? payload : encoder.encode(JSON.stringify(payload));
    const ack = this.#js
      .publish(subject, data, { msgID: options.msgId, headers: hdrs, timeout: this.#timeoutMs })
      .then(
        (pubAck) => {
          this.#published += 1;
          if (pubAck.duplicate) this.#duplicates += 1;
          return pubAck;
        },
        (error: unknown) => {
          this.#failure ??= new PublishError(subject, error, { eventId: options.msgId });
          throw this.#failure;
        },
      );
    const tracked = ack.catch(() => undefined).finally(() => {
      this.#inFlight.delete(tracked);
      this.#waiters.shift()?.();
    });
    this.#inFlight.add(tracked);
    return ack;
  }

  /** Resolves when every publish so far is acknowledged; throws the first failure. */
  async flush(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all([...this.#inFlight]);
    if (this.#failure) throw this.#failure;
  }
}
