/**
 * The gate's own metric families (besides the relay's, which runRelayApp registers):
 * read from each partition's GateCounters when Prometheus scrapes.
 */
import type { Metrics } from '@cdc/runtime';
import type { DedupGate } from './stage.ts';

export function registerGateMetrics(metrics: Metrics, gates: readonly DedupGate[]): void {
  metrics.counter(
    'cdc_dedup_duplicates_dropped_total',
    'Events the gate dropped: claimed by another input message within the window (claimed), or at or below the last decided key (replay)',
    ['partition', 'kind'],
    () =>
      gates.flatMap((gate) => [
        [{ partition: gate.partition, kind: 'claimed' }, gate.transform.counters.duplicates] as const,
        [{ partition: gate.partition, kind: 'replay' }, gate.transform.counters.belowLastKey] as const,
      ]),
  );
  metrics.counter('cdc_dedup_redeliveries_total', 'Events claimed by the same input message before (a redelivery after a crash or retry): forwarded again', ['partition'], () =>
    gates.map((gate) => [{ partition: gate.partition }, gate.transform.counters.redeliveries] as const),
  );
}
