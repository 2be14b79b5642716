/**
 * The lamport-reorderer stage for one partition: `raw.<p>` → LamportMerger → `ordered.<p>`,
 * run by a Relay (checkpoint in the output headers, ordered reader, acked publishes).
 *
 * Outputs: released events forwarded byte for byte, many per message (@cdc/core wire.ts),
 * Nats-Msg-Id from the message's first and last positions; after them one
 * PartitionHeartbeat with Nats-Msg-Id `wm:<partition>:<lamport>`. Dead letters, one item
 * each (its neighbours go on): input that is not a raw message, events of a source not in
 * SOURCES, and late events.
 */
import { REORDERER_DEFAULTS } from './defaults.ts';
import { BadCheckpointError, Relay, type DeadLetterRequest, type RelayCheckpoint, type RelayTransform, type StageOutput, type StageResult } from '@cdc/relay';
import { BatchCutter, Headers, batchHeaders, batchMsgId, decodeOrderedMessage, decodeRawMessage, decodeRawRefs, parseOrderKey, type EventRef, type ItemOrigin, type PartitionHeartbeat, poisonIdentity, standaloneItem } from '@cdc/core';
import type { Bus, BusMessage } from '@cdc/bus';
import type { Logger } from '@cdc/runtime';
import { LamportMerger, createCounters, type MergerCounters, type MergerHealth, type Released, type ReleasedEvent } from './merger.ts';

export const REORDERER_STAGE = 'lamport-reorderer';

export interface ReorderTransformOptions {
  readonly partition: number;
  readonly sources: readonly string[];
  readonly maxBuffered: number;
  readonly logger: Logger;
  /** Events per output message (default WIRE_DEFAULTS.batchMaxEvents). */
  readonly batchMaxEvents?: number | undefined;
  /** Encoded bytes per output message (default WIRE_DEFAULTS.batchMaxBytes). */
  readonly batchMaxBytes?: number | undefined;
}

/**
 * A refused event's letter: the whole event (its item with the index's context, so it can
 * be replayed alone), its table and LSN (read from it: a rare path; refs carry no LSN).
 */
function refusedChange(ref: EventRef, bytes: Uint8Array): { item: Uint8Array; eventId: string; table?: string; lsn?: string } {
  const item = standaloneItem(bytes, ref);
  const [full] = decodeRawMessage(item);
  return full?.kind === 'change' ? { item, eventId: ref.eventId, table: full.value.table, lsn: full.value.lsn } : { item, eventId: ref.eventId };
}

/** What the merger holds per event: its bytes, and where in its input message they were. */
export interface Forwarded {
  readonly bytes: Uint8Array;
  readonly origin: ItemOrigin | undefined;
}

export class ReorderTransform implements RelayTransform {
  readonly #options: ReorderTransformOptions;
  readonly #counters: MergerCounters;
  readonly #warnedSources = new Set<string>();
  #merger: LamportMerger<Forwarded>;

  constructor(options: ReorderTransformOptions) {
    this.#options = options;
    this.#counters = createCounters(options.sources);
    this.#merger = this.#newMerger();
  }

  get merger(): LamportMerger<Forwarded> {
    return this.#merger;
  }

  stats(): MergerCounters {
    return this.#counters;
  }

  health(): MergerHealth {
    return this.#merger.health();
  }

  restore(checkpoint: RelayCheckpoint): void {
    // A fresh merger each time: the state is rebuilt from the input, never patched.
    this.#merger = this.#newMerger();
    let lastWatermark: PartitionHeartbeat | undefined;
    if (checkpoint.last) {
      const items = decodeOrderedMessage(checkpoint.last.data);
      const only = items.length === 1 ? items[0] : undefined;
      if (only?.kind === 'watermark') lastWatermark = only.value;
    }
    if (checkpoint.lastKey !== undefined) {
      try {
        parseOrderKey(checkpoint.lastKey);
      } catch {
        throw new BadCheckpointError(`ordered.${this.#options.partition}`, Headers.LastKey, checkpoint.lastKey);
      }
    }
    this.#merger.restore({ resumeSeq: checkpoint.resumeSeq, lastKey: checkpoint.lastKey, lastWatermark });
  }

