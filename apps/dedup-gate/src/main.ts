/**
 * dedup-gate: ordered.<p> → deduped.<p> for every assigned partition, dropping events
 * another input message already claimed in Redis. Wiring only: the process is
 * @cdc/relay's runRelayApp, the logic is @cdc/dedup.
 */
import { DedupGate, RedisDedupStore, registerGateMetrics } from '@cdc/dedup';
import { runRelayApp } from '@cdc/relay';
import { redisSecurity } from '@cdc/runtime';
import { schema } from './config.ts';

await runRelayApp({
  name: 'dedup-gate',
  configSchema: schema,
  setup: ({ config, bus, logger, signal, defer }) => {
    // Connects in the background: while Redis is down every batch fails and is retried.
    const store = RedisDedupStore.create({ url: config.REDIS_URL, security: redisSecurity(config), pipeline: config.PIPELINE, windowMs: config.DEDUP_WINDOW_MS, logger });
    defer('redis', () => store.close());
    const gates: DedupGate[] = [];
    return {
      checks: { redis: () => (store.isReady() ? { ok: true } : { ok: false, detail: 'not_connected' }) },
      fields: { window_ms: config.DEDUP_WINDOW_MS },
      metrics: (metrics) => registerGateMetrics(metrics, gates),
      connections: { redis: () => store.isReady() },
      makeStage: (partition) => {
        const gate = DedupGate.create({ bus, store, pipeline: config.PIPELINE, partition, batchMax: config.BATCH_MAX, batchLingerMs: config.BATCH_LINGER_MS, logger, signal });
        gates.push(gate);
        return gate;
      },
    };
  },
});
