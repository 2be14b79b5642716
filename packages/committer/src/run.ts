/**
 * The life of a committer, whatever its sink: the shared ConsumerLoop (fetch → process →
 * commit), stopping for good on a non-retriable error (fenced, …), draining on close()
 * or on the caller's signal, a progress line every few seconds, and readiness for /readyz.
 *
 *   running ──close()/signal──► closing ──► closed
 *      └──── non-retriable error ──────────► failed
 * `failed` is `closed` with an error: the one extra state, because /readyz and the
 * tests tell a fenced committer from a drained one by it.
 * `closed()` resolves (never rejects) with the error that stopped it, if any.
 */
import { CdcError, systemClock, type Cancel, type Clock } from '@cdc/core';
import { ConsumerLoop, type ConsumerHandler, type Logger } from '@cdc/runtime';
import { COMMITTER_DEFAULTS } from './defaults.ts';

export type CommitterState = 'running' | 'closing' | 'closed' | 'failed';

export interface CommitterRunOptions {
  /** Loop name in logs ('committer', 'kafka-committer'). */
  readonly name: string;
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
  readonly progressIntervalMs?: number | undefined;
  readonly logProgress: () => void;
  /** Back-off between failed iterations (core backoffDelay). Default COMMITTER_DEFAULTS.retry. */
  readonly retry?: { readonly initialDelayMs: number; readonly maxDelayMs: number } | undefined;
  /** Every failed loop iteration (retried or not). */
  readonly onFailure?: () => void;
  /** The loop's back-off and the progress line run on it. Default systemClock. */
  readonly clock?: Clock | undefined;
}

export class CommitterRun<Batch> {
  readonly #options: CommitterRunOptions;
  readonly #controller = new AbortController();
  #loop: ConsumerLoop<Batch> | undefined;
  #state: CommitterState = 'running';
  #fatal: unknown;
  #progressTimer: Cancel | undefined;
  #resolveDone: (error: Error | undefined) => void = () => undefined;
  readonly #closed: Promise<Error | undefined>;

  constructor(options: CommitterRunOptions) {
    this.#options = options;
    const signal = options.signal;
    if (signal?.aborted) this.#controller.abort(signal.reason);
    signal?.addEventListener('abort', () => this.#controller.abort(signal.reason), { once: true });
    this.#closed = new Promise((resolve) => {
      this.#resolveDone = resolve;
    });
  }

  /** Resolves (never rejects) when the loop has ended, with the error that ended it (if any). */
  closed(): Promise<Error | undefined> {
    return this.#closed;
  }

  get state(): CommitterState {
    return this.#state;
  }

  #lastError: string | undefined;
  #lastCode: string | undefined;

  /** The code of the error the loop is retrying after (undefined while it is not failing). */
  get failingCode(): string | undefined {
    const loop = this.#loop?.state;
    return loop === 'failed' || loop === 'retry' ? (this.#lastCode ?? 'ERROR') : undefined;
  }

  /** The last failure in full (code, message, table, column, event, LSN): for logs and tests, never /readyz. */
  get lastFailure(): string | undefined {
    return this.#lastError;
  }

  /** The non-retriable error that stopped the loop, once there is one. */
  get fatal(): unknown {
    return this.#fatal;
  }

  /**
   * For /readyz: running and not stuck retrying. The detail is a reason code only
   * (`closing`, `failed:SINK_FENCED`, `retrying:SINK_SCHEMA_HELD`): the error itself is in
   * the log ("consumer batch failed; will retry") and in `lastFailure`.
   */
  readiness(): { ok: boolean; detail?: string } {
    const loop = this.#loop?.state;
    if (this.#state !== 'running') return { ok: false, detail: this.#state === 'failed' && this.#lastCode ? `failed:${this.#lastCode}` : this.#state };
    if (loop === 'failed' || loop === 'retry') return { ok: false, detail: `retrying:${this.#lastCode ?? 'ERROR'}` };
    return { ok: true };
  }

  /** Starts the loop; `handler.onStop` runs once after the last commit. */
  start(handler: ConsumerHandler<Batch>): void {
    const loop = new ConsumerLoop<Batch>({
      name: this.#options.name,
      logger: this.#options.logger,
      retry: { ...(this.#options.retry ?? COMMITTER_DEFAULTS.retry) },
      clock: this.#options.clock ?? systemClock,
      onError: (error) => {
        this.#options.onFailure?.();
        // In full for logs and tests (lastFailure); /readyz shows only its code.
        this.#lastError = describeFailure(error);
        this.#lastCode = error instanceof CdcError && /^[A-Z0-9_]{1,48}$/.test(error.code) ? error.code : 'ERROR';
        // Retrying cannot help a fenced or otherwise non-retriable committer: stop.
        if (error instanceof CdcError && !error.retriable) {
          this.#fatal = error;
          this.#controller.abort(error);
        }
      },
    });
    this.#loop = loop;
    const onStop = handler.onStop;
    const wrapped: ConsumerHandler<Batch> = {
      ...handler,
      onStop: async () => {
        if (this.#state === 'running') this.#state = 'closing';
        await onStop?.();
      },
    };
    this.#progressTimer = (this.#options.clock ?? systemClock).every(this.#options.progressIntervalMs ?? COMMITTER_DEFAULTS.progressIntervalMs, () => this.#options.logProgress());
    loop.run(wrapped, this.#controller.signal).then(
      () => this.#finish(this.#fatal),
      (error: unknown) => this.#finish(this.#fatal ?? error),
    );
  }

  /** Drains: the batch in hand commits, then the loop ends. Idempotent; the error, if any, is closed()'s. */
  async close(reason: string): Promise<void> {
    if (this.#state === 'running') this.#state = 'closing';
    this.#controller.abort(new Error(reason));
    await this.#closed;
  }

  #finish(error: unknown): void {
    this.#progressTimer?.cancel();
    const failure = error === undefined ? undefined : error instanceof Error ? error : new Error(String(error));
    this.#state = failure ? 'failed' : 'closed';
    if (failure) this.#options.logger.error({ err: failure }, `${this.#options.name} stopped on error`);
    this.#options.logProgress();
    this.#resolveDone(failure);
  }
}

/** One line for logs and tests: the error's code, message and where (table, column, event, LSN). */
function describeFailure(error: unknown): string {
  if (!(error instanceof Error)) return String(error).slice(0, 500);
  const where =
    error instanceof CdcError
      ? ['table', 'column', 'eventId', 'lsn']
          .filter((key) => error.context[key] !== undefined)
          .map((key) => `${key}=${String(error.context[key])}`)
          .join(' ')
      : '';
  const code = error instanceof CdcError ? `${error.code} ` : '';
  return `${code}${error.message}${where ? ` [${where}]` : ''}`.slice(0, 1_000);
}
