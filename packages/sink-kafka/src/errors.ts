/**
 * Kafka failures in our words. @platformatic/kafka reports a broker error as a
 * ProtocolError with `apiId` (INVALID_PRODUCER_EPOCH, …) and `apiCode`, often inside a
 * MultipleErrors (an AggregateError: `errors`) or under `cause`; `kafkaErrorTypes`
 * walks all of them.
 *
 * The one distinction the committer lives by (PITFALLS 18): a fenced producer must stop
 * and never re-initialise (that would fence its successor with stale state); any other
 * failure leaves the outcome of the transaction unknown, so the producer is re-created
 * and the checkpoint re-read from Kafka before anything is sent again.
 */
import { CdcError } from '@cdc/core';

/** Broker answers meaning "another producer owns this transactional id now". */
const FENCED_TYPES = new Set(['INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED', 'INVALID_PRODUCER_ID_MAPPING']);
/** The same by error code (47 INVALID_PRODUCER_EPOCH, 90 PRODUCER_FENCED, 53, 49). */
const FENCED_CODES = new Set([47, 90, 53, 49]);

interface KafkaLikeError {
  readonly apiId?: unknown;
  readonly apiCode?: unknown;
  readonly type?: unknown;
  readonly code?: unknown;
  readonly canRetry?: unknown;
  readonly cause?: unknown;
  readonly errors?: unknown;
}

/** The error, the errors it aggregates and their causes, breadth first (bounded: 32). */
export function* errorChain(error: unknown): Generator<KafkaLikeError> {
  const queue: unknown[] = [error];
  for (let seen = 0; seen < 32 && queue.length > 0; seen++) {
    const current = queue.shift();
    if (current === null || typeof current !== 'object') continue;
    const e = current as KafkaLikeError;
    yield e;
    if (Array.isArray(e.errors)) queue.push(...(e.errors as unknown[]));
    if (e.cause !== undefined) queue.push(e.cause);
  }
}

/** Every broker error id and code in the error chain. */
export function kafkaErrorTypes(error: unknown): { types: string[]; codes: number[] } {
  const types: string[] = [];
  const codes: number[] = [];
  for (const e of errorChain(error)) {
    if (typeof e.apiId === 'string') types.push(e.apiId);
    if (typeof e.type === 'string') types.push(e.type);
    if (typeof e.apiCode === 'number') codes.push(e.apiCode);
    if (typeof e.code === 'number') codes.push(e.code);
  }
  return { types, codes };
}

export function isFencedError(error: unknown): boolean {
  if (error instanceof KafkaFencedError) return true;
  const { types, codes } = kafkaErrorTypes(error);
  return types.some((type) => FENCED_TYPES.has(type)) || codes.some((code) => FENCED_CODES.has(code));
}

/** The broker refused our credentials (or offers none of our mechanism): retrying cannot help. */
export function isAuthenticationError(error: unknown): boolean {
  for (const e of errorChain(error)) {
    if (e.code === 'PLT_KFK_AUTHENTICATION' || e.apiId === 'SASL_AUTHENTICATION_FAILED' || e.apiId === 'UNSUPPORTED_SASL_MECHANISM') return true;
  }
  return false;
}

/** A failure the client marks as passing (a moved leader, a lost connection, a timeout): try again after new metadata. */
export function isRetriableKafkaError(error: unknown): boolean {
  for (const e of errorChain(error)) {
    if (e.canRetry === true || e.code === 'PLT_KFK_NETWORK' || e.code === 'PLT_KFK_TIMEOUT') return true;
  }
  return false;
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

/** The brokers refused the pipeline's credentials: one clear line, no retries. */
export class KafkaAuthenticationError extends CdcError {
  constructor(brokers: string, security: { protocol: string; mechanism?: string; user?: string }, cause?: unknown) {
    super(
      `Kafka at ${brokers} refused authentication (${security.protocol}${security.mechanism ? `, SASL ${security.mechanism}` : ''}${security.user ? `, user ${JSON.stringify(security.user)}` : ''}): ` +
        'check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD',
      { code: 'KAFKA_AUTHENTICATION_FAILED', retriable: false, cause, context: { brokers, ...security } },
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
