/**
 * JetStream layout of one pipeline. One stream per stage; one subject per partition.
 *   cdc.<pipeline>.raw.<p>      reader → lamport-reorderer   (RawMessage)
 *   cdc.<pipeline>.ordered.<p>  lamport-reorderer → dedup-gate (OrderedMessage)
 *   cdc.<pipeline>.deduped.<p>  dedup-gate → committer        (OrderedMessage)
 *   cdc.<pipeline>.dlq.<stage>  poison events with the reason (DeadLetter)
 */
export type Stage = 'raw' | 'ordered' | 'deduped';

export const STAGES: readonly Stage[] = ['raw', 'ordered', 'deduped'];

const PIPELINE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export function assertPipelineName(name: string): string {
  if (!PIPELINE_NAME.test(name)) {
    throw new RangeError(`pipeline name ${JSON.stringify(name)} must match ${PIPELINE_NAME}`);
  }
  return name;
}

export function stageSubject(pipeline: string, stage: Stage, partition: number): string {
  return `cdc.${pipeline}.${stage}.${partition}`;
}

export function stageWildcard(pipeline: string, stage: Stage): string {
  return `cdc.${pipeline}.${stage}.*`;
}

export function streamName(pipeline: string, stage: Stage | 'dlq'): string {
  return `CDC_${pipeline.replace(/-/g, '_')}_${stage.toUpperCase()}`;
}

export function dlqSubject(pipeline: string, stage: string): string {
  return `cdc.${pipeline}.dlq.${stage}`;
}

/** Headers every stage reads and writes. */
export const Headers = {
  /** JetStream's own dedup id. */
  MsgId: 'Nats-Msg-Id',
  /** Input stream sequence from which a stage restarts (its checkpoint lives in its output). */
  ResumeSeq: 'Cdc-Resume-Seq',
  /**
   * Last released order key, so a restarted stage drops what it already released; on a
   * batch it is >= the key of every event the message carries (see wire.ts).
   */
  LastKey: 'Cdc-Last-Key',
  /** Change events in a batch message. */
  Count: 'Cdc-Count',
  /** Order key of a batch message's first change event. */
  FirstKey: 'Cdc-First-Key',
  TraceId: 'Cdc-Trace-Id',
} as const;

export interface DeadLetter {
  readonly stage: string;
  /**
   * The sink whose committer refused the event (a committer's letters only). Two sinks
   * may refuse the same event: the sink is part of the letter's id, so their letters never
   * dedupe each other (PITFALLS 24).
   */
  readonly sink?: string;
  readonly reason: string;
  readonly code: string;
  readonly table?: string;
  readonly lsn?: string;
  readonly eventId?: string;
  readonly partition?: number;
  readonly subject?: string;
  readonly column?: string;
  /** The original payload, as text, so nothing is lost. */
  readonly payload: string;
  /** Set when `payload` was cut to fit the bus's message limit; `payloadBytes` is its original size. */
  readonly payloadTruncated?: boolean;
  readonly payloadBytes?: number;
  readonly at: string;
}

/**
 * The `Nats-Msg-Id` of a dead letter: stage, sink and event, so a replay of the same
 * refusal is absorbed by JetStream while letters of different stages or sinks are not.
 * Undefined without an event id (nothing to dedupe by).
 */
export function deadLetterId(letter: Pick<DeadLetter, 'stage' | 'sink' | 'eventId'>): string | undefined {
  if (!letter.eventId) return undefined;
  return letter.sink === undefined ? `dlq:${letter.stage}:${letter.eventId}` : `dlq:${letter.stage}:${letter.sink}:${letter.eventId}`;
}
