/**
 * The WAL heartbeat (PITFALLS 7). While the watched tables are idle, nothing the slot
 * sends advances the reader's clock or its confirmable position, so the slot would pin WAL
 * that other tables keep writing. Every interval without a data transaction, this writes
 * `pg_logical_emit_message(true, 'cdc-heartbeat', <source>)`: a tiny transaction that
 * comes back through the slot (pgoutput `messages 'true'`), gets a Lamport stamp like any
 * transaction — deterministically, because it is in the WAL — and is published as a
 * watermark, which the committer turns into a position the slot can be confirmed to.
 */
import { systemClock, type Cancel, type Clock } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import type pg from 'pg';
import { connectSource } from './connection.ts';
import { HEARTBEAT_PREFIX } from './pgoutput.ts';

export interface WalHeartbeatOptions {
  readonly connectionString: string;
  readonly source: string;
  readonly intervalMs: number;
  readonly logger: Logger;
  /** A counter that grows with every data transaction decoded; unchanged over an interval = idle. */
  readonly activity: () => number;
  /** Ticks every intervalMs on it. Default systemClock. */
  readonly clock?: Clock;
  /**
   * Writes one heartbeat. Default: `pg_logical_emit_message` on the source (see above);
   * the timing tests pass a counter instead.
   */
  readonly write?: () => Promise<void>;
}

export class WalHeartbeat {
  readonly #options: WalHeartbeatOptions;
  readonly #timer: Cancel;
  #client: pg.Client | undefined;
  #lastActivity = -1;
  #busy = false;
  #closed = false;
  #failures = 0;
  #emitted = 0;

  constructor(options: WalHeartbeatOptions) {
    this.#options = options;
    this.#timer = (options.clock ?? systemClock).every(options.intervalMs, () => void this.#tick());
  }

  get emitted(): number {
    return this.#emitted;
  }

  async #tick(): Promise<void> {
    if (this.#busy || this.#closed) return;
    const activity = this.#options.activity();
    if (activity !== this.#lastActivity) {
      this.#lastActivity = activity;
      return;
    }
    this.#busy = true;
    try {
      await this.emit();
    } finally {
      this.#busy = false;
    }
  }

  /** Writes one heartbeat message now. Failures are logged and retried on the next tick. */
  async emit(): Promise<void> {
    try {
      if (this.#options.write) await this.#options.write();
      else if (!(await this.#writeToSource())) return;
      this.#emitted += 1;
      if (this.#failures > 0) this.#options.logger.info({ after: this.#failures }, 'WAL heartbeat works again');
      this.#failures = 0;
    } catch (error) {
      if (this.#closed) return;
      this.#failures += 1;
      // One warning per outage, not one per tick.
      if (this.#failures === 1) this.#options.logger.warn({ err: error }, 'WAL heartbeat failed; retrying every interval');
      const client = this.#client;
      this.#client = undefined;
      await client?.end().catch(() => undefined);
    }
  }

  /** False when close() came first (nothing written). */
  async #writeToSource(): Promise<boolean> {
    if (!this.#client) {
      const client = await connectSource(this.#options.connectionString, 'cdc-reader-heartbeat');
      if (this.#closed) {
        await client.end().catch(() => undefined);
        return false;
      }
      this.#client = client;
    }
    await this.#client.query('SELECT pg_logical_emit_message(true, $1, $2)', [HEARTBEAT_PREFIX, this.#options.source]);
    return true;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#timer.cancel();
    // Ending the client also ends a heartbeat query in flight (it fails quietly).
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }
}
