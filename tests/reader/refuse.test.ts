import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { Lsn, STAGES, UnreachableError, streamName } from '@cdc/core';
import { createLogger } from '@cdc/runtime';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import {
  PublicationMismatchError,
  SlotLostError,
  SlotMismatchError,
  TableWithoutKeyError,
  setupSource,
} from '@cdc/pg-source';
import { Reader, ReaderWorld } from './support.ts';

describe('reader: bad input is refused at start-up', () => {
  test('a table without primary key and without REPLICA IDENTITY FULL is refused, naming the table; nothing is created', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, {
      partitions: 2,
      tables: { keyed: '(id int PRIMARY KEY)', nokey: '(a int, b text)' },
    });
    const start = Reader.create(world.readerOptions());
    await expect(start).rejects.toBeInstanceOf(TableWithoutKeyError);
    await expect(start).rejects.toThrow(new RegExp(`table ${world.table('nokey').replace('.', '\\.')} has no primary key`));
    const slots = await world.db.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [world.slot]);
    const pubs = await world.db.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [world.publication]);
    expect(slots.rowCount).toBe(0);
    expect(pubs.rowCount).toBe(0);

    // With REPLICA IDENTITY FULL the same table is accepted, keyed by all its columns.
    await world.db.query(`ALTER TABLE ${world.table('nokey')} REPLICA IDENTITY FULL`);
    const prepared = await setupSource({
      connectionString: ctx.servers.postgres,
      tables: Object.values(world.tables),
      publicationName: world.publication,
      slotName: world.slot,
      logger: world.logger,
    });
    expect(prepared.tables.map((t) => [t.table, t.keyColumns, t.primaryKey])).toEqual([
      [world.table('keyed'), ['id'], true],
      [world.table('nokey'), ['a', 'b'], false],
    ]);
    expect(prepared.slot.created).toBe(true);
    expect(prepared.publication.created).toBe(true);
  });

  test('an existing publication with other tables or operations is refused, never reused', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { a: '(id int PRIMARY KEY)', b: '(id int PRIMARY KEY)' } });
    await world.db.query(`CREATE PUBLICATION ${world.publication} FOR TABLE ${world.table('a')}`);
    const start = Reader.create(world.readerOptions());
    await expect(start).rejects.toBeInstanceOf(PublicationMismatchError);
    await expect(start).rejects.toThrow(new RegExp(`publication ${world.publication} exists with other settings \\(it lacks ${world.table('b')}`));

    await world.db.query(`DROP PUBLICATION ${world.publication}`);
    await world.db.query(`CREATE PUBLICATION ${world.publication} FOR TABLE ${world.table('a')}, ${world.table('b')} WITH (publish = 'insert, update')`);
    await expect(Reader.create(world.readerOptions())).rejects.toThrow(/it does not publish delete, truncate/);
    // Refused before the slot: nothing half-created.
    const slots = await world.db.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [world.slot]);
    expect(slots.rowCount).toBe(0);
  });

  test('an existing slot of another output plugin is refused, never reused', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 2, tables: { a: '(id int PRIMARY KEY)' } });
    await world.db.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [world.slot]);
    const start = Reader.create(world.readerOptions());
    await expect(start).rejects.toBeInstanceOf(SlotMismatchError);
    await expect(start).rejects.toThrow(new RegExp(`replication slot ${world.slot} exists with other settings \\(its plugin is test_decoding, not pgoutput\\)`));
  });

  test('a slot recreated behind the reader\'s back (past every LSN it confirmed) stops the reader loudly: a gap', async ({ ctx }) => {
    const world = await ReaderWorld.create(ctx, { partitions: 1, tables: { a: '(id int PRIMARY KEY)' } });
    const reader = await world.start();
    await world.db.query(`INSERT INTO ${world.table('a')} VALUES (1)`);
    const [change] = await world.waitForChanges(1);
    const [hb] = await world.waitForWatermark(BigInt(change!.message.lamport));
    await world.commitThrough(hb!.lsn);
    await waitFor(async () => (await world.slotConfirmed()) === Lsn.parse(hb!.lsn), { what: 'slot confirmed', timeoutMs: 10_000 });
    await reader.close();
    await world.dropSlotAndPublication();
    await world.db.query(`INSERT INTO ${world.table('a')} VALUES (2)`); // lost: no slot was there to keep it
    const restart = Reader.create(world.readerOptions());
    await expect(restart).rejects.toBeInstanceOf(SlotLostError);
    await expect(restart).rejects.toThrow(/is past every position this reader ever confirmed/);
  });

  test('an unreachable server is a clear, retriable error within seconds, without the password', async ({ ctx }) => {
    const started = Date.now();
    const attempt = setupSource({
      connectionString: 'postgres://postgres:s3cret@127.0.0.1:1/postgres',
      tables: ['public.x'],
      publicationName: ctx.uniqueName('pub'),
      slotName: ctx.uniqueName('slot'),
      logger: createLogger({ app: 'test', level: 'silent' }),
    });
    const error = await attempt.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UnreachableError);
    expect((error as UnreachableError).retriable).toBe(true);
    expect((error as Error).message).toMatch(/PostgreSQL at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/postgres is not reachable/);
    expect((error as Error).message).not.toContain('s3cret');
    expect(Date.now() - started).toBeLessThan(7_000);
  });

  test('a server that accepts the connection but never answers does not hang start-up', async ({ ctx }) => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    ctx.defer('silent server', () =>
      new Promise<void>((resolve) => {
        silent.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
    );
    const port = (silent.address() as AddressInfo).port;
    const started = Date.now();
    const error = await setupSource({
      connectionString: `postgres://postgres@127.0.0.1:${port}/postgres`,
      tables: ['public.x'],
      publicationName: ctx.uniqueName('pub'),
      slotName: ctx.uniqueName('slot'),
      logger: createLogger({ app: 'test', level: 'silent' }),
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UnreachableError);
    expect(Date.now() - started).toBeLessThan(8_000);
  });
});

