/**
 * The dedup store on Redis. Per event, pipelined for the whole batch, ONE command:
 *
 *   SET cdc:dedup:<pipeline>:<eventId> <inputSeq> PX <window> NX GET      (Redis >= 7.0)
 *
 * nil → the key was free and is ours now: new. Otherwise the reply is who holds the
 * claim (the key is left as it was): our own input sequence → redelivery, anything else →
 * duplicate. Claim and read are one atomic step, so within one batch a second copy of an
 * event sees the first one's claim. Re-running a batch is idempotent: our own claims read
 * back as redeliveries.
 *
 * Redis before 7.0 refuses NX together with GET: the store then falls back, for good, to
 * two commands per claim (SET … NX, then GET), run back to back on one connection.
 * (One command instead of two halves what Redis and ioredis do per event: measured
 * dedup-gate CPU for 100k events, see the commit message.)
 */
import { UnreachableError, backoffDelay, withinMs } from '@cdc/core';
import { redactUrl, type Logger } from '@cdc/runtime';
import { Redis, type RedisOptions } from 'ioredis';
import type { DedupClaim, DedupStore, DedupVerdict } from './store.ts';

/** ioredis reconnects in the background forever; this is its pause per attempt. */
const REDIS_RECONNECT = { initialDelayMs: 200, maxDelayMs: 2_000 } as const;

export interface RedisDedupStoreOptions {
  readonly url: string;
  readonly pipeline: string;
  readonly windowMs: number;
  readonly logger: Logger;
  /** Per-command bound (default 5 s): a paused server fails the batch instead of hanging it. */
  readonly commandTimeoutMs?: number;
}

export function dedupKey(pipeline: string, eventId: string): string {
  return `cdc:dedup:${pipeline}:${eventId}`;
}

export class RedisDedupStore implements DedupStore {
  readonly #redis: Redis;
  readonly #options: RedisDedupStoreOptions;
  readonly #target: string;
  /** Redis < 7.0: SET NX and GET as two commands. */
  #legacy = false;
  #closing: Promise<void> | undefined;

  private constructor(redis: Redis, options: RedisDedupStoreOptions) {
    this.#redis = redis;
    this.#options = options;
    this.#target = redactUrl(options.url);
  }

