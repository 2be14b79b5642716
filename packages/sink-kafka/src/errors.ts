/**
 * Kafka failures in our words. kafkajs reports broker errors as KafkaJSProtocolError
 * with a `type` (INVALID_PRODUCER_EPOCH, …), sometimes wrapped (retries exceeded) with
 * the original under `cause` / `originalError`; `kafkaErrorTypes` walks that chain.
 *
 * The one distinction the committer lives by (PITFALLS 18): a fenced producer must stop
 * and never re-initialise (that would fence its successor with stale state); any other
 * failure leaves the outcome of the transaction unknown, so the producer is re-created
 * and the checkpoint re-read from Kafka before anything is sent again.
 */
import { CdcError } from '@cdc/core';

/** Broker answers meaning "another producer owns this transactional id now". */
const FENCED_TYPES = new Set(['INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED', 'INVALID_PRODUCER_ID_MAPPING']);
/** Kafka's error code 90 (PRODUCER_FENCED) is newer than kafkajs 2.2's table. */
const FENCED_CODES = new Set([47, 90]);

interface KafkaLikeError {
  readonly type?: unknown;
  readonly code?: unknown;
  readonly cause?: unknown;
  readonly originalError?: unknown;
  readonly name?: unknown;
}

/** Every broker error type and code along the cause chain (bounded). */
export function kafkaErrorTypes(error: unknown): { types: string[]; codes: number[] } {
  const types: string[] = [];
  const codes: number[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 8 && current !== null && typeof current === 'object'; depth++) {
    const e = current as KafkaLikeError;
    if (typeof e.type === 'string') types.push(e.type);
    if (typeof e.code === 'number') codes.push(e.code);
    current = e.originalError ?? e.cause;
  }
  return { types, codes };
}

export function isFencedError(error: unknown): boolean {
  if (error instanceof KafkaFencedError) return true;
  const { types, codes } = kafkaErrorTypes(error);
  return types.some((type) => FENCED_TYPES.has(type)) || codes.some((code) => FENCED_CODES.has(code));
}

export function isMessageTooLarge(error: unknown): boolean {
  return kafkaErrorTypes(error).types.some((type) => type === 'MESSAGE_TOO_LARGE' || type === 'RECORD_LIST_TOO_LARGE');
}

/** Another committer initialised the same transactional id: this one is a zombie and stops. */
export class KafkaFencedError extends CdcError {
  constructor(readonly transactionalId: string, cause?: unknown) {
    super(
      `Kafka fenced transactional id ${transactionalId}: a newer committer owns it; this one stops without writing`,
      { code: 'KAFKA_FENCED', retriable: false, cause, context: { transactionalId } },
    );
  }
}

/** A batch's Kafka transaction failed with an unknown outcome; the producer is re-created and the batch re-read. */
export class KafkaTransactionError extends CdcError {
  constructor(readonly transactionalId: string, step: string, cause?: unknown) {
    super(`Kafka transaction of ${transactionalId} failed at ${step}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      code: 'KAFKA_TRANSACTION_FAILED',
      retriable: true,
      cause,
      context: { transactionalId, step },
    });
  }
}

/** A topic the routing names could not be created (or its metadata not read). */
export class TopicCreationError extends CdcError {
  constructor(readonly topic: string, cause?: unknown) {
    super(
      `Kafka topic ${JSON.stringify(topic)} does not exist and could not be created: ${cause instanceof Error ? cause.message : String(cause)} ` +
        '(create it, allow the committer to create topics, or route the table elsewhere with KAFKA_TOPIC_ROUTES)',
      { code: 'KAFKA_TOPIC_NOT_CREATED', retriable: true, cause, context: { topic } },
    );
  }
}

/** One record larger than the broker takes: it is dead-lettered, the partition moves on. */
export class RecordTooLargeError extends CdcError {
  constructor(readonly bytes: number, readonly limit: number, context: { table: string; eventId: string; lsn: string; topic: string }) {
    super(`Kafka record of ${bytes} bytes for topic ${context.topic} exceeds the limit of ${limit} bytes (message.max.bytes)`, {
      code: 'KAFKA_RECORD_TOO_LARGE',
      retriable: false,
      context: { ...context, bytes, limit },
    });
  }
}
