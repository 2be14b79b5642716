/**
 * What the reader relies on in PostgreSQL logical replication (pgoutput, protocol 1, through
 * pg-logical-replication 2.x): decoded INSERT/UPDATE/DELETE, and a slot that resends every
 * transaction after the acknowledged commit end LSN — and nothing at or before it.
 *
 * Library quirks these tests pin down (all of them, with field names: tests/servers/README.md):
 *  - `acknowledge(lsn)` reports `lsn + 1` as flushed, so confirmed_flush_lsn becomes lsn + 1,
 *    which can skip a transaction whose commit record starts exactly at lsn. To confirm a
 *    commit end LSN E exactly, call `acknowledge(E - 1)`.
 *  - `acknowledge.auto: false` alone does not stop the library from confirming: a timer
 *    (`timeoutSeconds`, default 10) confirms the last *received* LSN. Use `timeoutSeconds: 0`.
 *  - With the timer off nothing answers keepalives: the caller must reply (acknowledge with
 *    its confirmed position) or the walsender hangs up after wal_sender_timeout.
 */
import { Lsn } from '@cdc/core';
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type { Client, ClientConfig as PgClientConfig } from 'pg';
import { describe, expect, test, waitFor, type TestContext } from '../harness/index.ts';

interface Received {
  /** The XLogData position the walsender sent the message at (unpadded, e.g. `0/22D8DC8`). */
  readonly lsn: string;
  readonly message: Pgoutput.Message;
}

interface Transaction {
  readonly begin: Pgoutput.MessageBegin;
  readonly changes: readonly Pgoutput.Message[];
  readonly commit: Pgoutput.MessageCommit;
  /** XLogData position of the commit message. */
  readonly commitDataLsn: string;
}

interface SlotStreamOptions {
  /** The library's standby-status timer; 0 = off (see the third test). */
  readonly timeoutSeconds?: number;
  /** Answer keepalives that request a reply with acknowledge(this LSN). */
  readonly replyToKeepalives?: string;
  readonly pg?: PgClientConfig;
}

/** One replication connection on a slot, collecting every decoded message. */
class SlotStream {
  readonly received: Received[] = [];
  readonly errors: Error[] = [];
  readonly #service: LogicalReplicationService;
  readonly #subscription: Promise<unknown>;

