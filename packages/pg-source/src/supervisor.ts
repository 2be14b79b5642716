/**
 * The reader's session supervisor: restarts ended replication sessions until the reader
 * closes or a failure retrying cannot fix.
 *
 *   session ended ──closing──► done (undefined)
 *        │ non-retriable error ──► done (that error)
 *        ▼
 *   lived < quickFailureMs? ── yes ──► pause Backoff.next() (grows, bounded by maxDelayMs)
 *        │ no: Backoff.reset(), restart at once
 *        ▼
 *   reconnect() (its own bounded retry) ──fails──► done (that error) ──ok──► watch the new session
 *
 * A session that dies young (NATS down: every replay fails its first publish) backs off
 * before the next; one that streamed for a while counts as a success, so one failure
 * after a long healthy run restarts at once. Time comes from the injected Clock.
 */
import { Backoff, CdcError, type BackoffPolicy, type Clock } from '@cdc/core';

export interface SupervisedSession {
  /** Resolves (never rejects) when the session is over: with the error that ended it, or undefined after close(). */
  closed(): Promise<Error | undefined>;
}

export interface SupervisorOptions<S extends SupervisedSession> {
  readonly first: S;
  /** Opens the next session (retrying on its own); a rejection ends the supervisor. */
  readonly reconnect: () => Promise<S>;
  /** True once the owner is closing: an ended session is not restarted. */
  readonly closing: () => boolean;
  readonly clock: Clock;
  /** Aborts the back-off pause. */
  readonly signal: AbortSignal;
  /** Default SUPERVISOR_DEFAULTS.backoff. */
  readonly backoff?: BackoffPolicy;
  /** A session that ends sooner than this after starting is a quick failure. Default SUPERVISOR_DEFAULTS.quickFailureMs. */
  readonly quickFailureMs?: number;
  /** Every ended session while not closing (before the retriable check). */
  readonly onEnded?: (error: Error | undefined) => void;
  /** Before each restart, with the pause chosen (0 = at once). */
  readonly onRestart?: (info: { readonly error: Error | undefined; readonly delayMs: number; readonly quickFailures: number }) => void;
}

export const SUPERVISOR_DEFAULTS = {
  backoff: { initialDelayMs: 200, maxDelayMs: 10_000 },
  quickFailureMs: 10_000,
} as const;

/** Resolves with undefined when the owner closes, or with the error that stops the restarts. */
export async function superviseSessions<S extends SupervisedSession>(options: SupervisorOptions<S>): Promise<Error | undefined> {
  const { clock } = options;
  const backoff = new Backoff(options.backoff ?? SUPERVISOR_DEFAULTS.backoff);
  const quickFailureMs = options.quickFailureMs ?? SUPERVISOR_DEFAULTS.quickFailureMs;
  let session = options.first;
  let startedAt = clock.now();
  for (;;) {
    const error = await session.closed();
    if (options.closing()) return undefined;
    options.onEnded?.(error);
    if (error instanceof CdcError && !error.retriable) return error;
    let delayMs = 0;
    if (clock.now() - startedAt < quickFailureMs) delayMs = backoff.next();
    else backoff.reset();
    options.onRestart?.({ error, delayMs, quickFailures: backoff.failures });
    try {
      if (delayMs > 0) await clock.sleep(delayMs, options.signal);
      session = await options.reconnect();
      startedAt = clock.now();
    } catch (connectError) {
      if (options.closing()) return undefined;
      return connectError instanceof Error ? connectError : new Error(String(connectError));
    }
  }
}
