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
 * Not replayed here: letters of other stages (the event never reached a sink; the stage
 * that refused it names why) and of Kafka sinks — listed with the reason.
 */
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { deadLetterId, pinValueText, streamName, type ChangeEvent, type DeadLetter } from '@cdc/core';
import { SinkWriter, TableCatalog, parseTableMap } from '@cdc/sink-pg';
import pg from 'pg';
import { pino } from 'pino';

export interface StoredLetter {
  /** Stream sequence in the dlq stream: what `show` and `replay` take. */
  readonly seq: number;
  readonly subject: string;
  readonly time: string;
  readonly letter: DeadLetter & { readonly sqlstate?: string };
  readonly id: string | undefined;
}

export class DeadLetterStore {
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #stream: string;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, stream: string) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#stream = stream;
  }

  static async open(natsUrl: string, pipeline: string): Promise<DeadLetterStore> {
    const url = new URL(natsUrl);
    const nc = await connect({
      servers: `${url.hostname}:${url.port || '4222'}`,
      name: `cdc-cli-${pipeline}`,
      ...(url.username ? { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) } : {}),
      timeout: 5_000,
    });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 5_000 });
      return new DeadLetterStore(nc, jsm, streamName(pipeline, 'dlq'));
    } catch (error) {
      await nc.close();
      throw error;
    }
  }

  /** Letters in stream order, optionally of one stage, at most `limit` (bounded: one get per letter). */
  async list(options: { stage?: string; limit: number }): Promise<StoredLetter[]> {
    let info;
    try {
      info = await this.#jsm.streams.info(this.#stream);
    } catch {
      return [];
    }
    const out: StoredLetter[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && out.length < options.limit; seq++) {
      const stored = await this.get(seq);
      if (!stored) continue;
      if (options.stage && stored.letter.stage !== options.stage) continue;
      out.push(stored);
    }
    return out;
  }

  async get(seq: number): Promise<StoredLetter | undefined> {
    const message = await this.#jsm.streams.getMessage(this.#stream, { seq }).catch(() => null);
    if (!message) return undefined;
    let letter: StoredLetter['letter'];
    try {
      letter = JSON.parse(new TextDecoder().decode(message.data)) as StoredLetter['letter'];
    } catch {
      return undefined;
    }
    return { seq, subject: message.subject, time: message.time.toISOString(), letter, id: deadLetterId(letter) };
  }

  async close(): Promise<void> {
    await this.#nc.close();
  }
}

export type ReplayResult =
  | { readonly seq: number; readonly outcome: 'applied'; readonly rowsWritten: number }
  | { readonly seq: number; readonly outcome: 'already-replayed'; readonly at: string }
  | { readonly seq: number; readonly outcome: 'refused' | 'not-replayable'; readonly reason: string }
  | { readonly seq: number; readonly outcome: 'would-apply' };

/** Applies letters' events to a PostgreSQL sink, each in its own transaction with its replay record. */
export class PgReplayer {
  readonly #pool: pg.Pool;
  readonly #writer: SinkWriter;
  readonly #sink: string;

  constructor(options: { sinkUrl: string; pipeline: string; sink: string; tableMap?: string }) {
    const pinned = pinValueText(options.sinkUrl);
    this.#pool = new pg.Pool({ connectionString: pinned.connectionString, options: pinned.options, max: 1, application_name: 'cdc-cli-replay' });
    this.#pool.on('error', () => undefined);
    this.#sink = options.sink;
    this.#writer = new SinkWriter({
      pool: this.#pool,
      catalog: new TableCatalog(this.#pool, parseTableMap(options.tableMap ?? '')),
      pipeline: options.pipeline,
      logger: pino({ level: 'silent' }),
      // The sink table is the user's to fix before a replay: never altered from here.
      schemaChanges: 'fail',
    });
  }

  async replay(stored: StoredLetter, options: { dryRun?: boolean } = {}): Promise<ReplayResult> {
    const { letter, seq } = stored;
    if (letter.stage !== 'committer') return { seq, outcome: 'not-replayable', reason: `a ${letter.stage} letter never reached a sink; fix its cause at the ${letter.stage}` };
    if (letter.sink !== this.#sink) return { seq, outcome: 'not-replayable', reason: `a letter of sink ${letter.sink ?? '?'}, not ${this.#sink}` };
    if (letter.payloadTruncated) return { seq, outcome: 'not-replayable', reason: 'its payload was cut to fit the bus' };
    if (stored.id === undefined) return { seq, outcome: 'not-replayable', reason: 'the letter has no event id' };
    let event: ChangeEvent;
    try {
      event = JSON.parse(letter.payload) as ChangeEvent;
      if (event.kind !== 'change' || typeof event.table !== 'string' || !Array.isArray(event.key)) throw new Error('not a change event');
    } catch (error) {
      return { seq, outcome: 'not-replayable', reason: `its payload is not a change event (${error instanceof Error ? error.message : String(error)})` };
    }
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(
        `CREATE TABLE IF NOT EXISTS _cdc_dlq_replays (letter_id text PRIMARY KEY, pipeline text NOT NULL, stream_seq bigint NOT NULL, replayed_at timestamptz NOT NULL DEFAULT now())`,
      );
      const recorded = await client.query<{ replayed_at: Date }>(
        `INSERT INTO _cdc_dlq_replays (letter_id, pipeline, stream_seq) VALUES ($1, $2, $3) ON CONFLICT (letter_id) DO NOTHING RETURNING replayed_at`,
        [stored.id, this.#writer.pipeline, seq],
      );
      if ((recorded.rowCount ?? 0) === 0) {
        await client.query('ROLLBACK');
        // On this connection: the pool has one, held here until the finally below.
        const at = await client.query<{ replayed_at: Date }>('SELECT replayed_at FROM _cdc_dlq_replays WHERE letter_id = $1', [stored.id]);
        return { seq, outcome: 'already-replayed', at: at.rows[0]?.replayed_at.toISOString() ?? '?' };
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

  async close(): Promise<void> {
    await this.#pool.end();
  }
}
