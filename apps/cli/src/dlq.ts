/**
 * Dead letters: read them from the pipeline's dlq stream, and replay a PostgreSQL
 * committer's letters into its sink once their cause is fixed.
 *
 * Replay, exactly once: in ONE sink transaction the letter's id (stage:sink:eventId, the
 * letter's Nats-Msg-Id) is recorded in `_cdc_dlq_replays` and its event applied through
 * the sink's own guarded statements (`SinkWriter.applyChunk`: upsert/delete only when the
 * row's version (commitLsn, seq) is older). A second replay finds the record and changes
 * nothing; a replay the sink refuses again rolls back (the record too) and says why. The
 * committer's checkpoints and epoch are not touched, so a running committer is neither
 * fenced nor moved: the version guard orders the replayed change against its writes.
 *
 * Why not republish the event into the pipeline: the committer skips what is at or below
 * its checkpoint (an old letter's order key is), the gate has claimed its id, and the
 * stream's Nats-Msg-Id window may have passed — three places to bypass, and the record of
 * the replay would not commit with the row. Here both commit or neither does.
 *
 * The one thing the guard cannot see is a row that is gone: the sink keeps no tombstones,
 * so an old insert replayed after a newer delete of its key would bring the row back. So
 * before applying an insert/update, the deduped stream is read — the letter's partition,
 * and partition 0 where TRUNCATEs go: a newer delete of the key (or truncate of the
 * table) makes the letter `superseded` (recorded, nothing written). The scan must find the
 * letter's own event — else retention removed what came right after it, and the replay is
 * refused unless `--force`. Its tail is read again holding the pipeline's `cdc_owner` row
 * FOR SHARE (each committer batch takes it FOR UPDATE first), so a delete applied while
 * the replay runs is either seen or applied after it (and then removes the row, guarded).
 *
 * Not replayed here: letters of other stages (the event never reached a sink; the stage
 * that refused it names why) and of Kafka sinks — listed with the reason.
 */
