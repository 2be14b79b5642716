/**
 * Readiness checks every middle-stage app registers on its HealthServer.
 */
import type { Bus } from '@cdc/bus';
import type { Relay } from './relay.ts';

/**
 * Tracks the NATS connection through its status stream: `isClosed()` alone stays false
 * during a reconnect, when nothing can be published.
 */
export function natsConnectionCheck(bus: Bus): () => { ok: boolean; detail?: string } {
  let connected = true;
  void (async () => {
    for await (const status of bus.nc.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnecting') connected = false;
      else if (status.type === 'reconnect') connected = true;
    }
  })().catch(() => undefined);
  return () => {
    if (bus.nc.isClosed()) return { ok: false, detail: 'connection closed' };
    return connected ? { ok: true } : { ok: false, detail: 'reconnecting' };
  };
}

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
