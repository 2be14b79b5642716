/**
 * The dedup store on Redis: a whole batch of claims in ONE round trip (one script call).
 *
 * Layout — claims live in small hashes bucketed by the event's own commit time:
 *
 *   key    cdc:dedup:<pipeline>:<commit time to the ms>[:<seq >> 6]
 *          e.g. cdc:dedup:orders:2026-12-02T15:43:00.123 — one per millisecond of commit time
 *          (and per 64 events of a large transaction); the first 23 characters of the
 *          event's commitTs, used as they are (no parsing: any deterministic function of the
 *          event is correct, this one is also cheap and readable)
 *   field  the first 12 bytes of the eventId, binary (the eventId is 32 hex digits of a
 *          sha256; an id of another shape is used as it is, behind a '~')
 *   value  the input message's stream sequence
 *   TTL    the window, renewed on a bucket whenever a claim is added to it
 *
 * Why: a string key per event costs ~120-160 B in Redis (robj, dict entry, expire entry,
 * key sds); 15 minutes at 20k events/s is 18M claims, ~2.9 GB (PITFALLS 27). A hash of at
 * most 128 short fields is stored as one listpack (hash-max-listpack-entries, default 128),
 * ~15 B per field+value, and the per-key cost is paid once per bucket. The bucket is a
 * function of the event (its WAL commit time and its index in its transaction), so a
 * replay lands in the same bucket — even one the reader re-stamped with another Lamport
 * value; the ordered stream is in Lamport order, which follows commit time, so a bucket is
 * filled within a batch or two and expires as a whole a window after its last claim. Buckets stay under 128 fields up to ~64 events per millisecond per block,
 * i.e. ~64k single-row transactions/s; a fuller bucket still works, it just becomes a
 * hashtable and costs ~4x per field. (Measured figures: packages/dedup/README.md.)
 *
 * Per claim the script does HSETNX: 1 → new; 0 → HGET the owner: our own input sequence →
 * redelivery, any other → duplicate. The script is atomic, so a second copy of an event in
 * the same batch sees the first one's claim, and re-running a batch is idempotent (our own
 * claims read back as redeliveries). Replies come back as one string, a digit per claim.
 *
 * Works on any Redis with Lua (HSETNX, HGET, PEXPIRE are all 2.x commands). ioredis sends
 * EVALSHA and falls back to EVAL on NOSCRIPT (a restarted Redis, SCRIPT FLUSH) by itself.
 */
import { readFileSync } from 'node:fs';
import { AuthenticationError, ConfigError, UnreachableError, backoffDelay, redactUrl, registerSecret, withinMs } from '@cdc/core';
import { securityProblems, type BasicSecurity, type Logger } from '@cdc/runtime';
import { Redis, type RedisOptions } from 'ioredis';
import type { DedupClaim, DedupStore, DedupVerdict } from './store.ts';

/** ioredis reconnects in the background forever; this is its pause per attempt. */
const REDIS_RECONNECT = { initialDelayMs: 200, maxDelayMs: 2_000 } as const;

export interface RedisDedupStoreOptions {
  readonly url: string;
  readonly pipeline: string;
  /** How long a claim stays in Redis after its bucket last took a claim (see DEDUP_DEFAULTS). */
  readonly windowMs: number;
  readonly logger: Logger;
  /** Per-command bound (default 5 s): a paused server fails the batch instead of hanging it. */
  readonly commandTimeoutMs?: number;
  /**
   * ACL user/password (REDIS_USER, REDIS_PASSWORD; win over the URL's userinfo) and TLS
   * files (REDIS_TLS_*). `rediss://` or any TLS file makes the connection TLS.
   */
  readonly security?: BasicSecurity;
}

