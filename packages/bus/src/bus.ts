/**
 * The one owner of a NATS connection in a process. Creates the pipeline's streams,
 * hands out publishers and stream readers, and sends dead letters.
 */
import { UnreachableError, deadLetterId, dlqSubject, streamName, stageWildcard, STAGES, type Clock, type DeadLetter } from '@cdc/core';
import type { Logger, NatsSecurity } from '@cdc/runtime';
import {
  jetstream,
  jetstreamManager,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { natsConnectError, natsTarget } from './connect.ts';
import { encodeDeadLetter } from './dead-letter.ts';
import { toBusMessage, type BusMessage } from './message.ts';
import { AckedPublisher } from './publisher.ts';
import { StreamReader } from './reader.ts';

export interface StreamSettings {
  /** How long a stage's input is kept; bounds how long a stage may be down. */
  readonly maxAgeMs: number;
  /** Nats-Msg-Id deduplication window (JetStream default: 2 minutes). */
  readonly duplicateWindowMs: number;
}

export const DEFAULT_STREAM_SETTINGS: StreamSettings = {
  maxAgeMs: 7 * 24 * 3600_000,
  duplicateWindowMs: 2 * 60_000,
};

/** NATS' default `max_payload`, used until the server's INFO says otherwise. */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Room left in a dead letter for its headers (Nats-Msg-Id). */
const DEAD_LETTER_HEADER_ROOM = 1024;

export class Bus {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly #logger: Logger;
  readonly #readers = new Set<StreamReader>();
  #closing: Promise<void> | undefined;
  /** False from a `disconnect`/`reconnecting` status until the next `reconnect` (see readiness()). */
  #connected = true;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, logger: Logger) {
    this.nc = nc;
    this.jsm = jsm;
    this.js = jetstream(nc);
    this.#logger = logger;
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === 'disconnect' || status.type === 'reconnecting') this.#connected = false;
        else if (status.type === 'reconnect') this.#connected = true;
        // A permissions violation, a refused re-authentication: the server says why (no secret in it).
        else if (status.type === 'error') logger.warn({ err: status.error }, `nats: ${status.error.message}`);
      }
    })().catch(() => undefined);
  }

  /**
   * Connects with the URL's userinfo or `security` (user/password, token, nkey seed, creds
   * file; TLS CA and client certificate: connect.ts). Refused credentials or a failed TLS
   * check throw AuthenticationError; no answer throws UnreachableError; neither shows a secret.
   */
  static async create(options: { url: string; name: string; logger: Logger; security?: NatsSecurity }): Promise<Bus> {
    const target = natsTarget(options.url, options.security);
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: target.servers,
        ...target.options,
        name: options.name,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        timeout: 5_000,
      });
    } catch (error) {
      throw natsConnectError(target, error);
    }
    let jsm: JetStreamManager;
    try {
      jsm = await jetstreamManager(nc, { timeout: 5_000 });
    } catch (error) {
      await nc.close();
      throw new UnreachableError('NATS JetStream', target.shown, 'the server answers but JetStream is off (start nats-server with -js), or this user may not use the JetStream API', error);
    }
    return new Bus(nc, jsm, options.logger);
  }

  /** Creates (or checks) the stage streams and the dead-letter stream of a pipeline. */
  async ensurePipelineStreams(pipeline: string, settings: StreamSettings = DEFAULT_STREAM_SETTINGS): Promise<void> {
    for (const stage of STAGES) {
      await this.ensureStream({ name: streamName(pipeline, stage), subjects: [stageWildcard(pipeline, stage)] }, settings);
    }
    await this.ensureStream({ name: streamName(pipeline, 'dlq'), subjects: [`cdc.${pipeline}.dlq.>`] }, settings);
  }

  private async ensureStream(base: { name: string; subjects: string[] }, settings: StreamSettings): Promise<void> {
    const config: Partial<StreamConfig> & { name: string } = {
      ...base,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(settings.maxAgeMs),
      duplicate_window: nanos(settings.duplicateWindowMs),
      num_replicas: 1,
    };
    try {
      await this.jsm.streams.info(base.name);
    } catch {
      try {
        await this.jsm.streams.add(config);
        this.#logger.info({ stream: base.name, subjects: base.subjects }, 'created stream');
      } catch (error) {
        // Another process may have created it between info and add.
        await this.jsm.streams.info(base.name).catch(() => {
          throw error;
        });
      }
    }
  }

  /** The largest message (payload + headers) the server takes: its `max_payload` (PITFALLS 25). */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
  }

  publisher(options: { maxInFlight: number; timeoutMs?: number }): AckedPublisher {
    return new AckedPublisher(this.nc, options);
  }

  /** The newest message on a subject, or undefined when the subject is empty. */
  async lastMessage(stream: string, subject: string): Promise<BusMessage | undefined> {
    try {
      const stored = await this.jsm.streams.getMessage(stream, { last_by_subj: subject });
      if (!stored) return undefined;
      return toBusMessage({ subject: stored.subject, seq: stored.seq, data: stored.data, headers: stored.header });
    } catch (error) {
      if (error instanceof Error && /no message found|not found/i.test(error.message)) return undefined;
      throw error;
    }
  }

  /** The first sequence still held by the stream (to detect retention gaps). */
  async firstSequence(stream: string): Promise<number> {
    const info = await this.jsm.streams.info(stream);
    return info.state.first_seq;
  }

  async openReader(options: { stream: string; subject: string; startSeq: number; bufferMessages?: number; clock?: Clock }): Promise<StreamReader> {
    const reader = await StreamReader.create(this.js, options);
    this.#readers.add(reader);
    return reader;
  }

  async closeReader(reader: StreamReader): Promise<void> {
    this.#readers.delete(reader);
    await reader.close();
  }

  /**
   * Poison events are kept with their reason; the partition keeps moving. A letter larger
   * than the server's limit has its payload cut to fit (`payloadTruncated`, `payloadBytes`).
   */
  async deadLetter(pipeline: string, letter: DeadLetter): Promise<void> {
    const subject = dlqSubject(pipeline, letter.stage);
    const msgID = deadLetterId(letter);
    await this.js.publish(subject, encodeDeadLetter(letter, this.maxPayload - DEAD_LETTER_HEADER_ROOM), {
      ...(msgID ? { msgID } : {}),
      timeout: 10_000,
    });
    this.#logger.warn(
      { subject, sink: letter.sink, reason: letter.reason, code: letter.code, table: letter.table, lsn: letter.lsn, event_id: letter.eventId },
      'dead-lettered',
    );
  }

  /**
   * For /readyz. Tracks the connection through its status stream: `nc.isClosed()` alone
   * stays false during a reconnect, when nothing can be published.
   */
  readiness(): { ok: boolean; detail?: string } {
    if (this.nc.isClosed()) return { ok: false, detail: 'connection closed' };
    return this.#connected ? { ok: true } : { ok: false, detail: 'reconnecting' };
  }

  /** Resolves (never rejects) when the connection has closed: with the error that closed it, if any. */
  async closed(): Promise<Error | undefined> {
    const error = await this.nc.closed().catch((reason: unknown) => reason);
    return error instanceof Error ? error : undefined;
  }

  /** Drains: in-flight publishes complete, readers stop, the connection closes. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const reader of this.#readers) await reader.close().catch(() => undefined);
      this.#readers.clear();
      await this.nc.drain().catch(() => this.nc.close());
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
