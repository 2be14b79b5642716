/**
 * One partition of a middle stage: input subject → transform → output subject, with the
 * stage's checkpoint stored in the headers of every message it publishes
 * (docs/design.md, "Stage checkpoints live in their output"):
 *
 *   start:   last message of the output subject → Cdc-Resume-Seq / Cdc-Last-Key
 *            (none → seq 1, no key) → transform.restore → ordered reader from resume seq
 *   fetch:   reader.nextBatch(batchMax, lingerMs)
 *   process: transform.process → dead letters → publish every output (Nats-Msg-Id) →
 *            flush: durable only when every PubAck is in (PITFALLS 12)
 *   commit:  advance the in-memory checkpoint; reopen the reader if the transform asked
 *
 * Any failure leaves the in-memory state unknown (part of a batch may be stored), so the
 * next fetch re-runs the whole start procedure: the state is rebuilt from what is durable,
 * never patched. A non-retriable error (a retention gap, a corrupt checkpoint) stops the
 * relay loudly: `closed()` resolves with it.
 *
 * States (the fetch/process/commit cycle itself is the ConsumerLoop's machine):
 *
 *   created ──create()──► running ──close() / signal / fatal──► closing ──loop ended──► closed
 */
import { CdcError, Headers, IllegalStateError, decodeMessage, errorMessage, stageSubject, streamName, systemClock, withinMs, type Clock, type DeadLetter, type Stage } from '@cdc/core';
import { StreamGapError, type AckedPublisher, type Bus, type BusMessage, type StreamReader } from '@cdc/bus';
import { ConsumerLoop, type ConsumerState, type Logger } from '@cdc/runtime';
import { RELAY_DEFAULTS } from './defaults.ts';
import { BadCheckpointError, MessageTooLargeError, ReaderClosedError } from './errors.ts';
import type { DeadLetterRequest, RelayCheckpoint, RelayTransform, StageOutput } from './types.ts';

export interface RelayOptions {
  readonly bus: Bus;
  readonly pipeline: string;
  readonly partition: number;
  /** Stage name: names the dead-letter subject (`cdc.<pipeline>.dlq.<stage>`) and the logs. */
  readonly stage: string;
  readonly input: Stage;
  readonly output: Stage;
  readonly transform: RelayTransform;
  readonly logger: Logger;
  readonly batchMax: number;
  readonly batchLingerMs: number;
  /** Un-acknowledged publishes at once (default RELAY_DEFAULTS.maxInFlight). */
  readonly maxInFlight?: number;
  readonly publishTimeoutMs?: number;
  /** Messages the ordered consumer may hold ahead of us (default 2 × batchMax). */
  readonly readerBufferMessages?: number;
  readonly retry?: { initialDelayMs: number; maxDelayMs: number };
  /** Aborting it stops the relay after the batch in hand (SIGTERM drain). */
  readonly signal?: AbortSignal;
  /** Time for health (failingSince), the linger check and the loop's back-off. Default systemClock. */
  readonly clock?: Clock;
}

export type RelayState = 'created' | 'running' | 'closing' | 'closed';

export interface RelayHealth {
  readonly state: RelayState;
  readonly loop: ConsumerState;
  readonly consecutiveFailures: number;
  /** Since when the loop has been failing without a successful batch (ms epoch), if it is. */
  readonly failingSince: number | undefined;
  readonly lastError: string | undefined;
  readonly resumeSeq: number | undefined;
  readonly lastKey: string | undefined;
  readonly batches: number;
  readonly published: number;
  readonly deadLettered: number;
}

const encoder = new TextEncoder();

/** Bytes of the NATS header block AckedPublisher sends: `NATS/1.0\r\n`, `Name: value\r\n` each, `\r\n`. */
function headerBytes(msgId: string, headers: Readonly<Record<string, string>>): number {
  let bytes = 'NATS/1.0\r\n\r\n'.length + `${Headers.MsgId}: \r\n`.length + Buffer.byteLength(msgId, 'utf8');
  for (const name in headers) bytes += name.length + 4 + Buffer.byteLength(headers[name] as string, 'utf8');
  return bytes;
}

/** How long a reader's close may take before we move on (see #closeReader). */
const READER_CLOSE_WAIT_MS = 20;