/** ioredis options for credentials and TLS: the URL's userinfo is ioredis' own; settings override it. */
export function redisSecurityOptions(url: string, security: BasicSecurity = {}): Pick<RedisOptions, 'username' | 'password' | 'tls'> {
  const problems = securityProblems('REDIS', security);
  if (problems.length > 0) throw new ConfigError(problems);
  const parsed = new URL(url);
  if (parsed.password) registerSecret(decodeURIComponent(parsed.password));
  registerSecret(security.password);
  const options: Pick<RedisOptions, 'username' | 'password' | 'tls'> = {};
  if (security.user !== undefined) options.username = security.user;
  if (security.password !== undefined) options.password = security.password;
  const tls = security.tls;
  if (parsed.protocol === 'rediss:' || tls !== undefined) {
    options.tls = {
      ...(tls?.caFile ? { ca: readFileSync(tls.caFile) } : {}),
      ...(tls?.certFile ? { cert: readFileSync(tls.certFile) } : {}),
      ...(tls?.keyFile ? { key: readFileSync(tls.keyFile) } : {}),
      // SNI and the certificate's name check use the URL's host (ioredis would send none for an IP).
      ...(parsed.hostname && !/^[\d.]+$|:/.test(parsed.hostname) ? { servername: parsed.hostname } : {}),
    };
  }
  return options;
}

/** Credentials the server refused: said as an AuthenticationError (no secret), not as a bare WRONGPASS. */
const REDIS_AUTH_FAILURE = /WRONGPASS|NOAUTH|NOPERM|invalid username-password|AUTH.*(failed|without any password)|ERR_TLS|certificate|self[- ]signed/i;

export const DEDUP_DEFAULTS = {
  /**
   * 10 minutes: at a sustained 20k events/s that is 12M claims at the measured 22-29 B per
   * claim, 260-335 MiB of used_memory — under the 512 MB budget with room for bursts and
   * expiry lag (15 minutes would be 390-500 MiB: too close). What the window does not
   * absorb, the sink's version guard does (PITFALLS 15).
   */
  windowMs: 600_000,
} as const;

/** Bytes of the eventId kept as the field: 96 bits, collisions only matter inside one bucket. */
const FIELD_BYTES = 12;
/**
 * Claims per script call: bounds how long one call holds Redis (~1.5 µs per claim) and the
 * argument count; a larger batch is several calls in one pipeline, still one round trip.
 */
const MAX_CLAIMS_PER_CALL = 4_096;
/** Events of one transaction per bucket: with several transactions per millisecond, stays <= 128 fields. */
const SEQ_BLOCK_SHIFT = 6;

/** Where a claim lives: the bucket key and the field inside it. */
export function dedupSlot(pipeline: string, claim: Pick<DedupClaim, 'eventId' | 'commitTs' | 'seq'>): { key: string; field: Buffer } {
  return { key: bucketKey(pipeline, claim.commitTs.slice(0, COMMIT_TS_MS), claim.seq >> SEQ_BLOCK_SHIFT), field: dedupField(claim.eventId) };
}

/** `YYYY-MM-DDTHH:MM:SS.mmm` */
const COMMIT_TS_MS = 23;

function bucketKey(pipeline: string, millis: string, block: number): string {
  return block === 0 ? `cdc:dedup:${pipeline}:${millis}` : `cdc:dedup:${pipeline}:${millis}:${block}`;
}

/** Fields behind their lengths (two bytes, big-endian), as CLAIM_SCRIPT reads them. */
function packFields(fields: readonly Buffer[], bytes: number): Buffer {
  const packed = Buffer.allocUnsafe(bytes);
  let at = 0;
  for (const field of fields) {
    packed.writeUInt16BE(field.length, at);
    field.copy(packed, at + 2);
    at += 2 + field.length;
  }
  return packed;
}

function dedupField(eventId: string): Buffer {
  if (eventId.length >= 2 * FIELD_BYTES) {
    // Buffer.from stops at the first character that is not hex: a short result says so.
    const field = Buffer.from(eventId.slice(0, 2 * FIELD_BYTES), 'hex');
    if (field.length === FIELD_BYTES) return field;
  }
  // Bounded by the two-byte length in CLAIM_SCRIPT's packing (an id this long is not one of ours).
  return Buffer.from(`~${eventId}`).subarray(0, 0xffff);
}

/**
 * KEYS: the batch's buckets. ARGV[1]: the window in ms; then per run of consecutive claims
 * that share a bucket and an input sequence: (index into KEYS, input sequence, fields),
 * the fields packed into one string, each behind its length in two bytes (big-endian).
 * Packed because ioredis's per-argument work (a Buffer, RESP framing, tracing) was the
 * gate's largest cost per event with three arguments per claim (issue 12). Returns a digit
 * per claim, in order: 0 new, 1 redelivery, 2 duplicate.
 */
