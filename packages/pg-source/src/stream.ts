/**
 * One replication connection: START_REPLICATION on the slot, pgoutput messages handed to
 * `onData` one at a time, standby status only when the reader says so.
 *
 *   created ──(CopyBoth started)──► running ──(error | close())──► closed
 *      └──────────(START_REPLICATION refused: create() rejects)─────► closed
 *
 * Library settings, and why (pg-logical-replication 2.5):
 *  - `acknowledge.auto: false` — the reader confirms only what the sink committed.
 *  - `acknowledge.timeoutSeconds: 0` — the library's periodic status sends
 *    `acknowledge(lastLsn)`, the last LSN *received*, even with auto off: that would
 *    confirm changes nobody committed. The reader answers keepalives itself.
 *  - `flowControl.enabled: true` — the socket is paused while `onData` runs, so awaiting
 *    publishes back-pressures PostgreSQL instead of buffering the WAL in memory.
 *  - A new LogicalReplicationService per session, started at 0/0: the library would
 *    otherwise resume a re-subscribe from the last LSN it *received*, skipping what was
 *    received but never confirmed; from 0/0 the server starts at confirmed_flush_lsn.
 *  - `acknowledge(x)` reports x + 1 as flushed (it takes "the last byte processed"); we
 *    pass (position - 1) so confirmed_flush_lsn becomes exactly the commit end position.
 */
import { Lsn, systemClock, type Cancel, type Clock } from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { LogicalReplicationService } from 'pg-logical-replication';
import { assertValueTextSettings, clientConfig, sqlStateOf, toConnectError } from './connection.ts';
import { ReplicationError, SlotBusyError, SlotLostError, SourceSettingsError } from './errors.ts';
import { TextPgoutputPlugin, type SourceMessage } from './pgoutput.ts';

export interface SessionHandlers {
  /** Called for each message, in order; the next waits for the returned promise. Must not throw. */
  onData(lsn: string, message: SourceMessage): Promise<void>;
  /** The server's keepalive; `shouldRespond` asks for a status update now. */
  onKeepalive(serverLsn: string, shouldRespond: boolean): void;
}

export interface SessionOptions {
  readonly connectionString: string;
  readonly slotName: string;
  readonly publicationName: string;
  readonly handlers: SessionHandlers;
  readonly logger: Logger;
  readonly startTimeoutMs?: number;
  /** Times the start timeout. Default systemClock. */
  readonly clock?: Clock;
}

export class ReplicationSession {
  readonly #service: LogicalReplicationService;
  readonly #slot: string;
  readonly #ended: Promise<Error | undefined>;
  #end!: (error: Error | undefined) => void;
  #stopped = false;

  private constructor(service: LogicalReplicationService, slot: string) {
    this.#service = service;
    this.#slot = slot;
    this.#ended = new Promise((resolve) => {
      this.#end = resolve;
    });
  }

  /** Resolves once streaming has started; rejects with a classified error if it cannot. */
  static async create(options: SessionOptions): Promise<ReplicationSession> {
    const service = new LogicalReplicationService(clientConfig(options.connectionString, 'cdc-reader'), {
      acknowledge: { auto: false, timeoutSeconds: 0 },
      flowControl: { enabled: true },
    });
    const session = new ReplicationSession(service, options.slotName);
    const plugin = new TextPgoutputPlugin(options.publicationName, (client) => assertValueTextSettings(client, options.connectionString, 'replication'));

    let started!: () => void;
    let refused!: (error: Error) => void;
    const startedPromise = new Promise<void>((resolve, reject) => {
      started = resolve;
      refused = reject;
    });

    service.on('start', () => started());
    service.on('data', (lsn: string, message: SourceMessage) => options.handlers.onData(lsn, message));
    service.on('heartbeat', (lsn: string, _timestamp: number, shouldRespond: boolean) => options.handlers.onKeepalive(lsn, shouldRespond));
    service.on('error', (error: Error) => {
      const classified = classifyReplicationError(error, options.slotName, options.connectionString);
      refused(classified);
      void session.#finish(classified);
    });

    void service.subscribe(plugin, options.slotName).then(
      () => {
        if (!session.#stopped) options.logger.debug({ slot: options.slotName }, 'the server ended the replication stream');
        const error = new ReplicationError('the replication stream ended', { slot: options.slotName });
        refused(error);
        void session.#finish(session.#stopped ? undefined : error);
      },
      (error: unknown) => {
        const classified = classifyReplicationError(error, options.slotName, options.connectionString);
        refused(classified);
        void session.#finish(classified);
      },
    );

    const timeoutMs = options.startTimeoutMs ?? 15_000;
    let timer: Cancel | undefined;
    try {
      await Promise.race([
        startedPromise,
        new Promise<never>((_, reject) => {
          timer = (options.clock ?? systemClock).timer(timeoutMs, () =>
            reject(new ReplicationError(`START_REPLICATION on slot ${options.slotName} did not start within ${timeoutMs} ms`, { slot: options.slotName })),
          );
        }),
      ]);
    } catch (error) {
      await session.close();
      throw error;
    } finally {
      timer?.cancel();
    }
    return session;
  }

  /** Resolves (never rejects) when the session is over: with the error that ended it, or undefined after close(). */
  closed(): Promise<Error | undefined> {
    return this.#ended;
  }

  get streaming(): boolean {
    return !this.#stopped && !this.#service.isStop();
  }

  /** Confirms `position` (a commit end LSN) as flushed: the slot may drop WAL before it. */
  async confirm(position: Lsn): Promise<boolean> {
    if (position <= 0n || !this.streaming) return false;
    return this.#service.acknowledge(Lsn.format(Lsn.fromBigInt(position - 1n)));
  }

  /** Ends the session because of `error` (e.g. a failed publish); the server keeps the slot where it was confirmed. */
  async fail(error: Error): Promise<void> {
    await this.#finish(error);
  }

  /** Ends the session; idempotent. */
  async close(): Promise<void> {
    await this.#finish(undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #finish(error: Error | undefined): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#end(error);
    // destroy() ends the connection and drops queued messages; listeners go too.
    await this.#service.destroy().catch(() => undefined);
    // eventemitter2 throws an 'error' without listeners; a late socket error must not crash us.
    this.#service.on('error', () => undefined);
  }

  toString(): string {
    return `ReplicationSession(${this.#slot})`;
  }
}

/** Server and socket errors of a replication connection, as our errors. */
export function classifyReplicationError(error: unknown, slot: string, connectionString: string): Error {
  if (error instanceof ReplicationError || error instanceof SlotBusyError || error instanceof SlotLostError || error instanceof SourceSettingsError) return error;
  const state = sqlStateOf(error);
  const message = error instanceof Error ? error.message : String(error);
  if (state === '55006' || /is active for PID/i.test(message)) return new SlotBusyError(slot, error);
  if (/can no longer get changes|has already been removed|wal_status is lost|invalidated/i.test(message)) {
    return new SlotLostError(slot, message, error);
  }
  if (state === '42704' && /replication slot/i.test(message)) return new SlotLostError(slot, `${message} (dropped while in use?)`, error);
  if (state === undefined && /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|timeout/i.test(message)) return toConnectError(connectionString, error);
  // Anything else (a terminated connection, a server restart, a protocol hiccup): reconnect from the slot.
  return new ReplicationError(`replication on slot ${slot} failed: ${message}`, { cause: error, slot });
}
