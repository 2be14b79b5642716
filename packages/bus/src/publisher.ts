/**
 * Publishing is done when the PubAck arrives, not when publish() returns (PITFALLS 12).
 * The publisher keeps at most `maxInFlight` un-acknowledged publishes (back-pressure:
 * `publish` waits for a free slot, in call order) and fails for good after the first
 * error: the caller must restart from its checkpoint, because later publishes may have
 * been stored after the failed one and order within a subject matters.
 *
 * How (measured, see the commit message): `js.publish()` is a core request per message,
 * and nats.js builds a RequestError and a TimeoutError (with stack traces) plus a timer
 * for every request — about a quarter of each stage's CPU and much of its garbage. Here
 * every message is a core publish with a reply subject under ONE wildcard inbox
 * subscription (`<inbox>.<token>`), the PubAck is matched by token, and a single sweep
 * timer fails publishes older than `timeoutMs`. Same wire protocol as `js.publish`:
 * JetStream answers on the reply subject with `{stream, seq, duplicate}` or
 * `{error}`; a subject no stream listens on gets a 503 "no responders" status.
 *
 * Messages are queued and handed to the connection together (on the next macrotask, at
 * once when SEND_BATCH are queued, or on `flush()`), so publishes made one at a time
 * (the reader: one per pgoutput message) still leave in few socket writes instead of
 * one write each. Call order is send order.
 */
