/**
 * One merged batch → the Kafka records of its transaction, in order: per source
 * transaction [BEGIN], each event's Debezium record [+ tombstone], [END]. An event that
 * cannot become a record (a value that does not convert, a topic name Kafka refuses, a
 * record over the broker's size limit) is refused: the caller dead-letters it with the
 * reason and the batch goes on without it.
 */
import { CdcError, PoisonEventError, type ChangeEvent } from '@cdc/core';
import type { MergeBatch, MergedEvent } from '@cdc/sink-pg';
import { sameTransaction } from '@cdc/sink-pg';
import {
  countByTable,
  toDebeziumRecords,
  transactionBegin,
  transactionEnd,
  transactionOrders,
  type DebeziumRecord,
  type EnvelopeOptions,
} from './envelope.ts';
import { RecordTooLargeError } from './errors.ts';
import type { OutgoingRecord } from './producer.ts';
import { createTopicRouter, type TopicRoute, type TopicRouter } from './routing.ts';

export interface RecordOptions {
  /** Debezium's topic.prefix: topics are <prefix>.<schema>.<table> unless routed. */
  readonly topicPrefix: string;
  readonly routes?: readonly TopicRoute[];
  /** A tombstone (same key, null value) after each delete. Debezium's default: true. */
  readonly tombstones: boolean;
  /** BEGIN/END records on <prefix>.transaction and a `transaction` block in each event. */
  readonly transactionMetadata: boolean;
  /** `source.db` for events that do not carry their database. */
  readonly database?: string;
  readonly decimalHandling?: EnvelopeOptions['decimalHandlingMode'];
}

export interface Refusal {
  readonly error: CdcError;
  readonly partition: number;
  readonly seq: number;
  readonly table: string;
  readonly eventId: string;
  readonly lsn: string;
  readonly traceId: string;
  readonly payload: string;
}

export interface BuiltRecords {
  readonly records: OutgoingRecord[];
  readonly refusals: Refusal[];
  /** Change events that became records. */
  readonly events: number;
}

/** Routers are built once per option set (they validate the prefix up front). */
const routers = new WeakMap<RecordOptions, TopicRouter>();

function routerFor(options: RecordOptions): TopicRouter {
  let router = routers.get(options);
  if (router === undefined) {
    router = createTopicRouter({ topicPrefix: options.topicPrefix, ...(options.routes ? { routes: options.routes } : {}) });
    routers.set(options, router);
  }
  return router;
}

/** Validates the options (topic prefix, routes) before anything is read. */
export function checkRecordOptions(options: RecordOptions): void {
  routerFor(options);
}

export function buildRecords(batch: MergeBatch, options: RecordOptions & { maxMessageBytes: number }): BuiltRecords {
  const router = routerFor(options);
  const envelope: EnvelopeOptions = {
    topicPrefix: options.topicPrefix,
    tombstonesOnDelete: options.tombstones,
    transactionMetadata: options.transactionMetadata,
    ...(options.database ? { database: options.database } : {}),
    ...(options.decimalHandling ? { decimalHandlingMode: options.decimalHandling } : {}),
  };
  const records: OutgoingRecord[] = [];
  const refusals: Refusal[] = [];
  let events = 0;
  for (const transaction of splitTransactions(batch.events)) {
    const changes = transaction.map((merged) => merged.event);
    const orders = options.transactionMetadata ? transactionOrders(changes) : undefined;
    const emitted: ChangeEvent[] = [];
    const body: OutgoingRecord[] = [];
    for (const merged of transaction) {
      const { event } = merged;
      try {
        const topic = router.topicFor(event.table);
        const built = toDebeziumRecords(event, envelope, orders?.get(event.eventId));
        const outgoing = built.map((record) => outgoingRecord(topic, record));
        for (const record of outgoing) {
          if (record.bytes > options.maxMessageBytes) {
            throw new RecordTooLargeError(record.bytes, options.maxMessageBytes, { table: event.table, eventId: event.eventId, lsn: event.commitLsn, topic });
          }
        }
        body.push(...outgoing);
        emitted.push(event);
      } catch (error) {
        refusals.push(refusalOf(merged, error));
      }
    }
    events += emitted.length;
    const first = changes[0];
    if (options.transactionMetadata && first !== undefined && emitted.length > 0) {
      records.push(outgoingRecord(router.transactionTopic, transactionBegin(first)));
      records.push(...body);
      records.push(outgoingRecord(router.transactionTopic, transactionEnd(first, countByTable(emitted))));
    } else {
      records.push(...body);
    }
  }
  return { records, refusals, events };
}

/** Consecutive events of one source transaction (batches never split one). */
function splitTransactions(events: readonly MergedEvent[]): MergedEvent[][] {
  const groups: MergedEvent[][] = [];
  let current: MergedEvent[] = [];
  for (const merged of events) {
    const previous = current.at(-1);
    if (previous !== undefined && !sameTransaction(previous.key, merged.key)) {
      groups.push(current);
      current = [];
    }
    current.push(merged);
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

function outgoingRecord(topic: string, record: DebeziumRecord): OutgoingRecord {
  const bytes = (record.key === null ? 0 : Buffer.byteLength(record.key)) + (record.value === null ? 0 : Buffer.byteLength(record.value));
  return { topic, message: { key: record.key, value: record.value }, bytes };
}

function refusalOf(merged: MergedEvent, error: unknown): Refusal {
  const { event } = merged;
  const failure =
    error instanceof CdcError
      ? error
      : new PoisonEventError(`event cannot be written to Kafka: ${error instanceof Error ? error.message : String(error)}`, {
          table: event.table,
          eventId: event.eventId,
          lsn: event.commitLsn,
        }, error);
  return {
    error: failure,
    partition: merged.partition,
    seq: merged.seq,
    table: event.table,
    eventId: event.eventId,
    lsn: event.commitLsn,
    traceId: event.traceId,
    payload: JSON.stringify(event),
  };
}
