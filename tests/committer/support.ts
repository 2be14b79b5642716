/**
 * Helpers for the committer's integration tests: a fresh sink database, a pipeline with
 * its streams, synthetic deduped.<p> traffic (ChangeEvents and PartitionHeartbeats as the
 * dedup gate would publish them) and an audit trigger that records every row write.
 */
import { Bus } from '@cdc/bus';
import {
  Lsn,
  batchHeaders,
  batchMsgId,
  encodeItem,
  joinItems,
  orderKeyOf,
  partitionOf,
  stageSubject,
  streamName,
  type ChangeEvent,
  type DeadLetter,
  type Op,
  type OrderedMessage,
  type PartitionHeartbeat,
  type Row,
} from '@cdc/core';
import type { Logger } from '@cdc/runtime';
import { PgSink, SinkWriter, TableCatalog, acquireEpoch, ensureBookkeeping, type PgCommitter, type PgCommitterOptions } from '@cdc/sink-pg';
import { changeEvent, watermark } from '@cdc/testkit';
import pg from 'pg';
import { pino } from 'pino';
import type { ManagedProcess, TestContext } from '../harness/index.ts';
import { waitFor } from '../harness/index.ts';

export const logger: Logger = pino({ level: process.env.CDC_TEST_LOG ?? 'silent' });

