/**
 * A reader "world" for integration tests: unique tables, slot, publication and pipeline
 * on the real servers, a Bus and a CheckpointStore, helpers to read the raw stream and the
 * slot, and cleanup (readers closed first, then slot, publication, tables, streams, etcd keys).
 */
import { Bus } from '@cdc/bus';
import { CheckpointStore } from '@cdc/checkpoint';
import { Lsn, STAGES, decodeRawMessage, dlqSubject, streamName, type ChangeEvent, type DeadLetter, type RawMessage, type SourceHeartbeat } from '@cdc/core';
import { createLogger, type Logger } from '@cdc/runtime';
import type pg from 'pg';
import { waitFor, type TestContext } from '../harness/index.ts';
// The package's public door; tests/package.json does not list @cdc/pg-source yet.
import { Reader, type ReaderOptions } from '@cdc/pg-source';

export { Reader };

export interface RawRecord {
  readonly subject: string;
  readonly partition: number;
  readonly seq: number;
  readonly msgId: string | undefined;
  readonly traceHeader: string | undefined;
  readonly message: RawMessage;
  /** Items in the stored message this one came from (many events travel in one message). */
  readonly batch: number;
}

/**
 * Records in commit order (lamport, then position in the transaction). The raw stream keeps
 * order per partition; messages of different partitions (each a batch) may be stored in
 * either order.
 */
export function inCommitOrder<R extends { readonly message: ChangeEvent }>(records: readonly R[]): R[] {
  return [...records].sort((a, b) => {
    const [x, y] = [BigInt(a.message.lamport), BigInt(b.message.lamport)];
    return x === y ? a.message.seq - b.message.seq : x < y ? -1 : 1;
  });
}

export interface WorldOptions {
  readonly partitions: number;
  /** Table name prefix → column definitions, e.g. `{ orders: '(id int primary key, v text)' }`. */
  readonly tables: Readonly<Record<string, string>>;
  /** Reuse another world's slot and publication (a second pipeline reading the same slot). */
  readonly slotOf?: ReaderWorld;
}

export class ReaderWorld {
  readonly pipeline: string;
  readonly source = 'pg1';
  readonly slot: string;
  readonly publication: string;
  /** prefix → `public.<unique name>` */
  readonly tables: Record<string, string> = {};
  readonly #raw: RawRecord[] = [];
  #nextSeq = 1;

  private constructor(
    readonly ctx: TestContext,
    readonly options: WorldOptions,
    readonly db: pg.Client,
    readonly bus: Bus,
    readonly checkpoints: CheckpointStore,
    readonly logger: Logger,
  ) {
    this.pipeline = ctx.uniqueName('rd');
    this.slot = options.slotOf?.slot ?? ctx.uniqueName('slot');
    this.publication = options.slotOf?.publication ?? ctx.uniqueName('pub');
  }

  static async create(ctx: TestContext, options: WorldOptions): Promise<ReaderWorld> {
    const logger = createLogger({ app: 'test-reader', level: process.env.CDC_TEST_LOG_LEVEL ?? 'silent' });
    const db = await ctx.pg();
    const bus = await Bus.create({ url: ctx.servers.nats, name: 'test-reader', logger });
    ctx.defer('bus close', () => bus.close());
    const checkpoints = await CheckpointStore.create({ url: ctx.servers.etcd, logger, leaseTtlSeconds: 30 });
    ctx.defer('checkpoints close', () => checkpoints.close());
    const world = new ReaderWorld(ctx, options, db, bus, checkpoints, logger);
    ctx.defer('etcd keys', () => checkpoints.deletePipeline(world.pipeline));
    ctx.defer('streams', async () => {
      for (const stage of [...STAGES, 'dlq' as const]) await bus.jsm.streams.delete(streamName(world.pipeline, stage)).catch(() => undefined);
    });
    if (!options.slotOf) {
      // Runs after every reader of the test is closed (cleanup is newest first).
      ctx.defer('slot and publication', () => world.dropSlotAndPublication());
    }
    for (const [prefix, columns] of Object.entries(options.tables)) {
      const name = ctx.uniqueName(prefix);
      await db.query(`CREATE TABLE public.${name} ${columns}`);
      world.tables[prefix] = `public.${name}`;
      ctx.defer(`drop ${name}`, () => db.query(`DROP TABLE IF EXISTS public.${name}`));
    }
    await bus.ensurePipelineStreams(world.pipeline);
    return world;
  }

  /** The reader app's environment for this world, reading the table `prefix`; health on a free port. */
  appEnv(prefix: string, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
    return {
      PIPELINE: this.pipeline,
      SOURCE_ID: this.source,
      SOURCE_DATABASE_URL: this.ctx.servers.postgres,
      TABLES: this.table(prefix),
      PARTITIONS: String(this.options.partitions),
      SLOT_NAME: this.slot,
      PUBLICATION_NAME: this.publication,
      HEALTH_PORT: '0',
      ...extra,
    };
  }

  table(prefix: string): string {
    const table = this.tables[prefix];
    if (!table) throw new Error(`no table ${prefix}`);
    return table;
  }

  readerOptions(overrides: Partial<ReaderOptions> = {}): ReaderOptions {
    return {
      pipeline: this.pipeline,
      source: this.source,
      connectionString: this.ctx.servers.postgres,
      tables: Object.values(this.tables),
      partitions: this.options.partitions,
      slotName: this.slot,
      publicationName: this.publication,
      bus: this.bus,
      checkpoints: this.checkpoints,
      logger: this.logger,
      heartbeatIntervalMs: 200,
      watermarkIntervalMs: 50,
      ackIntervalMs: 100,
      ...overrides,
    };
  }

