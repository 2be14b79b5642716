/**
 * The metric families every relay-stage app exports (runRelayApp registers them), read
 * from each partition's RelayCounters when Prometheus scrapes: nothing here runs per event.
 */
import type { Metrics } from '@cdc/runtime';
import type { Relay } from './relay.ts';

export function registerRelayMetrics(metrics: Metrics, stage: string, relays: readonly { readonly partition: number; readonly relay: Relay }[]): void {
  const per = (pick: (relay: Relay) => number | undefined) => () =>
    relays.flatMap(({ partition, relay }) => {
      const value = pick(relay);
      return value === undefined ? [] : [[{ stage, partition }, value] as const];
    });
  const labels = ['stage', 'partition'];
  metrics.counter('cdc_stage_messages_in_total', 'JetStream messages read from the input stream, in committed batches', labels, per((r) => r.counters.messagesIn));
  metrics.counter('cdc_stage_events_in_total', 'Change events in the messages read (their Cdc-Count)', labels, per((r) => r.counters.eventsIn));
  metrics.counter('cdc_stage_messages_out_total', 'JetStream messages published to the output stream and acknowledged', labels, per((r) => r.counters.messagesOut));
  metrics.counter('cdc_stage_events_out_total', 'Change events in the messages published', labels, per((r) => r.counters.eventsOut));
  metrics.gauge('cdc_stage_lag_seconds', 'Seconds from the source commit of the last event passed on to the moment it was durable in the output', labels, per((r) => r.counters.lagSeconds));
  metrics.gauge('cdc_stage_last_batch_timestamp_seconds', 'When the stage last committed a batch (Unix seconds)', labels, per((r) => (r.counters.lastBatchAt === undefined ? undefined : r.counters.lastBatchAt / 1000)));
  metrics.counter('cdc_dead_letters_total', 'Dead letters sent, by stage and reason code', ['stage', 'partition', 'reason'], () =>
    relays.flatMap(({ partition, relay }) => [...relay.counters.deadLetters].map(([reason, n]) => [{ stage, partition, reason }, n] as const)),
  );
}
