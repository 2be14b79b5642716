import type { BusMessage } from '@cdc/bus';

/** What a stage finds in the last message of its output subject when it (re)starts. */
export interface RelayCheckpoint {
  /** Input stream sequence to read from (`Cdc-Resume-Seq`; 1 when the output is empty). */
  readonly resumeSeq: number;
  /** Last released order key (`Cdc-Last-Key`), in `formatOrderKey` text; undefined when none yet. */
  readonly lastKey: string | undefined;
  /** The last output message itself (a stage may restore more from it, e.g. a watermark). */
  readonly last: BusMessage | undefined;
}

/** One message to publish, with the checkpoint that is true once it is stored. */
export interface StageOutput {
  /** `Nats-Msg-Id`: from the batch's first and last positions (batchMsgId), or `wm:<partition>:<lamport>` for watermarks. */
  readonly msgId: string;
  /**
   * A wire message (@cdc/core wire.ts): items' bytes are forwarded as they are (events keep
   * fields we do not know); an object is JSON-encoded as one item.
   */
  readonly payload: Uint8Array | object;
  /** More headers (the batch bounds: Cdc-Count, Cdc-First-Key); the relay sets Cdc-Resume-Seq and Cdc-Last-Key. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Change events in the message (for metrics); default its Cdc-Count header, else 0 (a watermark). */
  readonly events?: number;
  /** Input sequence to restart from if this is the last stored output. */
  readonly resumeSeq: number;
  /** Last released order key if this is the last stored output. */
  readonly lastKey: string | undefined;
  readonly traceId?: string;
}

/** A message the stage cannot process: it goes to `cdc.<pipeline>.dlq.<stage>`. */
export interface DeadLetterRequest {
  readonly message: BusMessage;
  /** The one item refused, when the message carries several (default: the whole message). */
  readonly item?: Uint8Array;
  readonly reason: string;
  readonly code: string;
  readonly eventId?: string;
  readonly table?: string;
  readonly lsn?: string;
}

export interface StageResult {
  readonly outputs: readonly StageOutput[];
  readonly deadLetters: readonly DeadLetterRequest[];
  /** Reopen the input reader at this sequence once the outputs are durable (bounded buffers re-read). */
  readonly reopenFrom?: number;
}

/**
 * The part of a stage that differs: reorder, dedup. The relay calls `restore` at every
 * (re)start — the in-memory state is rebuilt from the output's checkpoint, never patched —
 * then `process` for each input batch, then `commit` once its outputs are acknowledged.
 */
export interface RelayTransform {
  restore(checkpoint: RelayCheckpoint): void | Promise<void>;
  process(batch: readonly BusMessage[], signal: AbortSignal): StageResult | Promise<StageResult>;
  commit?(): void;
}
