/**
 * The committer's metric families. Counters and gauges are read from the committer's
 * own counters when Prometheus scrapes; the two histograms are observed once per
 * committed sink transaction through children taken here, once.
 */
import { BATCH_SIZE_BUCKETS, DURATION_BUCKETS, perPartition, type Metrics, type Sample } from '@cdc/runtime';
import type { Committer } from './committer.ts';

const STAGE = 'committer';

/** Failures that mean the sink cannot be reached (rather than refusing a change): its connection is down. */
const UNREACHABLE = new Set(['SINK_UNAVAILABLE', 'KAFKA_TRANSACTION_FAILED', 'ERROR']);

export function registerCommitterMetrics(metrics: Metrics, committer: Committer, options: { readonly sink: string; readonly sinkKind: string }): void {
  const sink = options.sink;
  const stage = { stage: STAGE, sink };
  const labels = ['stage', 'sink', 'partition'];
  const feed = committer.feedCounters;
  const counters = committer.counters;
  metrics.counter('cdc_stage_messages_in_total', 'JetStream messages read from the input stream (again after a rewind)', labels, () => perPartition(feed.messagesIn, stage));
  metrics.counter('cdc_stage_events_in_total', 'Change events in the messages read (their Cdc-Count)', labels, () => perPartition(feed.eventsIn, stage));
  metrics.counter('cdc_stage_events_out_total', 'Change events of committed sink transactions (written, skipped by the version guard, or dead-lettered)', labels, () => perPartition(counters.eventsOut, stage));
  metrics.gauge('cdc_stage_lag_seconds', "Seconds from the source commit of a partition's last committed event to its sink commit", labels, () => perPartition(counters.lagSeconds, stage));
  metrics.gauge('cdc_stage_last_batch_timestamp_seconds', 'When the stage last committed a batch (Unix seconds)', ['stage', 'sink'], () =>
    counters.lastBatchAt === undefined ? [] : [[stage, counters.lastBatchAt / 1000]],
  );
  metrics.counter('cdc_dead_letters_total', 'Dead letters sent, by stage and reason code', ['stage', 'sink', 'partition', 'reason'], () => [
    ...perPartition(feed.poison, { ...stage, reason: 'POISON_EVENT' }),
    ...[...counters.deadLetters].flatMap(([reason, values]) => perPartition(values, { ...stage, reason })),
  ]);
  metrics.counter('cdc_committer_batches_total', 'Sink transactions committed', ['sink'], () => [[{ sink }, committer.stats().batches]]);
  metrics.counter('cdc_committer_events_applied_total', 'Change events written by committed sink transactions (refused ones excluded)', ['sink'], () => [[{ sink }, committer.stats().applied]]);
  metrics.counter('cdc_committer_recoveries_total', "Rewinds to the sink's checkpoints after a failure of unknown outcome", ['sink'], () => [[{ sink }, committer.stats().recoveries]]);
  metrics.counter('cdc_sink_errors_total', 'Failed sink applies, by error code', ['sink', 'kind'], () => [...counters.errors].map(([kind, e]) => [{ sink, kind }, e.failed] as const));
  metrics.counter('cdc_sink_retries_total', 'Failed sink applies that are retried (retriable), by error code', ['sink', 'kind'], () => [...counters.errors].map(([kind, e]) => [{ sink, kind }, e.retried] as const));
  metrics.gauge('cdc_committer_epoch', "The committer's owner epoch on the sink: it changes when a new committer takes over (fencing the old)", ['sink'], () => [[{ sink }, committer.epoch]]);
  metrics.gauge('cdc_committer_fenced', '1 once the committer was fenced by a newer owner (it stops)', ['sink'], () => [[{ sink }, committer.fenced ? 1 : 0]]);

  const duration = metrics.histogram('cdc_committer_commit_duration_seconds', 'Time to apply and commit one sink transaction', ['sink'], DURATION_BUCKETS).labels({ sink });
  const size = metrics.histogram('cdc_committer_batch_events', 'Change events per committed sink transaction', ['sink'], BATCH_SIZE_BUCKETS).labels({ sink });
  committer.observe((events, seconds) => {
    duration.observe(seconds);
    size.observe(events);
  });
  metrics.connections({ etcd: () => !committer.positionsFailing, [options.sinkKind]: () => committer.state === 'running' && !UNREACHABLE.has(committer.failingCode ?? '') });
}