export const CLAIM_SCRIPT = `
local window = ARGV[1]
local out = {}
local grown = {}
local n = 0
for i = 2, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  local seq = ARGV[i + 1]
  local fields = ARGV[i + 2]
  local at = 1
  local length = #fields
  while at <= length do
    local size = string.byte(fields, at) * 256 + string.byte(fields, at + 1)
    local field = string.sub(fields, at + 2, at + 1 + size)
    at = at + 2 + size
    n = n + 1
    if redis.call('HSETNX', key, field, seq) == 1 then
      out[n] = '0'
      grown[key] = true
    elseif redis.call('HGET', key, field) == seq then
      out[n] = '1'
    else
      out[n] = '2'
    end
  end
end
for key in pairs(grown) do redis.call('PEXPIRE', key, window) end
return table.concat(out)
`;

interface ClaimCommand {
  cdcDedupClaim(...args: (string | number | Buffer)[]): Promise<string>;
}

export class RedisDedupStore implements DedupStore {
  readonly #redis: Redis & ClaimCommand;
  readonly #options: RedisDedupStoreOptions;
  readonly #target: string;
  #closing: Promise<void> | undefined;

  private constructor(redis: Redis, options: RedisDedupStoreOptions) {
    redis.defineCommand('cdcDedupClaim', { lua: CLAIM_SCRIPT });
    this.#redis = redis as Redis & ClaimCommand;
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
      // (It would be harmless — a re-sent claim of our own sequence reads back as a
      // redelivery — but an answer nobody waits for is noise.)
      autoResendUnfulfilledCommands: false,
      // CLIENT PAUSE or a stalled server: fail the batch, do not hang it. A claim script
      // that runs after its timeout fired leaves claims of our own sequence: the retry
      // reads them as redeliveries and forwards them (tests/dedup/batch-claims.test.ts).
      commandTimeout: options.commandTimeoutMs ?? 5_000,
      // Keep reconnecting forever in the background, backing off to at most 2 s (core backoffDelay).
      retryStrategy: (attempt) => backoffDelay(attempt, REDIS_RECONNECT),
      ...redisSecurityOptions(options.url, options.security),
    };
    const redis = new Redis(options.url, redisOptions);
    const store = new RedisDedupStore(redis, options);
    let lastLogged = 0;
    redis.on('error', (error: Error) => {
      // ioredis emits an error per reconnect attempt: log at most every 10 s.
      const now = Date.now();
      if (now - lastLogged < 10_000) return;
      lastLogged = now;
      if (REDIS_AUTH_FAILURE.test(`${error.message} ${(error as { code?: string }).code ?? ''}`)) {
        const refused = new AuthenticationError('Redis', store.#target, error.message, 'check REDIS_USER/REDIS_PASSWORD (or the URL\'s user and password) and REDIS_TLS_*; nothing is forwarded until it connects', error);
        options.logger.error({ err: refused, redis: store.#target }, refused.message);
        return;
      }
      options.logger.warn({ err: error, redis: store.#target }, 'redis connection error');
    });
    redis.on('ready', () => {
      options.logger.info({ redis: store.#target }, 'redis ready');
      void store.#checkListpackLimit();
    });
    redis.connect().catch(() => undefined); // retryStrategy keeps trying; 'error' logs why
    return store;
  }

  /**
   * The memory figures hold while a bucket fits a listpack; a server configured with a
   * much lower hash-max-listpack-entries stores buckets as hashtables (~4x per claim).
   * Best effort: CONFIG may be disabled (managed Redis), then nothing is said.
   */
  async #checkListpackLimit(): Promise<void> {
    try {
      const reply = (await this.#redis.config('GET', 'hash-max-listpack-entries')) as unknown;
      const entries = Array.isArray(reply) ? Number(reply[1]) : Number.NaN;
      if (Number.isFinite(entries) && entries < 128) {
        this.#options.logger.warn(
          { redis: this.#target, hash_max_listpack_entries: entries },
          'hash-max-listpack-entries is below 128: dedup buckets may be stored as hashtables and cost ~4x the memory per claim',
        );
      }
    } catch {
      // CONFIG refused or not known (Redis < 7.0 names it hash-max-ziplist-entries): nothing to say.
    }
  }

  isReady(): boolean {
    return this.#redis.status === 'ready';
  }

  slotOf(claim: Pick<DedupClaim, 'eventId' | 'commitTs' | 'seq'>): { key: string; field: Buffer } {
    return dedupSlot(this.#options.pipeline, claim);
  }

  async check(claims: readonly DedupClaim[]): Promise<DedupVerdict[]> {
    if (claims.length === 0) return [];
    if (!this.isReady()) {
      throw new UnreachableError('Redis', this.#target, `connection is ${this.#redis.status}; nothing is forwarded until it is back`);
    }
    // One round trip: one script call, or — for a batch larger than a call should carry —
    // one pipeline of calls, run in order, so a later chunk sees an earlier chunk's claims.
    let replies: unknown[];
    try {
      if (claims.length <= MAX_CLAIMS_PER_CALL) {
        replies = [await this.#redis.cdcDedupClaim(...this.#argsOf(claims))];
      } else {
        const pipeline = this.#redis.pipeline() as ReturnType<Redis['pipeline']> & { cdcDedupClaim(...args: (string | number | Buffer)[]): unknown };
        for (let i = 0; i < claims.length; i += MAX_CLAIMS_PER_CALL) pipeline.cdcDedupClaim(...this.#argsOf(claims.slice(i, i + MAX_CLAIMS_PER_CALL)));
        const results = (await pipeline.exec()) ?? [];
        replies = results.map(([error, reply]) => {
          if (error) throw error;
          return reply;
        });
      }
    } catch (error) {
      throw new UnreachableError('Redis', this.#target, `the dedup claim failed (${(error as Error).message}); the batch is retried`, error);
    }
    const reply = replies.every((r) => typeof r === 'string') ? replies.join('') : undefined;
    if (reply === undefined || reply.length !== claims.length) {
      throw new UnreachableError('Redis', this.#target, 'the dedup claim returned no usable answer; the batch is retried');
    }
    const verdicts: DedupVerdict[] = new Array<DedupVerdict>(claims.length);
    for (let i = 0; i < claims.length; i++) {
      const code = reply.charCodeAt(i);
      verdicts[i] = code === 48 ? 'new' : code === 49 ? 'redelivery' : 'duplicate';
    }
    return verdicts;
  }

  /** The script's arguments for some claims: numkeys, KEYS (their buckets), window, then a run per bucket and input sequence. */
  #argsOf(claims: readonly DedupClaim[]): (string | number | Buffer)[] {
    const { pipeline } = this.#options;
    const keys: string[] = [];
    const args: (string | Buffer)[] = [];
    // Consecutive claims mostly share a bucket (the input follows commit time) and an input message.
    let lastMillis = '';
    let lastBlock = -1;
    let lastIndex = '';
    let lastSeq = -1;
    let run: Buffer[] = [];
    let runBytes = 0;
    const endRun = (): void => {
      if (run.length === 0) return;
      args.push(lastIndex, String(lastSeq), packFields(run, runBytes));
      run = [];
      runBytes = 0;
    };
    for (const claim of claims) {
      const millis = claim.commitTs.slice(0, COMMIT_TS_MS);
      const block = claim.seq >> SEQ_BLOCK_SHIFT;
      if (millis !== lastMillis || block !== lastBlock) {
        endRun();
        lastMillis = millis;
        lastBlock = block;
        const key = bucketKey(pipeline, millis, block);
        let index = keys.lastIndexOf(key);
        if (index < 0) index = keys.push(key) - 1;
        lastIndex = String(index + 1);
      }
      if (claim.inputSeq !== lastSeq) {
        endRun();
        lastSeq = claim.inputSeq;
      }
      const field = dedupField(claim.eventId);
      run.push(field);
      runBytes += 2 + field.length;
    }
    endRun();
    return [keys.length, ...keys, String(this.#options.windowMs), ...args];
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