  private constructor(ctx: TestContext, slot: string, publication: string, options: SlotStreamOptions) {
    this.#service = new LogicalReplicationService(ctx.pgConfig(options.pg), {
      acknowledge: { auto: false, timeoutSeconds: options.timeoutSeconds ?? 0 },
    });
    this.#service.on('error', (error) => this.errors.push(error));
    const reply = options.replyToKeepalives;
    if (reply !== undefined) {
      this.#service.on('heartbeat', (_lsn: string, _time: number, shouldRespond: boolean) => {
        if (shouldRespond) void this.#service.acknowledge(reply);
      });
    }
    this.#service.on('data', (lsn: string, message: Pgoutput.Message) => {
      this.received.push({ lsn, message });
    });
    // subscribe() resolves only when streaming ends (stop()); keep it to await on close.
    this.#subscription = this.#service
      .subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [publication] }), slot)
      .catch((error: Error) => this.errors.push(error));
    ctx.defer(`stop replication on ${slot}`, () => this.close());
  }

  static open(ctx: TestContext, options: { slot: string; publication: string } & SlotStreamOptions): SlotStream {
    return new SlotStream(ctx, options.slot, options.publication, options);
  }

  transactions(): Transaction[] {
    const result: Transaction[] = [];
    let begin: Pgoutput.MessageBegin | undefined;
    let changes: Pgoutput.Message[] = [];
    for (const { lsn, message } of this.received) {
      if (message.tag === 'begin') {
        begin = message;
        changes = [];
      } else if (message.tag === 'commit') {
        if (!begin) throw new Error(`commit at ${lsn} without begin`);
        result.push({ begin, changes, commit: message, commitDataLsn: lsn });
        begin = undefined;
      } else if (message.tag !== 'relation' && message.tag !== 'type') {
        changes.push(message);
      }
    }
    return result;
  }

  async waitForTransactions(count: number, timeoutMs = 15_000): Promise<Transaction[]> {
    return waitFor(
      () => {
        if (this.errors.length > 0) throw this.errors[0];
        const transactions = this.transactions();
        return transactions.length >= count ? transactions : undefined;
      },
      { what: `${count} transaction(s) from the slot`, timeoutMs },
    );
  }

  /** Confirms exactly `lsn` to PostgreSQL (the library adds 1, so we send lsn - 1). */
  async confirmExactly(lsn: string): Promise<void> {
    expect(await this.#service.acknowledge(Lsn.format(Lsn.fromBigInt(Lsn.parse(lsn) - 1n)))).toBe(true);
  }

  /** The library's own acknowledge: confirms lsn + 1. */
  async acknowledgeRaw(lsn: string): Promise<void> {
    expect(await this.#service.acknowledge(lsn)).toBe(true);
  }

  async close(): Promise<void> {
    await this.#service.stop();
    await this.#subscription;
  }
}

async function confirmedFlushLsn(db: Client, slot: string): Promise<Lsn> {
  const { rows } = await db.query<{ confirmed_flush_lsn: string }>(
    'SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  if (!rows[0]) throw new Error(`slot ${slot} does not exist`);
  return Lsn.parse(rows[0].confirmed_flush_lsn);
}

/** The walsender confirms asynchronously: poll until the slot shows `expected`. */
async function waitForConfirmedFlush(db: Client, slot: string, expected: Lsn): Promise<void> {
  await waitFor(async () => (await confirmedFlushLsn(db, slot)) === expected, {
    what: `confirmed_flush_lsn of ${slot} = ${Lsn.format(expected)}`,
    timeoutMs: 5_000,
  });
}

/** A table, a publication for it and `slots` pgoutput slots, all dropped after the test. */
async function replicatedTable(ctx: TestContext, slots = 1): Promise<{ db: Client; table: string; publication: string; slots: string[] }> {
  const db = await ctx.pg();
  const table = ctx.uniqueName('items');
  const publication = ctx.uniqueName('pub');
  await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, name text NOT NULL, qty int)`);
  ctx.defer(`drop table ${table}`, () => db.query(`DROP TABLE IF EXISTS ${table}`));
  await db.query(`CREATE PUBLICATION ${publication} FOR TABLE ${table}`);
  ctx.defer(`drop publication ${publication}`, () => db.query(`DROP PUBLICATION IF EXISTS ${publication}`));
  const names: string[] = [];
  for (let i = 0; i < slots; i++) {
    const slot = ctx.uniqueName('slot');
    await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    // A walsender that just lost its client may hold the slot a moment longer (PITFALLS 9).
    ctx.defer(`drop slot ${slot}`, () =>
      waitFor(
        async () => {
          await db.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
          return true;
        },
        { what: `slot ${slot} dropped`, timeoutMs: 10_000, intervalMs: 200 },
      ),
    );
    names.push(slot);
  }
  return { db, table, publication, slots: names };
}

/** Values as pgoutput's parser hands them over (null-prototype objects), as plain objects. */
const plain = (row: Record<string, unknown> | null): Record<string, unknown> | null => (row === null ? null : { ...row });

describe('PostgreSQL logical replication (pgoutput via pg-logical-replication)', () => {
  test('streams INSERT/UPDATE/DELETE and, after reconnecting, resends every transaction after the acknowledged commit', async ({ ctx }) => {
    const { db, table, publication, slots } = await replicatedTable(ctx);
    const slot = slots[0] ?? '';
    const xids: number[] = [];
    for (const statement of [
      `INSERT INTO ${table} (id, name, qty) VALUES (1, 'apple', 3)`,
      `UPDATE ${table} SET qty = 5 WHERE id = 1`,
      `DELETE FROM ${table} WHERE id = 1`,
    ]) {
      await db.query('BEGIN');
      xids.push(Number((await db.query<{ xid: string }>('SELECT txid_current() AS xid')).rows[0]?.xid));
      await db.query(statement);
      await db.query('COMMIT');
    }

    const first = SlotStream.open(ctx, { slot, publication });
    const [insertTx, updateTx, deleteTx] = await first.waitForTransactions(3);
    if (!insertTx || !updateTx || !deleteTx) throw new Error('unreachable');

    // Message sequence: a Relation message precedes the first change of the table in a session.
    expect(first.received.map((r) => r.message.tag)).toEqual([
      'begin', 'relation', 'insert', 'commit',
      'begin', 'update', 'commit',
      'begin', 'delete', 'commit',
    ]);
    const relation = first.received[1]?.message as Pgoutput.MessageRelation;
    expect(relation).toMatchObject({ tag: 'relation', schema: 'public', name: table, replicaIdentity: 'default', keyColumns: ['id'] });
    expect(relation.columns.map((c) => [c.name, c.typeOid])).toEqual([['id', 23], ['name', 25], ['qty', 23]]);
    expect(relation.relationOid).toBeGreaterThan(0);
    expect(first.received[1]?.lsn).toBe('0/0');

    // Decoded values go through pg's type parsers: int4 arrives as a number, text as a string.
    const insert = insertTx.changes[0] as Pgoutput.MessageInsert;
    expect(insert.tag).toBe('insert');
    expect(insert.relation.name).toBe(table);
    expect(plain(insert.new)).toEqual({ id: 1, name: 'apple', qty: 3 });
    const update = updateTx.changes[0] as Pgoutput.MessageUpdate;
    expect(update.tag).toBe('update');
    expect(plain(update.new)).toEqual({ id: 1, name: 'apple', qty: 5 });
    // REPLICA IDENTITY DEFAULT and the key unchanged: neither key nor old row is sent.
    expect(update.key).toBeNull();
    expect(update.old).toBeNull();
    const del = deleteTx.changes[0] as Pgoutput.MessageDelete;
    expect(del.tag).toBe('delete');
    expect(plain(del.key)).toEqual({ id: 1 });
    expect(del.old).toBeNull();

    for (const [i, tx] of [insertTx, updateTx, deleteTx].entries()) {
      expect(tx.begin.xid).toBe(xids[i]);
      // BEGIN and COMMIT carry the same commitLsn: the START of the commit record.
      expect(tx.commit.commitLsn).toBe(tx.begin.commitLsn);
      const commitLsn = Lsn.parse(tx.commit.commitLsn ?? '');
      const commitEndLsn = Lsn.parse(tx.commit.commitEndLsn ?? '');
      expect(commitEndLsn).toBeGreaterThan(commitLsn);
      // The commit message is sent at XLogData position = commitEndLsn (the END of the commit record).
      expect(Lsn.parse(tx.commitDataLsn)).toBe(commitEndLsn);
      expect(tx.commit.commitTime).toBe(tx.begin.commitTime);
      expect(typeof tx.commit.commitTime).toBe('bigint');
    }
    // Commit times are microseconds since the Unix epoch.
    const micros = insertTx.commit.commitTime as bigint;
    expect(Math.abs(Number(micros / 1000n) - Date.now())).toBeLessThan(60_000);

    // Confirm the first transaction only, exactly at its commit end LSN.
    const ackedEnd = Lsn.parse(insertTx.commit.commitEndLsn ?? '');
    await first.confirmExactly(insertTx.commit.commitEndLsn ?? '');
    await waitForConfirmedFlush(db, slot, ackedEnd);
    await first.close();

    // Reconnect asking for 0/0: the slot starts at confirmed_flush_lsn (it cannot rewind),
    // so the update and delete come again and the acknowledged insert does not.
    const second = SlotStream.open(ctx, { slot, publication });
    const again = await second.waitForTransactions(2);
    expect(second.received.map((r) => r.message.tag)).toEqual([
      'begin', 'relation', 'update', 'commit',
      'begin', 'delete', 'commit',
    ]);
    expect(again.map((tx) => [tx.begin.xid, tx.commit.commitLsn, tx.commit.commitEndLsn])).toEqual(
      [updateTx, deleteTx].map((tx) => [tx.begin.xid, tx.commit.commitLsn, tx.commit.commitEndLsn]),
    );
    expect(plain((again[0]?.changes[0] as Pgoutput.MessageUpdate).new)).toEqual({ id: 1, name: 'apple', qty: 5 });
    // Nothing confirmed by itself while we did not acknowledge (timeoutSeconds: 0).
    expect(await confirmedFlushLsn(db, slot)).toBe(ackedEnd);
    await second.close();
    expect([...first.errors, ...second.errors]).toEqual([]);
  });

  test('a transaction whose commit record starts exactly at the confirmed LSN is resent; the library acknowledge (lsn + 1) would skip it', async ({ ctx }) => {
    // Two slots created together see the same WAL. Slot `exact` is confirmed at commitEndLsn,
    // slot `plusOne` through the library's acknowledge(commitEndLsn), i.e. commitEndLsn + 1.
    const { db, table, publication, slots } = await replicatedTable(ctx, 2);
    const [exactSlot = '', plusOneSlot = ''] = slots;
    const other = await ctx.pg();

    // A long transaction writes a row first, then a short one commits, then the long one
    // commits: with nothing else writing WAL in between, the long commit record starts
    // exactly where the short commit record ends. Repeated so one pair surely is adjacent.
    const pairs = 20;
    for (let i = 0; i < pairs; i++) {
      await other.query('BEGIN');
      await other.query(`INSERT INTO ${table} (id, name) VALUES ($1, 'long')`, [1000 + i]);
      await db.query(`INSERT INTO ${table} (id, name) VALUES ($1, 'short')`, [i]);
      await other.query('COMMIT');
    }

    const exact = SlotStream.open(ctx, { slot: exactSlot, publication });
    const plusOne = SlotStream.open(ctx, { slot: plusOneSlot, publication });
    const transactions = await exact.waitForTransactions(2 * pairs);
    await plusOne.waitForTransactions(2 * pairs);
    const adjacent = transactions.findIndex(
      (tx, i) => i % 2 === 0 && transactions[i + 1]?.commit.commitLsn !== undefined &&
        Lsn.parse(transactions[i + 1]?.commit.commitLsn ?? '') === Lsn.parse(tx.commit.commitEndLsn ?? ''),
    );
    expect(adjacent, 'no adjacent commit records: was another session writing WAL?').toBeGreaterThanOrEqual(0);
    const shortTx = transactions[adjacent];
    const longTx = transactions[adjacent + 1];
    if (!shortTx || !longTx) throw new Error('unreachable');
    expect(plain((shortTx.changes[0] as Pgoutput.MessageInsert).new)).toMatchObject({ name: 'short' });
    expect(plain((longTx.changes[0] as Pgoutput.MessageInsert).new)).toMatchObject({ name: 'long' });

    const end = shortTx.commit.commitEndLsn ?? '';
    await exact.confirmExactly(end);
    await plusOne.acknowledgeRaw(end);
    await waitForConfirmedFlush(db, exactSlot, Lsn.parse(end));
    await waitForConfirmedFlush(db, plusOneSlot, Lsn.fromBigInt(Lsn.parse(end) + 1n));
    await exact.close();
    await plusOne.close();

    const remaining = 2 * pairs - adjacent - 1;
    const exactAgain = SlotStream.open(ctx, { slot: exactSlot, publication });
    const resent = await exactAgain.waitForTransactions(remaining);
    expect(resent[0]?.begin.xid).toBe(longTx.begin.xid);
    expect(resent.map((tx) => tx.begin.xid)).toEqual(transactions.slice(adjacent + 1).map((tx) => tx.begin.xid));

    // The slot confirmed one byte further skips the long transaction for good: data loss.
    const plusOneAgain = SlotStream.open(ctx, { slot: plusOneSlot, publication });
    const afterSkip = await plusOneAgain.waitForTransactions(remaining - 1);
    expect(afterSkip.map((tx) => tx.begin.xid)).toEqual(transactions.slice(adjacent + 2).map((tx) => tx.begin.xid));
    expect(afterSkip.map((tx) => tx.begin.xid)).not.toContain(longTx.begin.xid);
    await exactAgain.close();
    await plusOneAgain.close();
  });

  test('with acknowledge.auto false the library still confirms the last received LSN on its status timer unless timeoutSeconds is 0', async ({ ctx }) => {
    const { db, table, publication, slots } = await replicatedTable(ctx);
    const slot = slots[0] ?? '';
    const before = await confirmedFlushLsn(db, slot);
    await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'x')`);

    const stream = SlotStream.open(ctx, { slot, publication, timeoutSeconds: 1 });
    const [tx] = await stream.waitForTransactions(1);
    const end = Lsn.parse(tx?.commit.commitEndLsn ?? '');
    // No acknowledge() call at all, yet within ~2 s the slot is confirmed past the commit.
    await waitFor(async () => (await confirmedFlushLsn(db, slot)) > end, {
      what: 'the status timer to confirm on its own',
      timeoutMs: 5_000,
      intervalMs: 100,
    });
    expect(before).toBeLessThan(end);
    await stream.close();
  });

  test('keepalive replies keep the connection without moving the slot; without them the walsender drops it at wal_sender_timeout', async ({ ctx }) => {
    const { db, publication, slots } = await replicatedTable(ctx, 2);
    const [replying = '', silent = ''] = slots;
    const confirmedBefore = await confirmedFlushLsn(db, replying);
    // wal_sender_timeout is per connection; the walsender asks for a reply after half of it.
    const pg = { options: '-c wal_sender_timeout=2000' };
    const withReplies = SlotStream.open(ctx, { slot: replying, publication, pg, replyToKeepalives: '0/0' });
    const withoutReplies = SlotStream.open(ctx, { slot: silent, publication, pg });

    await waitFor(() => withoutReplies.errors.length > 0, { what: 'the silent stream to be dropped', timeoutMs: 8_000, intervalMs: 100 });
    expect(withoutReplies.errors[0]?.message).toMatch(/Connection terminated/);
    // Well past two timeouts since it opened, the replying stream is still up...
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(withReplies.errors).toEqual([]);
    const { rows } = await db.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [replying]);
    expect(rows[0]?.active).toBe(true);
    // ...and a reply below confirmed_flush_lsn (0/0 + 1) is ignored: the slot did not move.
    expect(await confirmedFlushLsn(db, replying)).toBe(confirmedBefore);
    await withReplies.close();
  });
});
