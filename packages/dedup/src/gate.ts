/**
 * The dedup decision, per event, for a whole batch at once (DedupDecider), and the
 * dedup-gate's relay transform for one partition (ordered.<p> → deduped.<p>) built on it.
 *
 * Per event, in input order:
 *  - at or below the last key this gate has passed or dropped → `replay`: something
 *    already decided, dropped without asking Redis (the ordered stream is strictly
 *    increasing, so only a repeat can be there — this also holds when Redis lost its keys,
 *    PITFALLS 15; and it catches a repeat inside one batch or one multi-event message);
 *  - every other event is claimed in the store with its input sequence (DedupStore), all
 *    of a batch in ONE store call: `new` or `redelivery` → forward, `duplicate` → drop.
 *
 * If the store cannot answer, decide() rejects and changes nothing (no counter, no last
 * key): the relay fails the batch, forwards nothing unchecked and retries from its
 * checkpoint. Duplicates, redeliveries and replays are counted (stats, health) and
 * summarised in at most one debug line per batch — never a line per event.
 *
 * Watermarks always pass. Each output carries Cdc-Resume-Seq = its input sequence + 1 and
 * Cdc-Last-Key = the highest key decided so far.
 */
import { Headers, compareOrderKeys, formatOrderKey, orderKeyOf, parseOrderKey, type OrderKey } from '@cdc/core';
import type { BusMessage } from '@cdc/bus';
import { BadCheckpointError, decodeOrdered, type DeadLetterRequest, type RelayCheckpoint, type RelayTransform, type StageOutput, type StageResult } from '@cdc/relay';
import type { Logger } from '@cdc/runtime';
import type { DedupClaim, DedupStore, DedupVerdict } from './store.ts';

export interface GateCounters {
  forwarded: number;
  /** Claimed by another input message within the window. */
  duplicates: number;
  /** Claimed by this very input message before a crash: forwarded again. */
  redeliveries: number;
  /** At or below the last decided key: a replay, dropped without a lookup. */
  belowLastKey: number;
  watermarks: number;
}

/** One event to decide: its id, order key (computed once by the caller), commit time and the input message's sequence. */
export interface GateEvent {
  readonly eventId: string;
  readonly key: OrderKey;
  /** The event's `commitTs`: with `key.seq`, where the store keeps its claim. */
  readonly commitTs: string;
  /** Stream sequence of the input message carrying the event (shared by all events of one message). */
  readonly inputSeq: number;
}

/** `new` and `redelivery` are forwarded; `duplicate` and `replay` are dropped. */
export type GateDecision = DedupVerdict | 'replay';

export function forwards(decision: GateDecision): boolean {
  return decision === 'new' || decision === 'redelivery';
}

export interface DedupDeciderOptions {
  readonly store: DedupStore;
  readonly logger: Logger;
}

export class DedupDecider {
  readonly #options: DedupDeciderOptions;
  readonly counters: GateCounters = { forwarded: 0, duplicates: 0, redeliveries: 0, belowLastKey: 0, watermarks: 0 };
  #lastKey: OrderKey | undefined;

  constructor(options: DedupDeciderOptions) {
    this.#options = options;
  }

  /** The highest key decided so far (forwarded or dropped). */
  get lastKey(): OrderKey | undefined {
    return this.#lastKey;
  }

  /** Rebuilds the state from a checkpoint (the relay calls this at every (re)start). */
  restore(lastKey: OrderKey | undefined): void {
    this.#lastKey = lastKey;
  }

  /**
   * One decision per event, in order, with one store round trip for the batch. The
   * events must be in input order (the ordered stream: increasing order keys, repeats
   * aside). Rejects — and changes nothing — when the store cannot answer.
   */
  async decide(events: readonly GateEvent[]): Promise<GateDecision[]> {
    // The running key makes a repeat inside the batch a replay too.
    let running = this.#lastKey;
    const claims: DedupClaim[] = [];
    const claimOf: number[] = new Array<number>(events.length);
    for (let i = 0; i < events.length; i++) {
      const { eventId, key, inputSeq, commitTs } = events[i] as GateEvent;
      if (running && compareOrderKeys(key, running) <= 0) {
        claimOf[i] = -1;
        continue;
      }
      running = key;
      claimOf[i] = claims.push({ eventId, inputSeq, commitTs, seq: key.seq }) - 1;
    }
    const verdicts = claims.length > 0 ? await this.#options.store.check(claims) : [];

    const decisions: GateDecision[] = new Array<GateDecision>(events.length);
    let replays = 0;
    let duplicates = 0;
    let redeliveries = 0;
    for (let i = 0; i < events.length; i++) {
      const claim = claimOf[i] as number;
      const decision: GateDecision = claim < 0 ? 'replay' : (verdicts[claim] as DedupVerdict);
      decisions[i] = decision;
      if (decision === 'replay') replays += 1;
      else if (decision === 'duplicate') duplicates += 1;
      else if (decision === 'redelivery') redeliveries += 1;
    }
    const c = this.counters;
    c.belowLastKey += replays;
    c.duplicates += duplicates;
    c.redeliveries += redeliveries;
    c.forwarded += claims.length - duplicates;
    this.#lastKey = running;
    if (replays + duplicates + redeliveries > 0) {
      this.#options.logger.debug(
        { events: events.length, duplicates, redeliveries, replays, first_input_seq: events[0]?.inputSeq, last_input_seq: events.at(-1)?.inputSeq },
        'batch had duplicates, redeliveries or replays',
      );
    }
    return decisions;
  }
}

