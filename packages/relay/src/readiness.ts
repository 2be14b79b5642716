/**
 * The partitions' readiness check every relay-stage app registers on its HealthServer
 * (runRelayApp). The NATS check is the Bus's own: Bus#readiness().
 */
import type { Relay } from './relay.ts';

/** Ready while no partition's loop has been failing for longer than `maxFailingMs`, and none has stopped. */
export function relaysCheck(relays: readonly { partition: number; relay: Relay }[], maxFailingMs: number): () => { ok: boolean; detail?: string } {
  return () => {
    const bad = relays.filter(({ relay }) => !relay.isHealthy(maxFailingMs));
    if (bad.length === 0) return { ok: true };
    return {
      ok: false,
      detail: bad
        .map(({ partition, relay }) => {
          const h = relay.health();
          return `partition ${partition}: ${h.state}/${h.loop}, ${h.consecutiveFailures} failures${h.lastError ? `: ${h.lastError}` : ''}`;
        })
        .join('; '),
    };
  };
}
