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
  /** Last released order key, so a restarted stage drops what it already released. */
  LastKey: 'Cdc-Last-Key',
  TraceId: 'Cdc-Trace-Id',
} as const;

export interface DeadLetter {
  readonly stage: string;
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