  process(batch: readonly BusMessage[]): StageResult {
    const merger = this.#merger;
    const deadLetters: DeadLetterRequest[] = [];
    for (const message of batch) {
      // Refs from each message's index line: events are forwarded without being parsed.
      const items = decodeRawRefs(message.data);
      let consumed = false;
      for (const item of items) {
        if (item.kind === 'poison') {
          deadLetters.push({ message, item: item.bytes, reason: item.reason, code: item.code, ...poisonIdentity(item) });
          continue;
        }
        consumed = true;
        const result =
          item.kind === 'change'
            ? merger.accept(item.ref, message.seq, { bytes: item.bytes, origin: item.origin }, item.key)
            : merger.accept(item.value, message.seq, { bytes: item.bytes, origin: undefined });
        if (result === 'late') {
          // Cannot be placed: a watermark above it is already published. A correct reader never does this.
          deadLetters.push({
            message,
            item: item.bytes,
            reason: `late event: lamport ${item.kind === 'change' ? item.ref.lamport : item.value.lamport} <= released watermark ${merger.releasedWatermark}`,
            code: 'LATE_EVENT',
            ...(item.kind === 'change' ? refusedChange(item.ref, item.bytes) : {}),
          });
        } else if (result === 'unknown-source') {
          if (item.kind === 'change') {
            deadLetters.push({
              message,
              reason: `source ${item.ref.source} is not in SOURCES (${this.#options.sources.join(',')}): its events cannot be ordered`,
              code: 'UNKNOWN_SOURCE',
              ...refusedChange(item.ref, item.bytes),
            });
          } else if (!this.#warnedSources.has(item.value.source)) {
            this.#warnedSources.add(item.value.source);
            this.#options.logger.warn({ source: item.value.source, sources: this.#options.sources }, 'heartbeat from a source not in SOURCES: ignored');
          }
        }
      }
      // Nothing in it could be taken: its sequence still counts as read, so resume passes it.
      if (!consumed) merger.skip(message.seq);
    }
    const outputs = this.#outputs(merger.release());
    const reopenFrom = merger.reopenFrom();
    if (reopenFrom !== undefined) merger.rewind(reopenFrom);
    return { outputs, deadLetters, ...(reopenFrom !== undefined ? { reopenFrom } : {}) };
  }

  /**
   * Released events go out many per message (BatchCutter: count and bytes), cut before
   * every watermark. A message's checkpoint is its last event's: every event before it in
   * the message is stored with it, and that event's resume sequence already accounts for
   * whatever is released after it.
   */
  #outputs(released: readonly Released<Forwarded>[]): StageOutput[] {
    const outputs: StageOutput[] = [];
    const cutter = new BatchCutter({ maxEvents: this.#options.batchMaxEvents, maxBytes: this.#options.batchMaxBytes });
    let last: ReleasedEvent<Forwarded> | undefined;
    const cut = (): void => {
      const taken = cutter.take();
      if (!taken || !last) return;
      outputs.push({
        msgId: batchMsgId(`o:${this.#options.partition}`, taken),
        payload: taken.data,
        headers: batchHeaders(taken),
        events: taken.count,
        ...(taken.sole?.traceId ? { traceId: taken.sole.traceId } : {}),
        resumeSeq: last.resumeSeq,
        lastKey: last.lastKey,
      });
      last = undefined;
    };
    for (const item of released) {
      if (item.kind === 'change') {
        // Where an indexed input message starts, a message in hand that is half full goes
        // first, so a large input message released whole goes out whole; small ones are joined.
        if (cutter.wouldOverflow(item.payload.bytes.length) || (item.payload.origin?.index === 0 && cutter.halfFull)) cut();
        // An input message released whole, alone, goes out as it came (BatchCutter, ItemOrigin).
        const full = cutter.add(item.payload.bytes, item.key, item.event, item.payload.origin);
        last = item;
        if (full) cut();
        continue;
      }
      cut();
      outputs.push({
        msgId: `wm:${this.#options.partition}:${item.watermark.lamport}`,
        payload: item.watermark,
        resumeSeq: item.resumeSeq,
        lastKey: item.lastKey,
      });
    }
    cut();
    return outputs;
  }

  #newMerger(): LamportMerger<Forwarded> {
    return new LamportMerger<Forwarded>({
      sources: this.#options.sources,
      maxBuffered: this.#options.maxBuffered,
      counters: this.#counters,
    });
  }
}

