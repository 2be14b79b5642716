/**
 * The partitions' readiness check every relay-stage app registers on its HealthServer
 * (runRelayApp). The NATS check is the Bus's own: Bus#readiness().
 */
import type { Relay } from './relay.ts';

/**
 * Ready while no partition's loop has been failing for longer than `maxFailingMs`, and none
 * has stopped. The detail is a reason code naming the partitions (`failing:0,3`, `stopped:1`):
 * the errors themselves are in the log (the relay's "consumer batch failed" warnings).
 */
export function relaysCheck(relays: readonly { partition: number; relay: Relay }[], maxFailingMs: number): () => { ok: boolean; detail?: string } {
  return () => {
    const bad = relays.filter(({ relay }) => !relay.isHealthy(maxFailingMs));
    if (bad.length === 0) return { ok: true };
    const stopped = bad.filter(({ relay }) => relay.state === 'closed').map(({ partition }) => partition);
    const failing = bad.filter(({ relay }) => relay.state !== 'closed').map(({ partition }) => partition);
    const detail = [stopped.length > 0 ? `stopped:${stopped.join(',')}` : '', failing.length > 0 ? `failing:${failing.join(',')}` : ''].filter(Boolean).join('/');
    // Many partitions: the count only, so the code stays short.
    return { ok: false, detail: detail.length <= 64 ? detail : `partitions_failing:${bad.length}` };
  };
}