interface Pending {
  readonly last: StageOutput | undefined;
  readonly reopenFrom: number | undefined;
  readonly messagesIn: number;
  readonly eventsIn: number;
  readonly messagesOut: number;
  readonly eventsOut: number;
  /** Lamport (µs, about the source commit time) of the last output carrying events. */
  readonly lamportMicros: number | undefined;
}

/**
 * What a relay has done, for /metrics (read at scrape time: plain numbers, added to per
 * committed batch). Counts are of committed batches: a batch retried after a failure
 * counts once. Dead letters count when sent, by code.
 */
export interface RelayCounters {
  messagesIn: number;
  eventsIn: number;
  messagesOut: number;
  eventsOut: number;
  readonly deadLetters: Map<string, number>;
  /**
   * Seconds from the source commit of the last event published to the moment its batch
   * was durable (the event's Lamport stamp is its commit time in µs, or just above it);
   * undefined until the first event.
   */
  lagSeconds: number | undefined;
  /** When a batch last committed (ms epoch); undefined before the first. */
  lastBatchAt: number | undefined;
}

/** The Lamport part of an order key's text (`<lamport>:<source>:<lsn>:<seq>`), as a number of µs. */
function lamportOfKeyText(key: string | undefined): number | undefined {
  if (key === undefined) return undefined;
  const end = key.indexOf(':');
  const micros = Number(end < 0 ? key : key.slice(0, end));
  return Number.isFinite(micros) && micros > 0 ? micros : undefined;
}

export class Relay {
  readonly #options: RelayOptions;
  readonly #logger: Logger;
  readonly #loop: ConsumerLoop<BusMessage[]>;
  readonly #controller = new AbortController();
  readonly #inStream: string;
  readonly #inSubject: string;
  readonly #outStream: string;
  readonly #outSubject: string;
  readonly #clock: Clock;
  #state: RelayState = 'created';
  #done: Promise<Error | undefined> = Promise.resolve(undefined);
  #fatal: Error | undefined;
  #reader: StreamReader | undefined;
  #publisher: AckedPublisher | undefined;
  /** True until the first start and after any failure: the next fetch rebuilds everything. */
  #needsStart = true;
  #reopenAt: number | undefined;
  #pending: Pending | undefined;
  #resumeSeq: number | undefined;
  #lastKey: string | undefined;
  #failingSince: number | undefined;
  #lastError: string | undefined;
  #batches = 0;
  #published = 0;
  #deadLettered = 0;
  readonly counters: RelayCounters = { messagesIn: 0, eventsIn: 0, messagesOut: 0, eventsOut: 0, deadLetters: new Map(), lagSeconds: undefined, lastBatchAt: undefined };