export interface ReordererOptions {
  readonly bus: Bus;
  readonly pipeline: string;
  readonly partition: number;
  readonly sources: readonly string[];
  readonly maxBuffered: number;
  readonly batchMax: number;
  readonly batchLingerMs: number;
  /** Events per output message (default WIRE_DEFAULTS.batchMaxEvents, @cdc/core). */
  readonly outputMaxEvents?: number | undefined;
  /** Encoded bytes per output message (default WIRE_DEFAULTS.batchMaxBytes). */
  readonly outputMaxBytes?: number | undefined;
  readonly logger: Logger;
  /** How often the per-source counters are logged (default REORDERER_DEFAULTS.statsIntervalMs; 0 = never). */
  readonly statsIntervalMs?: number;
  readonly retry?: { initialDelayMs: number; maxDelayMs: number };
  readonly signal?: AbortSignal;
}

/** A running reorderer partition: its relay plus what it knows about ordering. */
export class Reorderer {
  readonly relay: Relay;
  readonly transform: ReorderTransform;
  readonly partition: number;
  readonly #timer: NodeJS.Timeout | undefined;

  private constructor(relay: Relay, transform: ReorderTransform, partition: number, timer: NodeJS.Timeout | undefined) {
    this.relay = relay;
    this.transform = transform;
    this.partition = partition;
    this.#timer = timer;
  }

  static create(options: ReordererOptions): Reorderer {
    const logger = options.logger.child({ component: REORDERER_STAGE, partition: options.partition });
    const transform = new ReorderTransform({
      partition: options.partition,
      sources: options.sources,
      maxBuffered: options.maxBuffered,
      logger,
      batchMaxEvents: options.outputMaxEvents,
      batchMaxBytes: options.outputMaxBytes,
    });
    const relay = Relay.create({
      bus: options.bus,
      pipeline: options.pipeline,
      partition: options.partition,
      stage: REORDERER_STAGE,
      input: 'raw',
      output: 'ordered',
      transform,
      logger: options.logger,
      batchMax: options.batchMax,
      batchLingerMs: options.batchLingerMs,
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const interval = options.statsIntervalMs ?? REORDERER_DEFAULTS.statsIntervalMs;
    const timer = interval > 0 ? setInterval(() => logStats(logger, transform), interval) : undefined;
    timer?.unref();
    const reorderer = new Reorderer(relay, transform, options.partition, timer);
    void relay.closed().then(() => {
      if (timer) clearInterval(timer);
      logStats(logger, transform);
    });
    return reorderer;
  }

  stats(): MergerCounters {
    return this.transform.stats();
  }

  health(): MergerHealth & { relay: ReturnType<Relay['health']> } {
    return { ...this.transform.health(), relay: this.relay.health() };
  }

  closed(): Promise<Error | undefined> {
    return this.relay.closed();
  }

  /** Finishes the batch in hand and flushes; idempotent. The error, if any, is closed()'s. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.relay.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** One event per source: what the operator looks at when ordering looks wrong. */
function logStats(logger: Logger, transform: ReorderTransform): void {
  const counters = transform.stats();
  const health = transform.health();
  const watermarks = transform.merger.watermarks();
  for (const [source, stats] of Object.entries(counters.sources)) {
    logger.info(
      {
        source,
        watermark: watermarks[source],
        out_of_order: stats.outOfOrder,
        duplicates: stats.duplicates,
        replayed: stats.replayed,
        late: stats.late,
        refused: stats.refused,
        evicted: stats.evicted,
        accepted: stats.accepted,
        progress: stats.progress,
      },
      'reorder stats',
    );
  }
  logger.info(
    {
      buffered: health.buffered,
      status: health.status,
      waiting_for: health.waitingFor,
      released: counters.released,
      watermarks: counters.watermarks,
      reopens: counters.reopens,
      unknown_source: counters.unknownSource,
      released_watermark: health.releasedWatermark,
    },
    'reorder buffer',
  );
}