describe('reader app: start-up failures end the process with one clear line', () => {
  test('unreachable source: non-zero exit, no hang, the line says what and where', async ({ ctx }) => {
    const pipeline = ctx.uniqueName('rd');
    // The app creates the pipeline's streams before it reaches the source.
    const { jsm } = await ctx.nats();
    ctx.defer('streams', async () => {
      for (const stage of [...STAGES, 'dlq' as const]) await jsm.streams.delete(streamName(pipeline, stage)).catch(() => undefined);
    });
    const app = ctx.spawnApp('apps/reader/src/main.ts', {
      env: {
        PIPELINE: pipeline,
        SOURCE_ID: 'pg1',
        SOURCE_DATABASE_URL: 'postgres://postgres:s3cret@127.0.0.1:1/postgres',
        TABLES: 'public.orders',
        PARTITIONS: '2',
        HEALTH_PORT: '0',
      },
    });
    const status = await app.waitForExit(40_000);
    expect(status.code).toBe(1);
    const stderr = app.stderr.join('\n');
    expect(stderr).toMatch(/^reader: SERVER_UNREACHABLE: PostgreSQL at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/postgres is not reachable/m);
    expect([...app.stdout, ...app.stderr].join('\n')).not.toContain('s3cret');
  });

  test('bad configuration: every bad variable named', async ({ ctx }) => {
    const app = ctx.spawnApp('apps/reader/src/main.ts', {
      env: { PIPELINE: 'ok', SOURCE_ID: 'pg1', SOURCE_DATABASE_URL: 'mysql://x', TABLES: 'orders', PARTITIONS: undefined, HEALTH_PORT: '0' },
    });
    const status = await app.waitForExit(30_000);
    expect(status.code).toBe(1);
    const line = app.stderr.find((l) => l.startsWith('reader: CONFIG_INVALID')) ?? '';
    for (const variable of ['SOURCE_DATABASE_URL', 'TABLES', 'PARTITIONS']) expect(line).toContain(variable);
  });
});
