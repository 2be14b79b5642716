/**
 * @cdc/core — the words every other package speaks.
 *
 *   const lsn = Lsn.parse('16/B374D848');
 *   const p = partitionOf('public.orders', ['42'], 8);
 */
export { Lsn, InvalidLsnError } from './lsn.ts';
export { VALUE_TEXT_SETTINGS, valueTextOptions, pinValueText, valueTextMismatches } from './value-text.ts';
export type { SettingMismatch } from './value-text.ts';
export {
  CdcError,
  ConfigError,
  IllegalStateError,
  UnreachableError,
  AuthenticationError,
  postgresAuthError,
  PoisonEventError,
  errorMessage,
} from './errors.ts';
export type { ErrorContext, CdcErrorOptions } from './errors.ts';
export {
  redactText,
  redactUrl,
  redactValue,
  redactError,
  isSecretKey,
  registerSecret,
  registerUrlSecrets,
  clearRegisteredSecrets,
  REDACTED,
} from './redact.ts';
export { retry, backoffDelay, Backoff, pollUntil, withinMs, defaultIsRetriable, RetriesExhaustedError } from './retry.ts';
export type { RetryOptions, BackoffPolicy } from './retry.ts';
export { systemClock, sleep } from './clock.ts';
export type { Clock, Cancel } from './clock.ts';
export { computeEventId, computeReadEventId, partitionOf, asPartition, keyText } from './event.ts';
export type {
  ChangeEvent,
  SourceHeartbeat,
  SourceProgress,
  PartitionHeartbeat,
  RawMessage,
  OrderedMessage,
  Op,
  SnapshotKind,
  Row,
  Partition,
  EventId,
} from './event.ts';
export { orderKeyOf, compareOrderKeys, formatOrderKey, parseOrderKey, LamportClock } from './order.ts';
export type { OrderKey } from './order.ts';
export {
  STAGES,
  Headers,
  stageSubject,
  stageWildcard,
  streamName,
  dlqSubject,
  deadLetterId,
  assertPipelineName,
} from './subjects.ts';
export type { Stage, DeadLetter } from './subjects.ts';
export {
  RAW_KINDS,
  ORDERED_KINDS,
  WIRE_DEFAULTS,
  decodeMessage,
  decodeRawMessage,
  decodeOrderedMessage,
  decodeRefs,
  decodeRawRefs,
  decodeOrderedRefs,
  encodeItem,
  encodeChangeItem,
  standaloneItem,
  joinItems,
  joinedLength,
  itemText,
  poisonIdentity,
  BatchCutter,
  batchHeaders,
  batchMsgId,
} from './wire.ts';
export type { WireKind, WireItem, WireChange, WireMark, WirePoison, RawItem, OrderedItem, CutBatch, SoleEvent, EventRef, WireRef, ItemOrigin, MessageOrigin, RawRefItem, OrderedRefItem } from './wire.ts';