import { DeliverPolicy, JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { deadLetterId, decodeOrderedMessage, dlqSubject, pinValueText, stageSubject, streamName, type ChangeEvent } from '@cdc/core';
import { SinkWriter, TableCatalog, parseTableMap } from '@cdc/sink-pg';
import { natsConnectError, natsTarget } from '@cdc/bus';
import { loadConfig, natsSecurity, natsSecurityFields, redactUrl, z } from '@cdc/runtime';
import pg from 'pg';
import { pino } from 'pino';
import { laterVerdict, replayableEvent, supersedes, type LaterScan, type PartitionScan, type ReplayRecord, type ReplayResult, type StoredLetter } from './letters.ts';

/** A read of a stream subject that receives nothing this long has lost its end. */
const SCAN_IDLE_MS = 15_000;

export type { LaterScan, ReplayResult, StoredLetter } from './letters.ts';

/** The part of DeadLetterStore a replay needs (a test may pass its own). */
export interface LaterScanner {
  scanLater(event: ChangeEvent, partition: number, previous?: LaterScan): Promise<LaterScan>;
}

export class DeadLetterStore {
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #js: JetStreamClient;
  readonly #pipeline: string;
  readonly #stream: string;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, pipeline: string) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#js = jetstream(nc, { timeout: 10_000 });
    this.#pipeline = pipeline;
    this.#stream = streamName(pipeline, 'dlq');
  }

  static async open(natsUrl: string, pipeline: string): Promise<DeadLetterStore> {
    // The same NATS_USER/NATS_PASSWORD/NATS_TOKEN/NATS_*_FILE settings as the apps (@cdc/bus connect.ts).
    const target = natsTarget(natsUrl, natsSecurity(loadConfig(z.object(natsSecurityFields))));
    const nc = await connect({
      servers: target.servers,
      ...target.options,
      name: `cdc-cli-${pipeline}`,
      timeout: 5_000,
    }).catch((error: unknown) => {
      throw natsConnectError(target, error);
    });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 10_000 });
      return new DeadLetterStore(nc, jsm, pipeline);
    } catch (error) {
      await nc.close();
      throw error;
    }
  }

  /**
   * Letters in stream order, optionally of one stage (its subject: `cdc.<p>.dlq.<stage>`),
   * at most `limit`: one ordered consumer, nothing acknowledged. A pipeline that never
   * dead-lettered has no dlq stream: no letters. Any other error (a timeout) is thrown,
   * never read as "no letter" — `replay --all` must not skip one.
   */
  async list(options: { stage?: string; limit: number }): Promise<StoredLetter[]> {
    const subject = dlqSubject(this.#pipeline, options.stage ?? '*');
    let lastSeq: number;
    try {
      if (options.stage) lastSeq = (await this.#jsm.streams.getMessage(this.#stream, { last_by_subj: subject }))?.seq ?? 0;
      else lastSeq = (await this.#jsm.streams.info(this.#stream)).state.last_seq;
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return [];
      throw error;
    }
    const out: StoredLetter[] = [];
    if (lastSeq === 0) return out;
    await readSubject(this.#js, { stream: this.#stream, subject, fromSeq: 1, lastSeq }, (message) => {
      const stored = toStoredLetter(message.seq, message.subject, new Date(Math.floor(message.info.timestampNanos / 1e6)), message.data);
      if (stored) out.push(stored);
      return out.length < options.limit;
    });
    return out;
  }

  /** Letters in the stream (0 when the pipeline never dead-lettered: no stream). */
  async count(): Promise<number> {
    try {
      return (await this.#jsm.streams.info(this.#stream)).state.messages;
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return 0;
      throw error;
    }
  }

  /** The letter at `seq`; undefined when the stream holds none there (deleted, or not a letter). */
  async get(seq: number): Promise<StoredLetter | undefined> {
    let message;
    try {
      message = await this.#jsm.streams.getMessage(this.#stream, { seq });
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
      throw error;
    }
    if (!message) return undefined;
    return toStoredLetter(seq, message.subject, message.time, message.data);
  }

  /**
   * Reads the deduped stream for a change that supersedes `event` (letters.ts
   * `supersedes`, `laterVerdict`): its own partition — where every change of its key goes,
   * deletes too — and, when that is not partition 0, partition 0, where the reader sends
   * every TRUNCATE. Ordered consumers from each subject's first message (or from where
   * `previous` ended: a resumed scan reads only the tail) to its last; nothing acknowledged.
   */
  async scanLater(event: ChangeEvent, partition: number, previous?: LaterScan): Promise<LaterScan> {
    const partitions = new Map<number, PartitionScan>();
    for (const p of partition === 0 ? [0] : [partition, 0]) partitions.set(p, await this.#scan(p, event, previous?.partitions.get(p)));
    const info = await this.#jsm.streams.info(streamName(this.#pipeline, 'deduped')).catch((error: unknown) => {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
      throw error;
    });
    return { partitions, trimmed: (info?.state.first_seq ?? 1) > 1 };
  }

  async #scan(partition: number, event: ChangeEvent, previous: PartitionScan | undefined): Promise<PartitionScan> {
    const stream = streamName(this.#pipeline, 'deduped');
    const subject = stageSubject(this.#pipeline, 'deduped', partition);
    const state: { -readonly [K in keyof PartitionScan]: PartitionScan[K] } = { ...(previous ?? { lastSeq: 0, seen: false }) };
    let last;
    try {
      last = await this.#jsm.streams.getMessage(stream, { last_by_subj: subject });
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return state;
      throw error;
    }
    if (!last || last.seq <= state.lastSeq) return state;
    await readSubject(this.#js, { stream, subject, fromSeq: state.lastSeq + 1, lastSeq: last.seq }, (message) => {
      for (const item of decodeOrderedMessage(message.data)) {
        if (item.kind !== 'change') continue;
        state.first ??= item.value;
        if (item.value.eventId === event.eventId) state.seen = true;
        else if (supersedes(item.value, event)) state.superseding ??= item.value;
      }
      state.lastSeq = message.seq;
      return true;
    });
    return state;
  }

  async close(): Promise<void> {
    await this.#nc.close();
  }
}

/** A letter as stored; undefined for a message that is not one (not JSON). */
function toStoredLetter(seq: number, subject: string, time: Date, data: Uint8Array): StoredLetter | undefined {
  let letter: StoredLetter['letter'];
  try {
    letter = JSON.parse(new TextDecoder().decode(data)) as StoredLetter['letter'];
  } catch {
    return undefined;
  }
  if (letter === null || typeof letter !== 'object') return undefined;
  return { seq, subject, time: time.toISOString(), letter, id: deadLetterId(letter) };
}

/**
 * Reads `subject` of `stream` in order from `fromSeq` through `lastSeq` with an ordered
 * consumer (nothing acknowledged), handing each message to `visit` until it returns false.
 * Bounded: a read that receives nothing for SCAN_IDLE_MS (retention removed the last
 * message meanwhile) fails instead of hanging.
 */
async function readSubject(
  js: JetStreamClient,
  options: { stream: string; subject: string; fromSeq: number; lastSeq: number },
  visit: (message: JsMsg) => boolean,
): Promise<void> {
  if (options.fromSeq > options.lastSeq) return;
  const consumer = await js.consumers.get(options.stream, {
    filter_subjects: options.subject,
    ...(options.fromSeq > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: options.fromSeq } : { deliver_policy: DeliverPolicy.All }),
  });
  const messages = await consumer.consume({ max_messages: 256 });
  let idle: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(idle);
    idle = setTimeout(() => void messages.close().catch(() => undefined), SCAN_IDLE_MS);
  };
  let done = false;
  try {
    arm();
    for await (const message of messages) {
      arm();
      if (!visit(message) || message.seq >= options.lastSeq) {
        done = true;
        break;
      }
    }
  } finally {
    clearTimeout(idle);
    await messages.close().catch(() => undefined);
  }
  if (!done) throw new Error(`reading ${options.subject} stopped before its last message (seq ${options.lastSeq})`);
}

