/**
 * The reader's metric families, read at scrape time from its counters, its stats and the
 * SlotMonitor's last sample (taken on the monitor's timer, never by a scrape).
 */
import { perPartition, type Metrics, type Sample } from '@cdc/runtime';
import type { Reader } from './reader.ts';
import type { SlotMonitor } from './slot-monitor.ts';

const STAGE = 'reader';

export function registerReaderMetrics(metrics: Metrics, reader: Reader, options: { readonly source: string; readonly slot: string; readonly monitor?: SlotMonitor | undefined; readonly now?: () => number }): void {
  const now = options.now ?? Date.now;
  const { source, slot, monitor } = options;
  const labels = { stage: STAGE, source };
  const c = reader.counters;
  metrics.counter('cdc_stage_messages_out_total', 'JetStream messages published to the output stream and acknowledged', ['stage', 'source', 'partition'], () => perPartition(c.messagesOut, labels));
  metrics.counter('cdc_stage_events_out_total', 'Change events in the messages published (snapshot reads included)', ['stage', 'source', 'partition'], () => perPartition(c.eventsOut, labels));
  metrics.counter('cdc_reader_transactions_total', 'Source transactions decoded (WAL heartbeats included)', ['source'], () => [[{ source }, reader.stats().transactions]]);
  metrics.counter('cdc_reader_snapshot_rows_total', 'Snapshot rows published', ['source'], () => [[{ source }, reader.stats().snapshotRows]]);
  metrics.counter('cdc_reader_restarts_total', 'Replication sessions restarted after a failure', ['source'], () => [[{ source }, reader.stats().restarts]]);
  metrics.counter('cdc_dead_letters_total', 'Dead letters sent, by stage and reason code', ['stage', 'source', 'reason'], () => [...c.deadLetters].map(([reason, n]) => [{ ...labels, reason }, n] as const));
  metrics.gauge('cdc_stage_lag_seconds', 'Seconds from the source commit of the last event published to its PubAck', ['stage', 'source'], () =>
    c.lastLamportMicros === undefined || c.lastAckAt === undefined ? [] : [[labels, Math.max(0, (c.lastAckAt * 1000 - c.lastLamportMicros) / 1e6)]],
  );
  metrics.gauge('cdc_stage_last_batch_timestamp_seconds', 'When the reader last had a message acknowledged (Unix seconds)', ['stage', 'source'], () =>
    c.lastAckAt === undefined ? [] : [[labels, c.lastAckAt / 1000]],
  );
  metrics.gauge('cdc_reader_heartbeat_age_seconds', 'Seconds since the last transaction (data or WAL heartbeat) came through the slot', ['source'], () =>
    c.lastTransactionAt === undefined ? [] : [[{ source }, Math.max(0, (now() - c.lastTransactionAt) / 1000)]],
  );
  metrics.gauge('cdc_reader_in_flight_messages', 'Messages published and waiting for their PubAck', ['source'], () => [[{ source }, reader.stats().inFlight]]);
  if (monitor) {
    metrics.gauge('cdc_reader_slot_lag_bytes', "WAL bytes between the server's current position and the slot's confirmed_flush_lsn (sampled every few seconds)", ['source', 'slot'], () =>
      monitor.sample?.exists ? [[{ source, slot }, monitor.sample.lagBytes]] : [],
    );
    metrics.gauge('cdc_reader_slot_active', '1 while a walsender holds the slot, 0 when it is inactive or missing (sampled)', ['source', 'slot'], () =>
      monitor.sample ? [[{ source, slot }, monitor.sample.active ? 1 : 0]] : [],
    );
    metrics.gauge('cdc_reader_slot_sample_age_seconds', 'Seconds since the slot was last sampled', ['source', 'slot'], () =>
      monitor.sample ? [[{ source, slot }, Math.max(0, (now() - monitor.sample.at) / 1000)]] : [],
    );
  }
}