export interface DedupTransformOptions {
  readonly store: DedupStore;
  readonly partition: number;
  readonly logger: Logger;
}

export class DedupTransform implements RelayTransform {
  readonly #options: DedupTransformOptions;
  readonly decider: DedupDecider;

  constructor(options: DedupTransformOptions) {
    this.#options = options;
    this.decider = new DedupDecider({ store: options.store, logger: options.logger });
  }

  get counters(): GateCounters {
    return this.decider.counters;
  }

  get lastKey(): string | undefined {
    const key = this.decider.lastKey;
    return key ? formatOrderKey(key) : undefined;
  }

  restore(checkpoint: RelayCheckpoint): void {
    let lastKey: OrderKey | undefined;
    try {
      lastKey = checkpoint.lastKey === undefined ? undefined : parseOrderKey(checkpoint.lastKey);
    } catch {
      throw new BadCheckpointError(`deduped.${this.#options.partition}`, Headers.LastKey, checkpoint.lastKey ?? '');
    }
    this.decider.restore(lastKey);
  }

  async process(batch: readonly BusMessage[]): Promise<StageResult> {
    type Step =
      | { kind: 'dead'; letter: DeadLetterRequest }
      | { kind: 'watermark'; message: BusMessage; lamport: string; lastKey: OrderKey | undefined }
      | { kind: 'event'; message: BusMessage; eventId: string; traceId: string | undefined; key: OrderKey; index: number };

    // Every event of the fetched batch goes to the decider at once: one Redis round trip.
    const events: GateEvent[] = [];
    let running = this.decider.lastKey;
    const steps: Step[] = batch.map((message): Step => {
      const decoded = decodeOrdered(message);
      if (!decoded.ok) return { kind: 'dead', letter: { message, reason: decoded.reason, code: decoded.code } };
      const value = decoded.value;
      // A watermark carries the highest key decided before it (a replay does not move it).
      if (value.kind === 'watermark') return { kind: 'watermark', message, lamport: value.lamport, lastKey: running };
      const key = orderKeyOf(value);
      if (!running || compareOrderKeys(key, running) > 0) running = key;
      events.push({ eventId: value.eventId, key, commitTs: value.commitTs, inputSeq: message.seq });
      return { kind: 'event', message, eventId: value.eventId, traceId: value.traceId, key, index: events.length - 1 };
    });
    const decisions = events.length > 0 ? await this.decider.decide(events) : [];

    const outputs: StageOutput[] = [];
    const deadLetters: DeadLetterRequest[] = [];
    const { partition } = this.#options;
    for (const step of steps) {
      if (step.kind === 'dead') {
        deadLetters.push(step.letter);
        continue;
      }
      if (step.kind === 'watermark') {
        this.counters.watermarks += 1;
        outputs.push({
          msgId: step.message.header(Headers.MsgId) ?? `wm:${partition}:${step.lamport}`,
          payload: step.message.data,
          resumeSeq: step.message.seq + 1,
          lastKey: step.lastKey ? formatOrderKey(step.lastKey) : undefined,
        });
        continue;
      }
      if (!forwards(decisions[step.index] as GateDecision)) continue;
      const traceId = step.message.header(Headers.TraceId) ?? step.traceId;
      outputs.push({
        msgId: step.eventId,
        payload: step.message.data,
        resumeSeq: step.message.seq + 1,
        lastKey: formatOrderKey(step.key),
        ...(traceId ? { traceId } : {}),
      });
    }
    return { outputs, deadLetters };
  }
}