/** The replay records of these letter ids in a sink (none when nothing was ever replayed there). */
export async function readReplays(sinkUrl: string, ids: readonly string[]): Promise<Map<string, ReplayRecord>> {
  const client = new pg.Client({ connectionString: sinkUrl, application_name: 'cdc-cli' });
  client.on('error', () => undefined);
  await client.connect().catch((error: unknown) => {
    throw new Error(`cannot reach the sink at ${redactUrl(sinkUrl)}: ${error instanceof Error ? error.message : String(error)}`);
  });
  try {
    const exists = await client.query<{ present: boolean }>(`SELECT to_regclass('_cdc_dlq_replays') IS NOT NULL AS present`);
    if (!exists.rows[0]?.present) return new Map();
    const hasOutcome = await client.query(`SELECT 1 FROM pg_attribute WHERE attrelid = '_cdc_dlq_replays'::regclass AND attname = 'outcome' AND NOT attisdropped`);
    const rows = await client.query<{ letter_id: string; replayed_at: Date; outcome: string }>(
      `SELECT letter_id, replayed_at, ${hasOutcome.rowCount === 0 ? `'applied'` : 'outcome'} AS outcome FROM _cdc_dlq_replays WHERE letter_id = ANY($1::text[])`,
      [ids],
    );
    return new Map(rows.rows.map((row) => [row.letter_id, { at: row.replayed_at.toISOString(), outcome: row.outcome }]));
  } finally {
    await client.end();
  }
}

/**
 * The replay records, made once per run outside the letters' transactions (DDL there would
 * hold the table's exclusive lock for a whole replay). Tables made by the first version of
 * this command lack `outcome`: every row they hold was applied.
 */
async function prepareReplayTable(client: pg.PoolClient): Promise<void> {
  // Two replays starting at once would race in CREATE TABLE IF NOT EXISTS (a unique
  // violation in pg_type): one at a time, under a transaction-scoped advisory lock.
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('cdc:_cdc_dlq_replays'))`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS _cdc_dlq_replays (letter_id text PRIMARY KEY, pipeline text NOT NULL, stream_seq bigint NOT NULL, replayed_at timestamptz NOT NULL DEFAULT now(), outcome text NOT NULL DEFAULT 'applied')`,
    );
    const has = await client.query(`SELECT 1 FROM pg_attribute WHERE attrelid = '_cdc_dlq_replays'::regclass AND attname = 'outcome' AND NOT attisdropped`);
    if (has.rowCount === 0) await client.query(`ALTER TABLE _cdc_dlq_replays ADD COLUMN outcome text NOT NULL DEFAULT 'applied'`);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** Applies letters' events to a PostgreSQL sink, each in its own transaction with its replay record. */
export class PgReplayer {
  readonly #pool: pg.Pool;
  readonly #writer: SinkWriter;
  readonly #sink: string;
  readonly #url: string;
  readonly #scanner: LaterScanner;
  #prepared: Promise<void> | undefined;

