/**
 * @cdc/sink-kafka — the committer's Kafka sink (a @cdc/committer Sink): deduped.<p> →
 * Kafka topics, exactly once.
 *
 *   const committer = await KafkaSink.createCommitter({
 *     pipeline: 'orders', partitions: 4, brokers: ['127.0.0.1:9092'], bus, checkpointStore, logger,
 *     records: { topicPrefix: 'orders', tombstones: true, transactionMetadata: false },
 *   });
 *   const error = await committer.closed(); // resolves when drained or fenced
 *
 * Invariants: a batch of whole source transactions and the committer's checkpoint are
 * one Kafka transaction under a stable transactional id; a restarted committer fences
 * its predecessor and resumes after the last committed checkpoint (read_committed);
 * records are Debezium's PostgreSQL envelope, keyed by primary key.
 */
export { KafkaSink, KAFKA_DEFAULTS } from './sink.ts';
export type { KafkaSinkOptions, KafkaSinkStats, KafkaCommitter, KafkaCommitterOptions } from './sink.ts';
export { chunksByBytes, closeNow, COMPRESSIONS, TransactionalProducer } from './producer.ts';
export type { Compression, KafkaConnection, OutgoingRecord, TransactionalProducerOptions } from './producer.ts';
export { CommittedReader, committedRecords } from './committed-reader.ts';
export type { CommittedRecord, CommittedReaderOptions, FetchedBatch, FetchedPartition } from './committed-reader.ts';
export { connectionOptions, describeSecurity, securityProblems, SASL_MECHANISMS } from './security.ts';
export type { KafkaSecurity, SaslMechanism } from './security.ts';
export { buildRecords } from './records.ts';
export type { RecordOptions, BuiltRecords, Refusal, TransactionProgress } from './records.ts';
export { encodeCheckpoint, decodeCheckpoint, decodeOpenTransaction } from './checkpoint-topic.ts';
export {
  KafkaAuthenticationError,
  KafkaFencedError,
  KafkaTransactionError,
  isAuthenticationError,
  TopicCreationError,
  RecordTooLargeError,
  isFencedError,
  kafkaErrorTypes,
} from './errors.ts';
export {
  toDebeziumRecord,
  toDebeziumRecords,
  tombstoneFor,
  transactionBegin,
  transactionEnd,
  transactionOrders,
  countByTable,
} from './envelope.ts';
export type { DebeziumRecord, EnvelopeOptions, TransactionCounts, TransactionOrder, TransactionRef } from './envelope.ts';
export { convertValue, PgType, DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER } from './values.ts';
export type { DebeziumValue, DecimalHandlingMode, ValueOptions } from './values.ts';
export { parseTopicRoutes, createTopicRouter, assertTopicName, InvalidTopicNameError } from './routing.ts';
export type { TopicRoute, TopicRouter, TopicRouterOptions } from './routing.ts';