import type { PubAck } from '@nats-io/jetstream';
import { createInbox, headers as natsHeaders, type Msg, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { PublishError } from './errors.ts';

export interface PublishOptions {
  readonly msgId: string;
  readonly headers?: Readonly<Record<string, string>>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Outgoing {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly options: PublishOptions;
  readonly resolve: (ack: PubAck) => void;
  readonly reject: (error: unknown) => void;
}

interface InFlight {
  readonly subject: string;
  readonly msgId: string;
  readonly sentAt: number;
  readonly resolve: (ack: PubAck) => void;
  readonly reject: (error: unknown) => void;
}

/** Queued messages handed to the connection at once, without waiting for the next macrotask. */
const SEND_BATCH = 128;

export class AckedPublisher {
  readonly #nc: NatsConnection;
  readonly #maxInFlight: number;
  readonly #timeoutMs: number;
  readonly #prefix: string;
  readonly #inFlight = new Map<number, InFlight>();
  /** Published, not yet handed to the connection. */
  #queue: Outgoing[] = [];
  /** Callers waiting for a slot, FIFO (a relay may queue thousands: no Array.shift). */
  readonly #waiters = new Fifo<() => void>();
  readonly #drained: (() => void)[] = [];
  #subscription: Subscription | undefined;
  #sendScheduled: NodeJS.Immediate | undefined;
  #sweep: NodeJS.Timeout | undefined;
  /** Waiters woken for a free slot that have not queued their message yet. */
  #reserved = 0;
  #nextToken = 1;
  #failure: PublishError | undefined;
  #closed = false;
  #published = 0;
  #duplicates = 0;

  constructor(nc: NatsConnection, options: { maxInFlight: number; timeoutMs?: number }) {
    this.#nc = nc;
    this.#maxInFlight = Math.max(1, options.maxInFlight);
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#prefix = `${createInbox()}.`;
  }

  get failure(): PublishError | undefined {
    return this.#failure;
  }

  get stats(): { published: number; duplicates: number; inFlight: number } {
    return { published: this.#published, duplicates: this.#duplicates, inFlight: this.#occupied() };
  }

  /** Queues now (in order with earlier calls) once a slot is free; the returned promise is the PubAck. */
  async publish(subject: string, payload: unknown, options: PublishOptions): Promise<PubAck> {
    if (this.#waiters.length > 0 || this.#occupied() >= this.#maxInFlight) {
      // Wait in line: a later caller never overtakes an earlier one.
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
      });
      this.#reserved -= 1;
    }
    if (this.#failure) throw this.#failure;
    if (this.#closed) throw new PublishError(subject, new Error('publisher closed'), { eventId: options.msgId });
    const data = payload instanceof Uint8Array ? payload : encoder.encode(JSON.stringify(payload));
    const ack = new Promise<PubAck>((resolve, reject) => {
      this.#queue.push({ subject, data, options, resolve, reject });
    });
    if (this.#queue.length >= SEND_BATCH) this.#send();
    else this.#sendScheduled ??= setImmediate(() => this.#send());
    return ack;
  }

  /** Resolves when every publish so far is acknowledged; throws the first failure. */
  async flush(): Promise<void> {
    this.#send();
    while (this.#occupied() > 0 && !this.#failure) {
      await new Promise<void>((resolve) => this.#drained.push(resolve));
      this.#send();
    }
    if (this.#failure) throw this.#failure;
  }

  /** Stops listening for acknowledgements; whatever is still pending fails. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#fail(new Error('publisher closed'), undefined);
    this.#subscription?.unsubscribe();
    this.#subscription = undefined;
  }

  #occupied(): number {
    return this.#inFlight.size + this.#queue.length + this.#reserved;
  }

  #wake(): void {
    this.#reserved += 1;
    this.#waiters.shift()?.();
  }

  #send(): void {
    if (this.#sendScheduled) {
      clearImmediate(this.#sendScheduled);
      this.#sendScheduled = undefined;
    }
    if (this.#queue.length === 0) return;
    const queue = this.#queue;
    this.#queue = [];
    if (this.#failure || this.#closed) {
      const failure = this.#failure ?? new Error('publisher closed');
      for (const out of queue) out.reject(failure);
      return;
    }
    this.#subscribe();
    const now = Date.now();
    for (const out of queue) {
      // A publish refused on the spot (over max_payload) fails the publisher: nothing after
      // it may be stored, or a stage whose checkpoint is its last output would skip it.
      if (this.#failure) {
        out.reject(this.#failure);
        continue;
      }
      const token = this.#nextToken++;
      const hdrs = natsHeaders();
      hdrs.set('Nats-Msg-Id', out.options.msgId);
      if (out.options.headers) for (const name in out.options.headers) hdrs.set(name, out.options.headers[name] as string);
      this.#inFlight.set(token, { subject: out.subject, msgId: out.options.msgId, sentAt: now, resolve: out.resolve, reject: out.reject });
      try {
        this.#nc.publish(out.subject, out.data, { reply: `${this.#prefix}${token}`, headers: hdrs });
      } catch (error) {
        this.#inFlight.delete(token);
        out.reject(this.#fail(error, out));
      }
    }
    this.#sweep ??= setInterval(() => this.#checkTimeouts(), Math.max(50, Math.min(1_000, this.#timeoutMs / 4)));
  }

  #subscribe(): void {
    if (this.#subscription) return;
    this.#subscription = this.#nc.subscribe(`${this.#prefix}*`, { callback: (error, msg) => this.#onReply(error, msg) });
  }

  #onReply(error: Error | null, msg: Msg): void {
    if (error) {
      this.#fail(error, undefined);
      return;
    }
    const token = Number(msg.subject.slice(this.#prefix.length));
    const entry = this.#inFlight.get(token);
    if (!entry) return; // timed out or failed already
    this.#inFlight.delete(token);
    const problem = replyProblem(msg);
    if (typeof problem === 'string') {
      entry.reject(this.#fail(new Error(problem), entry));
    } else {
      this.#published += 1;
      if (problem.duplicate) this.#duplicates += 1;
      entry.resolve(problem);
    }
    this.#released();
  }

  #checkTimeouts(): void {
    const now = Date.now();
    for (const [token, entry] of this.#inFlight) {
      // Insertion order is send order: the first young entry ends the scan.
      if (now - entry.sentAt < this.#timeoutMs) break;
      this.#inFlight.delete(token);
      entry.reject(this.#fail(new Error(`no PubAck within ${this.#timeoutMs} ms (TIMEOUT)`), entry));
    }
    this.#released();
  }

  #released(): void {
    while (this.#waiters.length > 0 && this.#occupied() < this.#maxInFlight) this.#wake();
    if (this.#occupied() === 0 || this.#failure) {
      if (this.#sweep && this.#inFlight.size === 0) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
      for (const resolve of this.#drained.splice(0)) resolve();
    }
  }

  /** Records the first failure (the publisher is failed for good) and returns it. */
  #fail(cause: unknown, entry: { subject: string; msgId?: string; options?: PublishOptions } | undefined): PublishError {
    const msgId = entry?.msgId ?? entry?.options?.msgId;
    this.#failure ??= new PublishError(entry?.subject ?? '(publisher)', cause, msgId === undefined ? {} : { eventId: msgId });
    if (this.#closed) {
      for (const [, pending] of this.#inFlight) pending.reject(this.#failure);
      this.#inFlight.clear();
    }
    for (const out of this.#queue.splice(0)) out.reject(this.#failure);
    while (this.#waiters.length > 0) this.#wake();
    for (const resolve of this.#drained.splice(0)) resolve();
    if (this.#inFlight.size === 0 && this.#sweep) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
    return this.#failure;
  }
}

/** A FIFO with O(1) shift. */
class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head += 1;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

/** A PubAck, or what went wrong (JetStream error, no stream on the subject). */
function replyProblem(msg: Msg): PubAck | string {
  const status = msg.headers;
  if (status?.hasError || msg.data.length === 0) {
    const code = status?.code ?? 0;
    return code === 503 ? 'no responders: no stream listens on this subject (503)' : `JetStream answered ${code} ${status?.description ?? ''}`.trim();
  }
  let reply: { stream?: string; seq?: number; duplicate?: boolean; domain?: string; error?: { code?: number; err_code?: number; description?: string } };
  try {
    reply = JSON.parse(decoder.decode(msg.data)) as typeof reply;
  } catch {
    return 'invalid PubAck (not JSON)';
  }
  if (reply.error) return `JetStream error ${reply.error.code ?? ''}/${reply.error.err_code ?? ''}: ${reply.error.description ?? 'unknown'}`;
  if (!reply.stream || typeof reply.seq !== 'number') return 'invalid PubAck';
  return { stream: reply.stream, seq: reply.seq, duplicate: reply.duplicate === true, ...(reply.domain ? { domain: reply.domain } : {}) } as PubAck;
}
