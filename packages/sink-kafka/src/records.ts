/**
 * One merged batch → the Kafka records of its transaction, in order: per source
 * transaction [BEGIN], each event's Debezium record [+ tombstone], [END]. An event that
 * cannot become a record (a value that does not convert, a topic name Kafka refuses, a
 * record over the broker's size limit) is refused: the caller dead-letters it with the
 * reason and the batch goes on without it.
 *
 * A source transaction too large to hold comes in chunks over several batches (and so
 * several Kafka transactions). Its TransactionProgress — events numbered so far, events
 * written per table — goes from one batch to the next and into the checkpoint, so
 * `total_order` numbers on across chunks and across restarts, BEGIN is written once
 * and END counts the whole transaction.
 */
import { CdcError, PoisonEventError, formatOrderKey, parseOrderKey, type ChangeEvent } from '@cdc/core';
import { sameTransaction, type MergeBatch, type MergedEvent, type SinkRefusal } from '@cdc/committer';
import {
  nextOrder,
  toDebeziumRecords,
  transactionBegin,
  transactionEnd,
  type DebeziumRecord,
  type EnvelopeOptions,
  type TransactionCounts,
  type TransactionRef,
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

/** An event that cannot become a record: the committer dead-letters it. */
export type Refusal = SinkRefusal;

export interface BuiltRecords {
  readonly records: OutgoingRecord[];
  readonly refusals: Refusal[];
  /** Change events that became records. */
  readonly events: number;
  /** The batch's last transaction, if it may go on in the next batch. */
  readonly progress: TransactionProgress | undefined;
}

/** Where a source transaction streamed in chunks stands (JSON: it travels in the checkpoint). */
export interface TransactionProgress {
  /** Order key of its first event: identifies the transaction. */
  readonly firstKey: string;
  readonly ref: TransactionRef;
  /** Events numbered so far, refused ones included (they keep their place in total_order). */
  readonly seen: number;
  readonly seenByTable: Readonly<Record<string, number>>;
  /** Events written per table, tables in first-written order: END's data_collections. */
  readonly written: readonly (readonly [string, number])[];
  /** BEGIN is out (it goes before the first written event). */
  readonly begun: boolean;
}

function startProgress(first: MergedEvent): TransactionProgress {
  const { xid, commitLsn, commitTs } = first.event;
  return { firstKey: formatOrderKey(first.key), ref: { xid, commitLsn, commitTs }, seen: 0, seenByTable: {}, written: [], begun: false };
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

/**
 * `progress` is what the previous batch left open (undefined: nothing). A transaction
 * left open that this batch does not go on with ended with the previous batch: its END
 * comes first.
 */
export function buildRecords(batch: MergeBatch, options: RecordOptions & { maxMessageBytes: number }, progress?: TransactionProgress): BuiltRecords {
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
  const end = (state: TransactionProgress): void => {
    if (options.transactionMetadata && state.begun) records.push(outgoingRecord(router.transactionTopic, transactionEnd(state.ref, new Map(state.written))));
  };
  let events = 0;
  const transactions = splitTransactions(batch.events);
  const firstEvent = transactions[0]?.[0];
  // A batch without events (only watermarks moved) goes on with the open transaction while it may go on.
  const continues =
    progress !== undefined &&
    batch.startsInside &&
    (firstEvent === undefined ? batch.endsInside : sameTransaction(parseOrderKey(progress.firstKey), firstEvent.key));
  if (progress !== undefined && !continues) end(progress);
  let open: TransactionProgress | undefined = firstEvent === undefined && continues ? progress : undefined;
  transactions.forEach((transaction, index) => {
    const head = transaction[0];
    if (head === undefined) return;
    let state = index === 0 && continues && progress !== undefined ? progress : startProgress(head);
    const counts: TransactionCounts = { seen: state.seen, seenByTable: new Map(Object.entries(state.seenByTable)) };
    const written = new Map(state.written);
    const body: OutgoingRecord[] = [];
    for (const merged of transaction) {
      const { event } = merged;
      const order = nextOrder(counts, event.table);
      try {
        const topic = router.topicFor(event.table);
        const built = toDebeziumRecords(event, envelope, options.transactionMetadata ? order : undefined);
        const outgoing = built.map((record) => outgoingRecord(topic, record));
        for (const record of outgoing) {
          if (record.bytes > options.maxMessageBytes) {
            throw new RecordTooLargeError(record.bytes, options.maxMessageBytes, { table: event.table, eventId: event.eventId, lsn: event.commitLsn, topic });
          }
        }
        body.push(...outgoing);
        written.set(event.table, (written.get(event.table) ?? 0) + 1);
        events += 1;
      } catch (error) {
        refusals.push(refusalOf(merged, error));
      }
    }
    const begin = options.transactionMetadata && !state.begun && body.length > 0;
    if (begin) records.push(outgoingRecord(router.transactionTopic, transactionBegin(state.ref)));
    records.push(...body);
    state = { ...state, seen: counts.seen, seenByTable: Object.fromEntries(counts.seenByTable), written: [...written], begun: state.begun || begin };
    if (index === transactions.length - 1 && batch.endsInside) open = state;
    else end(state);
  });
  return { records, refusals, events, progress: open };
}

/** Consecutive events of one source transaction. */
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
  return { topic, key: record.key, value: record.value, bytes };
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
  return { event: merged, error: failure };
}
