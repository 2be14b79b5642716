/**
 * The dedup-gate's transform for one partition (ordered.<p> → deduped.<p>):
 *
 *  - watermarks always pass;
 *  - an event at or below the last key this gate has passed or dropped is a replay of
 *    something already decided: dropped without asking Redis (the ordered stream is
 *    strictly increasing, so only a repeat can be there — this also holds when Redis lost
 *    its keys, PITFALLS 15);
 *  - every other event is claimed in the store with its input sequence (DedupStore):
 *    new or redelivery → forward, duplicate → drop and count.
 *
 * Input messages carry many events (@cdc/core wire.ts); each input message's forwarded
 * events go out as ONE message (the same bytes per event), with Cdc-Resume-Seq = its input
 * sequence + 1 and Cdc-Last-Key = the highest key decided so far. Duplicates, replays and
 * redeliveries are counted (GateCounters), not logged one line per event. If the store cannot answer, the whole batch fails and
 * nothing is forwarded unchecked; the relay retries it from the checkpoint.
 */
import { BatchCutter, Headers, batchHeaders, batchMsgId, compareOrderKeys, decodeOrderedMessage, formatOrderKey, parseOrderKey, poisonIdentity, type OrderKey, type SoleEvent } from '@cdc/core';
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

export interface DedupTransformOptions {
  readonly store: DedupStore;
  readonly partition: number;
  readonly logger: Logger;
}

export class DedupTransform implements RelayTransform {
  readonly #options: DedupTransformOptions;
  readonly counters: GateCounters = { forwarded: 0, duplicates: 0, redeliveries: 0, belowLastKey: 0, watermarks: 0 };
  #lastKey: OrderKey | undefined;

  constructor(options: DedupTransformOptions) {
    this.#options = options;
  }

  get lastKey(): string | undefined {
    return this.#lastKey ? formatOrderKey(this.#lastKey) : undefined;
  }

  restore(checkpoint: RelayCheckpoint): void {
    try {
      this.#lastKey = checkpoint.lastKey === undefined ? undefined : parseOrderKey(checkpoint.lastKey);
    } catch {
      throw new BadCheckpointError(`deduped.${this.#options.partition}`, Headers.LastKey, checkpoint.lastKey ?? '');
    }
  }

  async process(batch: readonly BusMessage[]): Promise<StageResult> {
    type Step =
      | { kind: 'dead'; message: BusMessage; letter: DeadLetterRequest }
      | { kind: 'watermark'; message: BusMessage; bytes: Uint8Array; lamport: string }
      | { kind: 'replay'; message: BusMessage }
      | { kind: 'claim'; message: BusMessage; bytes: Uint8Array; key: OrderKey; claim: number; event: SoleEvent };

    // Decide what needs a lookup; the running key makes a repeat inside the batch a replay too.
    let running = this.#lastKey;
    const claims: DedupClaim[] = [];
    const steps: Step[] = [];
    for (const message of batch) {
      for (const item of decodeOrderedMessage(message.data)) {
        if (item.kind === 'poison') {
          steps.push({ kind: 'dead', message, letter: { message, item: item.bytes, reason: item.reason, code: item.code, ...poisonIdentity(item) } });
        } else if (item.kind === 'watermark') {
          steps.push({ kind: 'watermark', message, bytes: item.bytes, lamport: item.value.lamport });
        } else if (running && compareOrderKeys(item.key, running) <= 0) {
          steps.push({ kind: 'replay', message });
        } else {
          running = item.key;
          claims.push({ eventId: item.value.eventId, inputSeq: message.seq });
          steps.push({ kind: 'claim', message, bytes: item.bytes, key: item.key, claim: claims.length - 1, event: item.value });
        }
      }
    }

    // One round trip for the batch; throws (failing the batch) when the store cannot answer.
    const verdicts = claims.length > 0 ? await this.#options.store.check(claims) : [];

    const outputs: StageOutput[] = [];
    const deadLetters: DeadLetterRequest[] = [];
    const { partition } = this.#options;
    const seen = { duplicates: 0, redeliveries: 0, replays: 0 };
    let lastKey = this.#lastKey;
    // What goes out of the input message in hand: its forwarded events as one message.
    let cutter = new BatchCutter({ maxEvents: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER });
    let from: BusMessage | undefined;
    // A message's outputs all re-read it on restart (resume = its seq) but the last, which
    // moves past it (seq + 1); the last-key filter drops what was decided already.
    const emit = (message: BusMessage, done: boolean): void => {
      const taken = cutter.take();
      if (!taken) return;
      outputs.push({
        msgId: batchMsgId(`d:${partition}`, taken),
        payload: taken.data,
        headers: batchHeaders(taken),
        events: taken.count,
        ...(taken.sole?.traceId ? { traceId: taken.sole.traceId } : {}),
        resumeSeq: done ? message.seq + 1 : message.seq,
        lastKey: lastKey ? formatOrderKey(lastKey) : undefined,
      });
    };
    for (const [index, step] of steps.entries()) {
      const message = step.message;
      if (from !== message) {
        cutter = new BatchCutter({ maxEvents: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER });
        from = message;
      }
      const lastOfMessage = steps[index + 1]?.message !== message;
      if (step.kind === 'dead') {
        deadLetters.push(step.letter);
      } else if (step.kind === 'watermark') {
        emit(message, false);
        this.counters.watermarks += 1;
        outputs.push({
          msgId: message.header(Headers.MsgId) ?? `wm:${partition}:${step.lamport}`,
          payload: step.bytes,
          resumeSeq: lastOfMessage ? message.seq + 1 : message.seq,
          lastKey: lastKey ? formatOrderKey(lastKey) : undefined,
        });
      } else if (step.kind === 'replay') {
        seen.replays += 1;
      } else {
        lastKey = step.key;
        const verdict = verdicts[step.claim] as DedupVerdict;
        if (verdict === 'duplicate') {
          seen.duplicates += 1;
        } else {
          if (verdict === 'redelivery') seen.redeliveries += 1;
          cutter.add(step.bytes, step.key, step.event);
        }
      }
      if (lastOfMessage) emit(message, true);
    }
    this.counters.belowLastKey += seen.replays;
    this.counters.duplicates += seen.duplicates;
    this.counters.redeliveries += seen.redeliveries;
    this.counters.forwarded += claims.length - seen.duplicates;
    if (seen.duplicates + seen.redeliveries + seen.replays > 0) {
      // Counted, not logged one line per event (a replay can repeat thousands).
      this.#options.logger.debug({ input: batch.length, first_seq: batch[0]?.seq, ...seen }, 'duplicates dropped, redeliveries forwarded');
    }
    this.#lastKey = lastKey;
    return { outputs, deadLetters };
  }
}