/** A sink database of its own, dropped (WITH FORCE) when the context closes. */
export async function createSinkDatabase(ctx: TestContext): Promise<{ url: string; db: pg.Client }> {
  const admin = await ctx.pg();
  const name = ctx.uniqueName('sink');
  await admin.query(`CREATE DATABASE ${name}`);
  ctx.defer(`drop database ${name}`, () => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  const url = new URL(ctx.servers.postgres);
  url.pathname = `/${name}`;
  const db = new pg.Client({ connectionString: url.toString() });
  db.on('error', () => undefined);
  await db.connect();
  ctx.defer(`end ${name} client`, () => db.end());
  return { url: url.toString(), db };
}

/** Streams of a fresh pipeline, deleted (with its etcd keys) when the context closes. */
export async function createPipeline(ctx: TestContext): Promise<{ pipeline: string; bus: Bus }> {
  const pipeline = ctx.uniqueName('cmt');
  const bus = await Bus.create({ url: ctx.servers.nats, name: `test-${pipeline}`, logger });
  await bus.ensurePipelineStreams(pipeline);
  ctx.defer(`delete streams of ${pipeline}`, async () => {
    for (const stage of ['raw', 'ordered', 'deduped', 'dlq'] as const) {
      await bus.jsm.streams.delete(streamName(pipeline, stage)).catch(() => undefined);
    }
    await bus.close();
  });
  const etcd = ctx.etcd();
  ctx.defer(`delete etcd keys of ${pipeline}`, async () => {
    await etcd.delete().prefix(`/checkpoints/${pipeline}/`);
  });
  return { pipeline, bus };
}

/** createPipeline, one source's transactions (SourceLog) and a publisher to deduped.<p>. */
export async function createPublishingPipeline(
  ctx: TestContext,
  partitions: number,
  source: { startLsn?: bigint } = {},
): Promise<{ pipeline: string; bus: Bus; log: SourceLog; out: DedupedPublisher }> {
  const { pipeline, bus } = await createPipeline(ctx);
  return { pipeline, bus, log: new SourceLog({ partitions, ...source }), out: new DedupedPublisher(bus, pipeline, partitions) };
}

export interface RowChange {
  readonly table: string;
  readonly op: Op;
  readonly key: readonly string[];
  readonly keyColumns?: readonly string[];
  readonly after?: Row | null;
  readonly before?: Row | null;
  readonly unchanged?: readonly string[];
}

/**
 * One source's transactions, with what a reader would stamp: commit LSNs growing by
 * 0x100, seq = index in the transaction, lamport = max(commit µs, previous + 1).
 */
export class SourceLog {
  readonly source: string;
  readonly partitions: number;
  #lsn: bigint;
  #lamport: bigint;

  constructor(options: { source?: string; partitions: number; startLsn?: bigint; startLamport?: bigint }) {
    this.source = options.source ?? 'src';
    this.partitions = options.partitions;
    this.#lsn = options.startLsn ?? 0x1_0000_0000n;
    this.#lamport = options.startLamport ?? 1_700_000_000_000_000n;
  }

  get lamport(): bigint {
    return this.#lamport;
  }

  get lastCommitLsn(): string {
    return Lsn.format(Lsn.fromBigInt(this.#lsn));
  }

  transaction(changes: readonly RowChange[]): ChangeEvent[] {
    this.#lsn += 0x100n;
    this.#lamport += 1n + BigInt(Math.floor(Math.random() * 3));
    const commitLsn = Lsn.format(Lsn.fromBigInt(this.#lsn));
    return changes.map((change, seq) => {
      const lsn = Lsn.format(Lsn.fromBigInt(this.#lsn - 0x80n + BigInt(seq)));
      return changeEvent({
        source: this.source,
        table: change.table,
        keyColumns: change.keyColumns ?? ['id'],
        key: change.key,
        op: change.op,
        before: change.before ?? null,
        after: change.after === undefined ? null : change.after,
        unchanged: change.unchanged ?? [],
        lsn,
        commitLsn,
        seq,
        xid: Number(this.#lsn & 0xffffn),
        commitTs: new Date().toISOString(),
        lamport: this.#lamport,
        traceId: `t-${commitLsn}-${seq}`,
      });
    });
  }

  /** The watermark a reorderer would publish after these transactions. */
  watermark(): PartitionHeartbeat {
    return watermark(this.#lamport, { [this.source]: this.lastCommitLsn });
  }

  partitionOf(event: ChangeEvent): number {
    return partitionOf(event.table, event.key, this.partitions);
  }
}

/** Publishes to deduped.<p> like the dedup gate: events to their partition, watermarks to every partition. */
export class DedupedPublisher {
  readonly #bus: Bus;
  readonly #pipeline: string;
  readonly #partitions: number;
  readonly #publisher;
  /** Distinct msg ids let a test re-publish the same events (a replay beyond the duplicate window). */
  #round = 0;

  constructor(bus: Bus, pipeline: string, partitions: number) {
    this.#bus = bus;
    this.#pipeline = pipeline;
    this.#partitions = partitions;
    // Never at capacity: each publish is sent at once, in call order; flush() awaits the PubAcks.
    this.#publisher = bus.publisher({ maxInFlight: 1_000_000 });
  }

  newRound(): void {
    this.#round += 1;
  }

  async event(event: ChangeEvent, partition = partitionOf(event.table, event.key, this.#partitions)): Promise<void> {
    this.#publisher
      .publish(stageSubject(this.#pipeline, 'deduped', partition), event, { msgId: `${event.eventId}:${this.#round}` })
      .catch(() => undefined); // reported by flush()
  }

  async events(events: readonly ChangeEvent[]): Promise<void> {
    for (const event of events) await this.event(event);
  }

  /**
   * Many items in ONE message on `partition`, as the gate writes them (@cdc/core wire.ts):
   * change events and, for a poison test, raw bytes in between.
   */
  async batch(partition: number, items: readonly (ChangeEvent | Uint8Array)[]): Promise<void> {
    const events = items.filter((item): item is ChangeEvent => !(item instanceof Uint8Array));
    const bounds = { count: events.length, firstKey: orderKeyOf(events[0] as ChangeEvent), lastKey: orderKeyOf(events.at(-1) as ChangeEvent) };
    const data = joinItems(items.map((item) => (item instanceof Uint8Array ? item : encodeItem(item))));
    this.#publisher
      .publish(stageSubject(this.#pipeline, 'deduped', partition), data, { msgId: `${batchMsgId(`d:${partition}`, bounds)}:${this.#round}`, headers: batchHeaders(bounds) })
      .catch(() => undefined); // reported by flush()
  }

  async watermark(message: PartitionHeartbeat): Promise<void> {
    for (let p = 0; p < this.#partitions; p++) await this.raw(p, message, `hb:${p}:${message.lamport}:${this.#round}`);
  }

  async raw(partition: number, payload: OrderedMessage | Uint8Array | Record<string, unknown>, msgId: string): Promise<void> {
    this.#publisher.publish(stageSubject(this.#pipeline, 'deduped', partition), payload, { msgId }).catch(() => undefined);
  }

  async flush(): Promise<void> {
    await this.#publisher.flush();
  }

  get bus(): Bus {
    return this.#bus;
  }
}

/** A committer in this process, closed with the context. */
export async function startCommitter(
  ctx: TestContext,
  options: Omit<PgCommitterOptions, 'bus' | 'logger'> & { bus?: Bus },
): Promise<PgCommitter> {
  const bus = options.bus ?? (await Bus.create({ url: ctx.servers.nats, name: 'committer-under-test', logger }));
  if (!options.bus) ctx.defer('committer bus close', () => bus.close());
  const committer = await PgSink.createCommitter({ batchLingerMs: 10, progressIntervalMs: 60_000, ...options, bus, logger });
  ctx.defer('committer close', () => committer.close());
  return committer;
}

/** Waits until every partition's stored watermark reached `lamport` (so everything before it is applied). */
export async function waitForWatermark(db: pg.Client, pipeline: string, partitions: number, lamport: bigint, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    async () => {
      const { rows } = await db.query<{ n: string }>(
        'SELECT count(*) AS n FROM cdc_checkpoint WHERE pipeline = $1 AND lamport >= $2::numeric',
        [pipeline, lamport.toString()],
      );
      return Number(rows[0]?.n) === partitions;
    },
    { what: `every partition of ${pipeline} committed through lamport ${lamport}`, timeoutMs, intervalMs: 25 },
  );
}

/** Every dead letter of the pipeline's committer stage, oldest first. */
export async function deadLetters(bus: Bus, pipeline: string): Promise<(DeadLetter & { sqlstate?: string })[]> {
  const stream = streamName(pipeline, 'dlq');
  const info = await bus.jsm.streams.info(stream);
  const letters: (DeadLetter & { sqlstate?: string })[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const message = await bus.jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (message?.subject === `cdc.${pipeline}.dlq.committer`) letters.push(message.json());
  }
  return letters;
}

/**
 * An AFTER ROW trigger that logs every write with the row's version: replaying must not
 * add a single line (each (key, version) exactly once).
 */
export async function addAuditTrigger(db: pg.Client, table: string): Promise<string> {
  const audit = `${table.replace(/^.*\./, '')}_audit`;
  await db.query(`
    CREATE TABLE ${audit} (n bigserial PRIMARY KEY, op text NOT NULL, id text NOT NULL, lsn pg_lsn, seq integer, at timestamptz DEFAULT clock_timestamp());
    CREATE FUNCTION ${audit}_fn() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        INSERT INTO ${audit} (op, id, lsn, seq) VALUES (TG_OP, OLD.id::text, OLD._cdc_lsn, OLD._cdc_seq);
        RETURN OLD;
      END IF;
      INSERT INTO ${audit} (op, id, lsn, seq) VALUES (TG_OP, NEW.id::text, NEW._cdc_lsn, NEW._cdc_seq);
      RETURN NEW;
    END $$;
    CREATE TRIGGER ${audit}_trg AFTER INSERT OR UPDATE OR DELETE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${audit}_fn();`);
  return audit;
}

/**
 * Three source transactions into `table` (id integer key, txn integer): 3 rows, then
 * `size` rows in ONE transaction, then 3 rows, each followed by a watermark. Keys: 0–2,
 * 100–(99 + size), then the next three. `decorate` may add column types. Inside the big
 * transaction, every 1,000 rows, every partition gets the watermark from before it again
 * (as a reorderer's heartbeats below a transaction still arriving): no sink may take
 * that for its end.
 */
export async function publishBigBetweenSmall(
  out: DedupedPublisher,
  log: SourceLog,
  options: { table: string; size: number; decorate?: (events: ChangeEvent[]) => ChangeEvent[] },
): Promise<void> {
  const rows = (txn: number, from: number, count: number): RowChange[] =>
    Array.from({ length: count }, (_, i) => ({ table: options.table, op: 'insert' as const, key: [String(from + i)], after: { id: String(from + i), txn: String(txn) } }));
  const decorate = options.decorate ?? ((events: ChangeEvent[]) => events);
  for (const [txn, from, count] of [[1, 0, 3], [2, 100, options.size], [3, 100 + options.size, 3]] as const) {
    const before = log.watermark();
    const events = decorate(log.transaction(rows(txn, from, count)));
    for (let start = 0; start < events.length; start += 1_000) {
      await out.events(events.slice(start, start + 1_000));
      if (start + 1_000 < events.length) {
        for (let p = 0; p < log.partitions; p++) await out.raw(p, before, `hb-inside:${txn}:${p}:${start}`);
      }
    }
    await out.watermark(log.watermark());
  }
  await out.flush();
}

/**
 * The environment of a committer process of `pipeline` in these tests (SINK=postgres
 * unless `settings` says otherwise); `settings` adds or overrides variables.
 */
export function committerProcessEnv(ctx: TestContext, pipeline: string, partitions: number, settings: Record<string, string>): Record<string, string> {
  return {
    PIPELINE: pipeline,
    PARTITIONS: String(partitions),
    NATS_URL: ctx.servers.nats,
    ETCD_URL: ctx.servers.etcd,
    BATCH_LINGER_MS: '5',
    HEALTH_PORT: '0',
    LOG_LEVEL: 'info',
    ...settings,
  };
}

/** Waits for the `count`-th line of `app` matching `pattern` (each at most `timeoutMs` apart). */
export async function waitForNthLine(app: ManagedProcess, pattern: RegExp, count: number, timeoutMs: number): Promise<void> {
  let from = 0;
  for (let seen = 0; seen < count; seen++) {
    const line = await app.waitForLine(pattern, timeoutMs, { from });
    from = line.index + 1;
  }
}

/** A SinkWriter on its own pool (ended with the context) that owns `pipeline` in the sink: its epoch. */
export async function openSinkWriter(ctx: TestContext, sinkUrl: string, pipeline: string): Promise<{ writer: SinkWriter; pool: pg.Pool; epoch: number }> {
  const pool = new pg.Pool({ connectionString: sinkUrl, max: 2 });
  // As PgSink does: a connection the cleanup's DROP DATABASE … WITH (FORCE) terminates
  // (57P01) must not become an uncaught error event, idle or checked out.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  ctx.defer('pool end', () => pool.end());
  const client = await pool.connect();
  await ensureBookkeeping(client);
  const epoch = await acquireEpoch(client, pipeline);
  client.release();
  return { writer: new SinkWriter({ pool, catalog: new TableCatalog(pool), pipeline, logger }), pool, epoch };
}
