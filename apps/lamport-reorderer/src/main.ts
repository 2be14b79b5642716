/**
 * lamport-reorderer: raw.<p> → ordered.<p> for every assigned partition.
 * Wiring only: the process is @cdc/relay's runRelayApp, the ordering is @cdc/reorder.
 */
import { runRelayApp } from '@cdc/relay';
import { Reorderer } from '@cdc/reorder';
import { schema } from './config.ts';

await runRelayApp({
  name: 'lamport-reorderer',
  configSchema: schema,
  setup: ({ config, bus, logger, signal }) => ({
    fields: { sources: config.SOURCES },
    makeStage: (partition) =>
      Reorderer.create({
        bus, pipeline: config.PIPELINE, partition, sources: config.SOURCES, maxBuffered: config.BUFFER_MAX_EVENTS,
        batchMax: config.BATCH_MAX, batchLingerMs: config.BATCH_LINGER_MS, statsIntervalMs: config.STATS_INTERVAL_MS, logger, signal,
      }),
  }),
});