  /**
   * Connects in the background: a Redis that is down at start-up is the same as one that
   * goes down later — batches fail and are retried, nothing is forwarded unchecked.
   */
  static create(options: RedisDedupStoreOptions): RedisDedupStore {
    const redisOptions: RedisOptions = {
      lazyConnect: true,
      connectTimeout: 5_000,
      // No offline queue: a command issued while disconnected fails at once, so the batch
      // fails and the ConsumerLoop retries it with back-off — instead of sitting in an
      // unbounded queue while the partition looks healthy.
      enableOfflineQueue: false,
      // Commands in flight when the connection drops are rejected on the first close
      // (0 = flush the queue at every disconnect) rather than retried across reconnects:
      // retrying is the ConsumerLoop's job, in one place (PITFALLS 17).
      maxRetriesPerRequest: 0,
      // And never re-sent after a reconnect: their batch has failed already and will be
      // re-evaluated from the stage checkpoint; a late re-send would only race with that.
      // (It would be harmless — a re-sent SET NX of our own sequence reads back as a
      // redelivery — but an answer nobody waits for is noise.)
      autoResendUnfulfilledCommands: false,
      // CLIENT PAUSE or a stalled server: fail the batch, do not hang it.
      commandTimeout: options.commandTimeoutMs ?? 5_000,
      // Keep reconnecting forever in the background, backing off to at most 2 s (core backoffDelay).
      retryStrategy: (attempt) => backoffDelay(attempt, REDIS_RECONNECT),
    };
    const redis = new Redis(options.url, redisOptions);
    const store = new RedisDedupStore(redis, options);
    let lastLogged = 0;
    redis.on('error', (error: Error) => {
      // ioredis emits an error per reconnect attempt: log at most every 10 s.
      const now = Date.now();
      if (now - lastLogged < 10_000) return;
      lastLogged = now;
      options.logger.warn({ err: error, redis: store.#target }, 'redis connection error');
    });
    redis.on('ready', () => options.logger.info({ redis: store.#target }, 'redis ready'));
    redis.connect().catch(() => undefined); // retryStrategy keeps trying; 'error' logs why
    return store;
  }

  isReady(): boolean {
    return this.#redis.status === 'ready';
  }

  keyOf(eventId: string): string {
    return dedupKey(this.#options.pipeline, eventId);
  }

  async check(claims: readonly DedupClaim[]): Promise<DedupVerdict[]> {
    if (claims.length === 0) return [];
    if (!this.isReady()) {
      throw new UnreachableError('Redis', this.#target, `connection is ${this.#redis.status}; nothing is forwarded until it is back`);
    }
    if (!this.#legacy) {
      try {
        return await this.#checkAtomic(claims);
      } catch (error) {
        if (!(error instanceof SetGetUnsupported)) throw error;
        this.#legacy = true;
        this.#options.logger.warn({ redis: this.#target, err: error.cause }, 'Redis refuses SET NX GET (before 7.0): using SET NX + GET');
      }
    }
    return this.#checkLegacy(claims);
  }

  async #checkAtomic(claims: readonly DedupClaim[]): Promise<DedupVerdict[]> {
    const pipeline = this.#redis.pipeline();
    const window = String(this.#options.windowMs);
    for (const { eventId, inputSeq } of claims) pipeline.call('SET', this.keyOf(eventId), String(inputSeq), 'PX', window, 'NX', 'GET');
    const replies = await this.#exec(pipeline, claims.length);
    return claims.map(({ inputSeq }, i) => {
      const [error, owner] = replies[i] as [Error | null, unknown];
      if (error) {
        if (/syntax error|wrong number of arguments/i.test(error.message)) throw new SetGetUnsupported(error);
        throw new UnreachableError('Redis', this.#target, `dedup command failed: ${error.message}`, error);
      }
      if (owner === null) return 'new';
      return String(owner) === String(inputSeq) ? 'redelivery' : 'duplicate';
    });
  }

  async #checkLegacy(claims: readonly DedupClaim[]): Promise<DedupVerdict[]> {
    const pipeline = this.#redis.pipeline();
    for (const { eventId, inputSeq } of claims) {
      const key = this.keyOf(eventId);
      pipeline.set(key, String(inputSeq), 'PX', this.#options.windowMs, 'NX');
      pipeline.get(key);
    }
    const replies = await this.#exec(pipeline, claims.length * 2);
    return claims.map(({ inputSeq }, i) => {
      const [setError, set] = replies[2 * i] as [Error | null, unknown];
      const [getError, owner] = replies[2 * i + 1] as [Error | null, unknown];
      const error = setError ?? getError;
      if (error) throw new UnreachableError('Redis', this.#target, `dedup command failed: ${error.message}`, error);
      if (set === 'OK') return 'new';
      if (owner === String(inputSeq)) return 'redelivery';
      // The claim vanished between SET and GET (expiry, eviction, FLUSHALL): the gate is an
      // optimisation and the sink's version guard is the truth (PITFALLS 15) — forward
      // rather than risk dropping the only copy.
      if (owner === null) return 'new';
      return 'duplicate';
    });
  }

  async #exec(pipeline: ReturnType<Redis['pipeline']>, expected: number): Promise<[Error | null, unknown][]> {
    let replies: [Error | null, unknown][] | null;
    try {
      replies = await pipeline.exec();
    } catch (error) {
      throw new UnreachableError('Redis', this.#target, 'the dedup check failed; the batch is retried', error);
    }
    if (!replies || replies.length !== expected) {
      throw new UnreachableError('Redis', this.#target, 'the dedup pipeline returned no answer; the batch is retried');
    }
    return replies;
  }

  /** Idempotent; QUIT politely, disconnect if Redis does not answer within 2 s. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#redis.status === 'ready') {
        await withinMs(this.#redis.quit().then(() => undefined, () => undefined), 2_000);
      }
      this.#redis.disconnect();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The server does not know SET … NX GET (Redis < 7.0). */
class SetGetUnsupported extends Error {
  constructor(cause: Error) {
    super(`SET NX GET refused: ${cause.message}`, { cause });
    this.name = 'SetGetUnsupported';
  }
}
