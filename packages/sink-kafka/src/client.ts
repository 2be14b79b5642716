/**
 * @platformatic/kafka, loaded on first use. Importing it costs a process ~50 MB of RSS (it
 * loads every API version and compiles its option schemas up front), which a committer
 * with SINK=postgres — the same app, the same bundle — must not pay; a static import
 * would load it at start in every committer. Types are imported statically (erased).
 */
import type * as Client from '@platformatic/kafka';

let loading: Promise<typeof Client> | undefined;

export function kafkaClient(): Promise<typeof Client> {
  loading ??= import('@platformatic/kafka');
  return loading;
}

/** The client's enumerations we use, as Kafka defines them (no load needed for a constant). */
export const FETCH_READ_UNCOMMITTED = 0;
export const FETCH_READ_COMMITTED = 1;
export const LIST_OFFSETS_EARLIEST = -2n;
export const CONFIG_RESOURCE_BROKER = 4;
