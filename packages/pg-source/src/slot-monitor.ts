/**
 * The slot's lag as PostgreSQL sees it, sampled on a timer (never per event): bytes of
 * WAL between the server's current position and the slot's confirmed_flush_lsn — what
 * the slot pins — and whether a walsender holds the slot (`active`). One ordinary
 * connection of its own, opened again after a failure at the next tick.
 *
 *   const monitor = SlotMonitor.create({ connectionString, slotName, intervalMs: 5_000, logger });
 *   monitor.sample   // { lagBytes, active, walStatus, at } | undefined
 *   await monitor.close();
 *
 * States: running ──close()──► closed. A failed sample leaves the last one in place and
 * sets `failing`; a slot that does not exist (dropped) gives `missing`.
 */
import { systemClock, type Cancel, type Clock } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import type pg from 'pg';
import { connectSource } from './connection.ts';

export interface SlotSample {
  /** pg_current_wal_lsn() − confirmed_flush_lsn, in bytes (0 when the slot is not found). */
  readonly lagBytes: number;
  readonly active: boolean;
  /** The slot exists. */
  readonly exists: boolean;
  /** pg_replication_slots.wal_status: reserved, extended, unreserved, lost (null on old servers). */
  readonly walStatus: string | null;
  /** When it was taken (ms epoch). */
  readonly at: number;
}

export interface SlotMonitorOptions {
  readonly connectionString: string;
  readonly slotName: string;
  /** Between samples; default 5 s (at least 1 s). */
  readonly intervalMs?: number;
  readonly logger: Logger;
  readonly clock?: Clock;
}

const QUERY = `SELECT active, wal_status::text AS wal_status,
  GREATEST(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, confirmed_flush_lsn), 0)::float8 AS lag_bytes
  FROM pg_replication_slots WHERE slot_name = $1`;

export class SlotMonitor {
  readonly #options: SlotMonitorOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  #timer: Cancel | undefined;
  #client: pg.Client | undefined;
  #sampling: Promise<void> | undefined;
  #sample: SlotSample | undefined;
  #failing = false;
  #closed = false;

  private constructor(options: SlotMonitorOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger.child({ component: 'slot-monitor', slot: options.slotName });
  }

  /** Starts sampling at once, then every interval. */
  static create(options: SlotMonitorOptions): SlotMonitor {
    const monitor = new SlotMonitor(options);
    monitor.#tick();
    monitor.#timer = monitor.#clock.every(Math.max(1_000, options.intervalMs ?? 5_000), () => monitor.#tick());
    return monitor;
  }

  get sample(): SlotSample | undefined {
    return this.#sample;
  }

  /** The last sample failed (the source unreachable from here). */
  get failing(): boolean {
    return this.#failing;
  }

  /** One sample now (a call while one runs joins it); for tests and the first scrape. */
  refresh(): Promise<void> {
    this.#sampling ??= this.#take().finally(() => {
      this.#sampling = undefined;
    });
    return this.#sampling;
  }

  #tick(): void {
    if (!this.#closed) void this.refresh();
  }

  async #take(): Promise<void> {
    try {
      this.#client ??= await connectSource(this.#options.connectionString, 'cdc-slot-monitor');
      if (this.#closed) return;
      const result = await this.#client.query<{ active: boolean; wal_status: string | null; lag_bytes: number }>(QUERY, [this.#options.slotName]);
      const row = result.rows[0];
      this.#sample = row
        ? { lagBytes: Number(row.lag_bytes), active: row.active, exists: true, walStatus: row.wal_status, at: this.#clock.now() }
        : { lagBytes: 0, active: false, exists: false, walStatus: null, at: this.#clock.now() };
      if (this.#failing) this.#log.info('slot sampling works again');
      this.#failing = false;
    } catch (error) {
      if (!this.#failing) this.#log.warn({ err: error }, 'sampling the slot failed; will retry at the next tick');
      this.#failing = true;
      const client = this.#client;
      this.#client = undefined;
      await client?.end().catch(() => undefined);
    }
  }

  /** Stops the timer and closes the connection; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#timer?.cancel();
    await this.#sampling?.catch(() => undefined);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
