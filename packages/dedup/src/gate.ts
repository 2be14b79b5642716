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
 * Each output carries Cdc-Resume-Seq = its input sequence + 1 and Cdc-Last-Key = the
 * highest key decided so far. If the store cannot answer, the whole batch fails and
 * nothing is forwarded unchecked; the relay retries it from the checkpoint.
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
      | { kind: 'dead'; letter: DeadLetterRequest }
      | { kind: 'watermark'; message: BusMessage; lamport: string }
      | { kind: 'replay'; message: BusMessage; eventId: string }
      | { kind: 'claim'; message: BusMessage; eventId: string; traceId: string | undefined; key: OrderKey; claim: number };

    // Decide what needs a lookup; the running key makes a repeat inside the batch a replay too.
    let running = this.#lastKey;
    const claims: DedupClaim[] = [];
    const steps: Step[] = batch.map((message): Step => {
      const decoded = decodeOrdered(message);
      if (!decoded.ok) return { kind: 'dead', letter: { message, reason: decoded.reason, code: decoded.code } };
      const value = decoded.value;
      if (value.kind === 'watermark') return { kind: 'watermark', message, lamport: value.lamport };
      const key = orderKeyOf(value);
      if (running && compareOrderKeys(key, running) <= 0) return { kind: 'replay', message, eventId: value.eventId };
      running = key;
      claims.push({ eventId: value.eventId, inputSeq: message.seq });
      return { kind: 'claim', message, eventId: value.eventId, traceId: value.traceId, key, claim: claims.length - 1 };
    });

    // One round trip for the batch; throws (failing the batch) when the store cannot answer.
    const verdicts = claims.length > 0 ? await this.#options.store.check(claims) : [];

    const outputs: StageOutput[] = [];
    const deadLetters: DeadLetterRequest[] = [];
    let lastKey = this.#lastKey;
    const { logger, partition } = this.#options;
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
          lastKey: lastKey ? formatOrderKey(lastKey) : undefined,
        });
        continue;
      }
      if (step.kind === 'replay') {
        this.counters.belowLastKey += 1;
        logger.debug({ event_id: step.eventId, input_seq: step.message.seq }, 'replay at or below the last key: dropped');
        continue;
      }
      lastKey = step.key;
      const verdict = verdicts[step.claim] as DedupVerdict;
      if (verdict === 'duplicate') {
        this.counters.duplicates += 1;
        logger.info({ event_id: step.eventId, input_seq: step.message.seq }, 'duplicate event dropped');
        continue;
      }
      if (verdict === 'redelivery') {
        this.counters.redeliveries += 1;
        logger.info({ event_id: step.eventId, input_seq: step.message.seq }, 'redelivery of an event this gate claimed: forwarded again');
      }
      this.counters.forwarded += 1;
      const traceId = step.message.header(Headers.TraceId) ?? step.traceId;
      outputs.push({
        msgId: step.eventId,
        payload: step.message.data,
        resumeSeq: step.message.seq + 1,
        lastKey: formatOrderKey(step.key),
        ...(traceId ? { traceId } : {}),
      });
    }
    this.#lastKey = lastKey;
    return { outputs, deadLetters };
  }
}