  /** Starts a reader that is closed when the test ends (if the test did not close it). */
  async start(overrides: Partial<ReaderOptions> = {}): Promise<Reader> {
    const reader = await Reader.create(this.readerOptions(overrides));
    this.ctx.defer('reader close', () => reader.close());
    return reader;
  }

  /** Every message of the raw stream so far, in stream order. */
  async raw(): Promise<readonly RawRecord[]> {
    const stream = streamName(this.pipeline, 'raw');
    const info = await this.bus.jsm.streams.info(stream);
    for (; this.#nextSeq <= info.state.last_seq; this.#nextSeq++) {
      const stored = await this.bus.jsm.streams.getMessage(stream, { seq: this.#nextSeq });
      if (!stored) continue;
      // One record per item: a message carries one or many (@cdc/core wire.ts).
      const items = decodeRawMessage(stored.data);
      for (const item of items) {
        if (item.kind === 'poison') throw new Error(`raw message ${stored.seq} holds an undecodable item: ${item.reason}`);
        this.#raw.push({
          subject: stored.subject,
          partition: Number(stored.subject.split('.').at(-1)),
          seq: stored.seq,
          msgId: stored.header?.get('Nats-Msg-Id') || undefined,
          traceHeader: stored.header?.get('Cdc-Trace-Id') || undefined,
          message: item.value,
          batch: items.length,
        });
      }
    }
    return this.#raw;
  }

  async changes(): Promise<(RawRecord & { message: ChangeEvent })[]> {
    return (await this.raw()).filter((r): r is RawRecord & { message: ChangeEvent } => r.message.kind === 'change');
  }

  async heartbeats(): Promise<(RawRecord & { message: SourceHeartbeat })[]> {
    return (await this.raw()).filter((r): r is RawRecord & { message: SourceHeartbeat } => r.message.kind === 'heartbeat');
  }

  /** Waits for at least `count` change events and returns all of them. */
  async waitForChanges(count: number, timeoutMs = 20_000): Promise<(RawRecord & { message: ChangeEvent })[]> {
    return waitFor(
      async () => {
        const changes = await this.changes();
        return changes.length >= count ? changes : undefined;
      },
      { what: `${count} change events on the raw stream of ${this.pipeline}`, timeoutMs, intervalMs: 100 },
    );
  }

  /** Waits until every partition has a heartbeat with lamport >= `lamport`; returns the first such per partition. */
  async waitForWatermark(lamport: bigint, timeoutMs = 20_000): Promise<SourceHeartbeat[]> {
    return waitFor(
      async () => {
        const heartbeats = await this.heartbeats();
        const found: SourceHeartbeat[] = [];
        for (let partition = 0; partition < this.options.partitions; partition++) {
          const hb = heartbeats.find((h) => h.partition === partition && BigInt(h.message.lamport) >= lamport);
          if (!hb) return undefined;
          found.push(hb.message);
        }
        return found;
      },
      { what: `a watermark >= ${lamport} in all ${this.options.partitions} partitions`, timeoutMs, intervalMs: 100 },
    );
  }

  /** Every letter on `cdc.<pipeline>.dlq.reader`, oldest first, with its size as stored. */
  async deadLetters(): Promise<(DeadLetter & Record<string, unknown> & { storedBytes: number })[]> {
    const stream = streamName(this.pipeline, 'dlq');
    const info = await this.bus.jsm.streams.info(stream);
    const letters: (DeadLetter & Record<string, unknown> & { storedBytes: number })[] = [];
    for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
      const stored = await this.bus.jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (stored?.subject === dlqSubject(this.pipeline, 'reader')) letters.push({ ...stored.json<DeadLetter & Record<string, unknown>>(), storedBytes: stored.data.length });
    }
    return letters;
  }

  async slotConfirmed(): Promise<Lsn | undefined> {
    const result = await this.db.query<{ lsn: string | null }>(
      'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
      [this.slot],
    );
    const text = result.rows[0]?.lsn;
    return text ? Lsn.parse(text) : undefined;
  }

  /** What the committer would publish: `lsn` as this source's position in the given partitions (default all). */
  async commitThrough(lsn: string, partitions?: readonly number[]): Promise<void> {
    const all = partitions ?? Array.from({ length: this.options.partitions }, (_, p) => p);
    await this.checkpoints.publishPartitions(
      this.pipeline,
      all.map((partition) => ({
        partition,
        positions: { [this.source]: lsn },
        lamport: '0',
        epoch: 1,
        updatedAt: new Date().toISOString(),
      })),
    );
  }

  async dropSlotAndPublication(): Promise<void> {
    // The walsender of a closed reader may still hold the slot for a moment (PITFALLS 9).
    await waitFor(
      async () => {
        const result = await this.db.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [this.slot]);
        if (result.rowCount === 0) return true;
        if (result.rows[0].active) return false;
        await this.db.query('SELECT pg_drop_replication_slot($1)', [this.slot]);
        return true;
      },
      { what: `slot ${this.slot} released and dropped`, timeoutMs: 10_000, intervalMs: 100 },
    );
    await this.db.query(`DROP PUBLICATION IF EXISTS ${this.publication}`);
  }
}
