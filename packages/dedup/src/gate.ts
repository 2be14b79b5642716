/**
 * The dedup decision, per event, for a whole batch at once (DedupDecider), and the
 * dedup-gate's relay transform for one partition (ordered.<p> → deduped.<p>) built on it.
 *
 * Input messages carry many events (@cdc/core wire.ts); the transform hands every event of
 * a fetched batch of messages to decide() at once (one Redis round trip), then sends the
 * forwarded events out many per message (the same bytes per event): an input message
 * whose every event passes goes out as it came when it is at least half full, and small
 * ones (a paced source's few events per message) are joined, up to the wire's limits —
 * each message costs every hop the same, whatever it carries.
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
 * Watermarks always pass, after everything before them. Each output carries Cdc-Last-Key =
 * the highest key decided so far, and Cdc-Resume-Seq = the sequence after the last input
 * message it completes — or that message's own sequence when it is cut inside it (the
 * restart re-reads it; the last-key filter drops what was decided already).
 */
import { BatchCutter, Headers, batchHeaders, batchMsgId, compareOrderKeys, decodeOrderedRefs, formatOrderKey, parseOrderKey, poisonIdentity, type OrderKey, type EventRef, type ItemOrigin } from '@cdc/core';
import type { BusMessage } from '@cdc/bus';
import { BadCheckpointError, type DeadLetterRequest, type RelayCheckpoint, type RelayTransform, type StageOutput, type StageResult } from '@cdc/relay';
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
      | { kind: 'dead'; message: BusMessage; letter: DeadLetterRequest }
      | { kind: 'watermark'; message: BusMessage; bytes: Uint8Array; lamport: string }
      | { kind: 'event'; message: BusMessage; bytes: Uint8Array; key: OrderKey; index: number; event: EventRef; origin: ItemOrigin | undefined };

    // Every event of the fetched batch goes to the decider at once: one Redis round trip.
    const events: GateEvent[] = [];
    const steps: Step[] = [];
    for (const message of batch) {
      // Refs from each message's index line: the gate never parses an event it forwards.
      for (const item of decodeOrderedRefs(message.data)) {
        if (item.kind === 'poison') {
          steps.push({ kind: 'dead', message, letter: { message, item: item.bytes, reason: item.reason, code: item.code, ...poisonIdentity(item) } });
        } else if (item.kind === 'watermark') {
          steps.push({ kind: 'watermark', message, bytes: item.bytes, lamport: item.value.lamport });
        } else {
          events.push({ eventId: item.ref.eventId, key: item.key, commitTs: item.ref.commitTs ?? '', inputSeq: message.seq });
          steps.push({ kind: 'event', message, bytes: item.bytes, key: item.key, index: events.length - 1, event: item.ref, origin: item.origin });
        }
      }
    }
    const before = this.decider.lastKey;
    // Throws (failing the batch, nothing forwarded) when the store cannot answer.
    const decisions = events.length > 0 ? await this.decider.decide(events) : [];

    const outputs: StageOutput[] = [];
    const deadLetters: DeadLetterRequest[] = [];
    const { partition } = this.#options;
    // The highest key decided so far (forwarded or dropped as a duplicate; a replay does not move it).
    let lastKey = before;
    // What goes out: forwarded events, joined across the batch's small input messages (a
    // paced source sends a few events per message; each message costs every hop the same).
    const cutter = new BatchCutter();
    // An output's checkpoint: `resume` = the input sequence to re-read from (a message
    // whose events are not all out yet is re-read; the last-key filter drops what was
    // decided already) and the last key decided — both as they stand where it is cut.
    const emit = (resume: number, key: OrderKey | undefined): void => {
      const taken = cutter.take();
      if (!taken) return;
      outputs.push({
        msgId: batchMsgId(`d:${partition}`, taken),
        payload: taken.data,
        headers: batchHeaders(taken),
        events: taken.count,
        ...(taken.sole?.traceId ? { traceId: taken.sole.traceId } : {}),
        resumeSeq: resume,
        lastKey: key ? formatOrderKey(key) : undefined,
      });
    };
    for (let index = 0; index < steps.length; index++) {
      const step = steps[index] as Step;
      const message = step.message;
      const next = steps[index + 1];
      const lastOfMessage = next?.message !== message;
      if (step.kind === 'dead') {
        deadLetters.push(step.letter);
      } else if (step.kind === 'watermark') {
        // Everything before a watermark goes out before it.
        emit(message.seq, lastKey);
        this.counters.watermarks += 1;
        outputs.push({
          msgId: message.header(Headers.MsgId) ?? `wm:${partition}:${step.lamport}`,
          payload: step.bytes,
          resumeSeq: lastOfMessage ? message.seq + 1 : message.seq,
          lastKey: lastKey ? formatOrderKey(lastKey) : undefined,
        });
      } else {
        const decision = decisions[step.index] as GateDecision;
        if (forwards(decision)) {
          // Full: what is in hand goes first, with the checkpoint as it was before this
          // event (this message is re-read from its start; this event is not decided in it).
          if (cutter.wouldOverflow(step.bytes.length)) emit(message.seq, lastKey);
          // A message whose every event passes goes out as it came (BatchCutter, ItemOrigin).
          if (cutter.add(step.bytes, step.key, step.event, step.origin)) emit(lastOfMessage ? message.seq + 1 : message.seq, step.key);
        }
        if (decision !== 'replay') lastKey = step.key;
      }
      // At a message's end: out, unless a small message in hand can be joined by the next one's events.
      if (lastOfMessage && (next === undefined || cutter.halfFull)) emit(message.seq + 1, lastKey);
    }
    return { outputs, deadLetters };
  }
}