  constructor(options: { sinkUrl: string; pipeline: string; sink: string; tableMap?: string; scanner: LaterScanner }) {
    const pinned = pinValueText(options.sinkUrl);
    this.#url = options.sinkUrl;
    this.#pool = new pg.Pool({ connectionString: pinned.connectionString, options: pinned.options, max: 1, application_name: 'cdc-cli-replay' });
    this.#pool.on('error', () => undefined);
    this.#sink = options.sink;
    this.#scanner = options.scanner;
    this.#writer = new SinkWriter({
      pool: this.#pool,
      catalog: new TableCatalog(this.#pool, parseTableMap(options.tableMap ?? '')),
      pipeline: options.pipeline,
      logger: pino({ level: 'silent' }),
      // The sink table is the user's to fix before a replay: never altered from here.
      schemaChanges: 'fail',
    });
  }

  async replay(stored: StoredLetter, options: { dryRun?: boolean; force?: boolean } = {}): Promise<ReplayResult> {
    const { seq } = stored;
    const replayable = replayableEvent(stored, this.#sink);
    if ('reason' in replayable) return { seq, outcome: 'not-replayable', reason: replayable.reason };
    const { event } = replayable;
    const client = await this.#pool.connect().catch((error: unknown) => {
      throw new Error(`cannot reach the sink at ${redactUrl(this.#url)}: ${error instanceof Error ? error.message : String(error)}`);
    });
    try {
      this.#prepared ??= prepareReplayTable(client);
      await this.#prepared;
      await client.query('BEGIN');
      // Taken first: a concurrent replay of the same letter waits here for this one to end.
      const recorded = await client.query(
        `INSERT INTO _cdc_dlq_replays (letter_id, pipeline, stream_seq) VALUES ($1, $2, $3) ON CONFLICT (letter_id) DO NOTHING RETURNING replayed_at`,
        [stored.id, this.#writer.pipeline, seq],
      );
      if ((recorded.rowCount ?? 0) === 0) {
        await client.query('ROLLBACK');
        // On this connection: the pool has one, held here until the finally below.
        const at = await client.query<{ replayed_at: Date; outcome: string }>('SELECT replayed_at, outcome FROM _cdc_dlq_replays WHERE letter_id = $1', [stored.id]);
        const row = at.rows[0];
        return { seq, outcome: 'already-replayed', at: row?.replayed_at.toISOString() ?? '?', previous: row?.outcome ?? '?' };
      }
      const superseded = await this.#superseded(client, event, stored.letter.partition, options.force === true);
      if (superseded && !superseded.record) {
        await client.query('ROLLBACK');
        return { seq, outcome: 'refused', reason: superseded.reason };
      }
      if (superseded) {
        await client.query(`UPDATE _cdc_dlq_replays SET outcome = 'superseded' WHERE letter_id = $1`, [stored.id]);
        await client.query(options.dryRun ? 'ROLLBACK' : 'COMMIT');
        return { seq, outcome: 'superseded', reason: superseded.reason };
      }
      const outcome = await this.#writer.applyChunk(client, [event]);
      const refusal = outcome.refusals[0];
      if (refusal) {
        await client.query('ROLLBACK');
        return { seq, outcome: 'refused', reason: `${refusal.error.code}: ${refusal.error.message}` };
      }
      if (options.dryRun) {
        await client.query('ROLLBACK');
        return { seq, outcome: 'would-apply' };
      }
      await client.query('COMMIT');
      return { seq, outcome: 'applied', rowsWritten: outcome.rowsWritten };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      return { seq, outcome: 'refused', reason: error instanceof Error ? error.message : String(error) };
    } finally {
      client.release();
    }
  }

  /**
   * Why the event must not be applied: superseded (`record`: say so for good), or
   * unverifiable (refused). The long scan runs first without a lock; then this
   * transaction takes the pipeline's `cdc_owner` row FOR SHARE — every committer batch
   * takes it FOR UPDATE first — and reads the tail the stream grew meanwhile. So a delete
   * the committer applies before this commit is in the scan, and one it applies after
   * waits for this commit and removes the replayed row by the version guard.
   */
  async #superseded(client: pg.PoolClient, event: ChangeEvent, partition: number | undefined, force: boolean): Promise<{ reason: string; record: boolean } | undefined> {
    if (event.op === 'delete' || event.op === 'truncate') return undefined;
    if (partition === undefined) return force ? undefined : { reason: 'the letter names no partition: cannot check for a later delete of its row (--force to apply anyway)', record: false };
    const early = await this.#scanner.scanLater(event, partition);
    const owner = await client.query<{ present: boolean }>(`SELECT to_regclass('public.cdc_owner') IS NOT NULL AS present`);
    if (owner.rows[0]?.present) await client.query('SELECT 1 FROM public.cdc_owner WHERE pipeline = $1 FOR SHARE', [this.#writer.pipeline]);
    const verdict = laterVerdict(await this.#scanner.scanLater(event, partition, early), event, partition);
    if (!verdict.covered) {
      return force
        ? undefined
        : { reason: 'retention removed part of the deduped stream after this event: cannot rule out a later delete of its row or truncate of its table (--force to apply anyway)', record: false };
    }
    if (!verdict.superseding) return undefined;
    const by = verdict.superseding;
    return { reason: `a later ${by.op} (lsn ${by.commitLsn}, event ${by.eventId}) removed the row: replaying would bring it back`, record: true };
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}