  private constructor(options: RelayOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    const { pipeline, partition, input, output } = options;
    this.#logger = options.logger.child({ component: 'relay', stage: options.stage, partition });
    this.#inStream = streamName(pipeline, input);
    this.#inSubject = stageSubject(pipeline, input, partition);
    this.#outStream = streamName(pipeline, output);
    this.#outSubject = stageSubject(pipeline, output, partition);
    this.#loop = new ConsumerLoop<BusMessage[]>({
      name: `${options.stage}/${partition}`,
      logger: this.#logger,
      ...(options.retry ? { retry: options.retry } : {}),
      clock: this.#clock,
      onError: (error) => this.#onError(error),
    });
  }

  /** Starts the loop in the background; `closed()` tells when (and why) it ended. */
  static create(options: RelayOptions): Relay {
    const relay = new Relay(options);
    relay.#run();
    return relay;
  }

  get state(): RelayState {
    return this.#state;
  }

  get inputSubject(): string {
    return this.#inSubject;
  }

  get outputSubject(): string {
    return this.#outSubject;
  }

  health(): RelayHealth {
    return {
      state: this.#state,
      loop: this.#loop.state,
      consecutiveFailures: this.#loop.consecutiveFailures,
      failingSince: this.#failingSince,
      lastError: this.#lastError,
      resumeSeq: this.#resumeSeq,
      lastKey: this.#lastKey,
      batches: this.#batches,
      published: this.#published,
      deadLettered: this.#deadLettered,
    };
  }

  /** Ready unless the loop has failed continuously for longer than `maxFailingMs`. */
  isHealthy(maxFailingMs: number, now = this.#clock.now()): boolean {
    if (this.#state === 'closed') return false;
    return this.#failingSince === undefined || now - this.#failingSince < maxFailingMs;
  }

  /** Resolves (never rejects) when the loop has ended: with the fatal error, if any. */
  closed(): Promise<Error | undefined> {
    return this.#done;
  }

  /** Finishes the batch in hand, closes the reader; idempotent. The error, if any, is closed()'s. */
  async close(): Promise<void> {
    if (this.#state === 'running') this.#state = 'closing';
    this.#controller.abort(new Error('relay stopped'));
    await this.#done;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #run(): void {
    if (this.#state !== 'created') throw new IllegalStateError('relay', this.#state, 'start');
    this.#state = 'running';
    const outer = this.#options.signal;
    const onAbort = (): void => this.#controller.abort(outer?.reason);
    if (outer?.aborted) onAbort();
    else outer?.addEventListener('abort', onAbort, { once: true });

    this.#done = this.#loop
      .run(
        {
          fetch: (signal) => this.#fetch(signal),
          process: (batch, signal) => this.#process(batch, signal),
          commit: async () => this.#commit(),
          onStop: () => this.#closeReader(),
        },
        this.#controller.signal,
      )
      .then(
        () => this.#fatal,
        (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
      )
      .then((error) => {
        outer?.removeEventListener('abort', onAbort);
        this.#state = 'closed';
        if (error) this.#logger.error({ err: error, code: error instanceof CdcError ? error.code : undefined }, 'relay stopped on a fatal error');
        else this.#logger.info({ resume_seq: this.#resumeSeq, last_key: this.#lastKey }, 'relay stopped');
        return error;
      });
  }

  #onError(error: unknown): void {
    this.#needsStart = true;
    this.#failingSince ??= this.#clock.now();
    this.#lastError = errorMessage(error);
    // Retrying cannot fix a gap in the input or a corrupt checkpoint: stop loudly.
    if (error instanceof CdcError && !error.retriable) {
      this.#fatal = error;
      this.#controller.abort(error);
    }
  }

  async #fetch(signal: AbortSignal): Promise<BusMessage[] | undefined> {
    try {
      if (this.#needsStart) await this.#startFromOutput();
      else if (this.#reopenAt !== undefined) await this.#openReader(this.#reopenAt, 'reopen');
      const reader = this.#reader;
      if (!reader) throw new ReaderClosedError(this.#inSubject);
      const { batchMax, batchLingerMs } = this.#options;
      const started = this.#clock.now();
      const batch = await reader.nextBatch(batchMax, batchLingerMs, signal);
      if (batch.length > 0) return batch;
      // An empty batch before the linger elapsed means the consumer's iterator ended
      // (StreamReader marks itself closed and returns at once from then on).
      if (!signal.aborted && this.#clock.now() - started < batchLingerMs / 2) throw new ReaderClosedError(this.#inSubject);
      // Caught up with nothing to do: whatever failed before works again (an idle
      // partition must not stay unready until its next message).
      this.#failingSince = undefined;
      return undefined;
    } catch (error) {
      this.#needsStart = true;
      throw error;
    }
  }

  /** The start procedure; also the recovery after any failure. */
  async #startFromOutput(): Promise<void> {
    await this.#closeReader();
    this.#pending = undefined;
    this.#reopenAt = undefined;
    // Acks still due to the old publisher are ignored: the state is rebuilt from the output.
    this.#publisher?.close();
    this.#publisher = this.#options.bus.publisher({
      maxInFlight: this.#options.maxInFlight ?? RELAY_DEFAULTS.maxInFlight,
      ...(this.#options.publishTimeoutMs !== undefined ? { timeoutMs: this.#options.publishTimeoutMs } : {}),
    });
    const last = await this.#options.bus.lastMessage(this.#outStream, this.#outSubject);
    const checkpoint = this.#checkpointOf(last);
    await this.#options.transform.restore(checkpoint);
    this.#resumeSeq = checkpoint.resumeSeq;
    this.#lastKey = checkpoint.lastKey;
    await this.#openReader(checkpoint.resumeSeq, 'start');
    this.#needsStart = false;
  }

  #checkpointOf(last: BusMessage | undefined): RelayCheckpoint {
    if (!last) return { resumeSeq: 1, lastKey: undefined, last: undefined };
    const text = last.header(Headers.ResumeSeq);
    const resumeSeq = text === undefined ? 1 : Number(text);
    if (text !== undefined && (!Number.isSafeInteger(resumeSeq) || resumeSeq < 1)) {
      throw new BadCheckpointError(this.#outSubject, Headers.ResumeSeq, text);
    }
    return { resumeSeq, lastKey: last.header(Headers.LastKey), last };
  }

  async #openReader(startSeq: number, why: 'start' | 'reopen'): Promise<void> {
    await this.#closeReader();
    const { bus } = this.#options;
    // Retention removed messages we never processed: continuing would skip them silently.
    const first = await bus.firstSequence(this.#inStream);
    if (first > startSeq) throw new StreamGapError(this.#inStream, this.#inSubject, startSeq, first);
    this.#reader = await bus.openReader({
      stream: this.#inStream,
      subject: this.#inSubject,
      startSeq,
      bufferMessages: this.#options.readerBufferMessages ?? Math.max(2 * this.#options.batchMax, 64),
      clock: this.#clock,
    });
    this.#reopenAt = undefined;
    this.#logger.info({ input: this.#inSubject, output: this.#outSubject, start_seq: startSeq, last_key: this.#lastKey, why }, 'reading input');
  }

  async #closeReader(): Promise<void> {
    const reader = this.#reader;
    this.#reader = undefined;
    if (!reader) return;
    // Bounded: nats.js queues a consumer's stop behind the messages it still buffers, so
    // `close()` only resolves once someone iterates them — nobody will. The subscription
    // is already gone when close() returns control; waiting longer only stalls a reopen.
    const closing = this.#options.bus.closeReader(reader).catch(() => undefined);
    await withinMs(closing, READER_CLOSE_WAIT_MS, this.#clock);
  }

  async #process(batch: BusMessage[], signal: AbortSignal): Promise<void> {
    // Until commit, a failure leaves state half-applied: recover through the start procedure.
    this.#needsStart = true;
    const ours: BusMessage[] = [];
    const foreign: DeadLetterRequest[] = [];
    let eventsIn = 0;
    for (const message of batch) {
      // Cdc-Count: the events of a batch message (absent on watermarks). Per message, not per event.
      const count = message.header(Headers.Count);
      if (count !== undefined) eventsIn += Number(count) || 0;
      if (message.subject === this.#inSubject) ours.push(message);
      else foreign.push({ message, reason: `subject ${message.subject} is not this partition's input ${this.#inSubject}`, code: 'WRONG_SUBJECT' });
    }
    const result = await this.#options.transform.process(ours, signal);
    // Dead letters first: if we die after the outputs, the replay finds them again
    // (and Nats-Msg-Id `dlq:<stage>:<eventId>` absorbs the repeat).
    for (const letter of [...foreign, ...result.deadLetters]) await this.#deadLetter(letter);

    const publisher = this.#publisher;
    if (!publisher) throw new IllegalStateError('relay', this.#state, 'publish before start');
    // Sized before anything is sent: an output over max_payload with our headers could
    // never be published (PITFALLS 25); it is dead-lettered and the others go on.
    const limit = this.#options.bus.maxPayload;
    const ready: { output: StageOutput; data: Uint8Array; headers: Record<string, string> }[] = [];
    for (const output of result.outputs) {
      const headers: Record<string, string> = {
        ...output.headers,
        [Headers.ResumeSeq]: String(output.resumeSeq),
        // Always present; empty means "nothing released yet" (BusMessage.header maps '' to undefined).
        [Headers.LastKey]: output.lastKey ?? '',
      };
      if (output.traceId) headers[Headers.TraceId] = output.traceId;
      const data = output.payload instanceof Uint8Array ? output.payload : encoder.encode(JSON.stringify(output.payload));
      const bytes = data.length + headerBytes(output.msgId, headers);
      if (bytes > limit) await this.#deadLetterTooLarge(output, data, bytes, limit);
      else ready.push({ output, data, headers });
    }
    const acks: Promise<unknown>[] = [];
    for (const { output, data, headers } of ready) {
      // Not awaited one by one: publishes are pipelined (bounded by maxInFlight) and all
      // PubAcks are awaited together below. Promise.all handles every rejection.
      acks.push(publisher.publish(this.#outSubject, data, { msgId: output.msgId, headers }));
    }
    await Promise.all(acks);
    await publisher.flush();
    this.#published += ready.length;
    let eventsOut = 0;
    let lastWithEvents: StageOutput | undefined;
    for (const { output } of ready) {
      const events = output.events ?? (Number(output.headers?.[Headers.Count] ?? 0) || 0);
      eventsOut += events;
      if (events > 0) lastWithEvents = output;
    }
    this.#pending = {
      last: ready.at(-1)?.output,
      reopenFrom: result.reopenFrom,
      messagesIn: batch.length,
      eventsIn,
      messagesOut: ready.length,
      eventsOut,
      lamportMicros: lamportOfKeyText(lastWithEvents?.lastKey),
    };
    this.#logger.debug(
      { input: batch.length, first_seq: batch[0]?.seq, outputs: result.outputs.length, dead_letters: result.deadLetters.length, reopen_from: result.reopenFrom },
      'batch processed',
    );
  }

  #commit(): void {
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending?.last) {
      this.#resumeSeq = pending.last.resumeSeq;
      this.#lastKey = pending.last.lastKey;
    }
    if (pending?.reopenFrom !== undefined) this.#reopenAt = pending.reopenFrom;
    if (pending) {
      const c = this.counters;
      const now = this.#clock.now();
      c.messagesIn += pending.messagesIn;
      c.eventsIn += pending.eventsIn;
      c.messagesOut += pending.messagesOut;
      c.eventsOut += pending.eventsOut;
      c.lastBatchAt = now;
      if (pending.lamportMicros !== undefined) c.lagSeconds = Math.max(0, (now * 1000 - pending.lamportMicros) / 1e6);
    }
    this.#options.transform.commit?.();
    this.#batches += 1;
    this.#failingSince = undefined;
    this.#needsStart = false;
  }

  /** The letter names the message, its size and the limit; Bus.deadLetter cuts the payload to fit. */
  async #deadLetterTooLarge(output: StageOutput, data: Uint8Array, bytes: number, limit: number): Promise<void> {
    // A lone event is dead-lettered whole (its item with the index's context: replayable
    // alone); a message of several as its text. Either names the (first) event's table and LSN.
    const items = decodeMessage(data, ['change', 'heartbeat', 'progress', 'watermark']);
    const first = items.find((item) => item.kind === 'change');
    const lone = items.length === 1 && first?.kind === 'change';
    const text = lone ? JSON.stringify(first.value) : new TextDecoder().decode(data);
    const where: { table?: string; lsn?: string } = first?.kind === 'change' ? { table: first.value.table, lsn: first.value.lsn } : {};
    const error = new MessageTooLargeError(this.#outSubject, output.msgId, bytes, limit, where);
    this.#logger.warn({ err: error, event_id: output.msgId, trace_id: output.traceId, lsn: where.lsn, table: where.table, bytes, limit }, 'message too large for the bus: dead-lettered');
    const { bus, pipeline, partition, stage } = this.#options;
    const letter: DeadLetter & { bytes: number; limit: number } = {
      stage,
      reason: error.message,
      code: error.code,
      partition,
      subject: this.#outSubject,
      eventId: output.msgId,
      ...where,
      bytes,
      limit,
      payload: text,
      at: new Date(this.#clock.now()).toISOString(),
    };
    await bus.deadLetter(pipeline, letter);
    this.#deadLettered += 1;
    this.#countDeadLetter(error.code);
  }

  #countDeadLetter(code: string): void {
    this.counters.deadLetters.set(code, (this.counters.deadLetters.get(code) ?? 0) + 1);
  }

  async #deadLetter(letter: DeadLetterRequest): Promise<void> {
    const { bus, pipeline, partition, stage } = this.#options;
    await bus.deadLetter(pipeline, {
      stage,
      reason: letter.reason,
      code: letter.code,
      partition,
      subject: letter.message.subject,
      ...(letter.eventId !== undefined ? { eventId: letter.eventId } : {}),
      ...(letter.table !== undefined ? { table: letter.table } : {}),
      ...(letter.lsn !== undefined ? { lsn: letter.lsn } : {}),
      payload: new TextDecoder().decode(letter.item ?? letter.message.data),
      at: new Date(this.#clock.now()).toISOString(),
    });
    this.#deadLettered += 1;
    this.#countDeadLetter(letter.code);
  }
}
