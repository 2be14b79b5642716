/**
 * Standalone measure of the sinks' own per-row cost, without the pipeline around them:
 *
 *   PostgreSQL: SinkWriter.apply of 100-event batches (one sink transaction each, the
 *   checkpoint row included) into a narrow table and a table of 2 KB rows, inserts then
 *   updates of the same keys then deletes. Reported: rows/s and the CPU of the one
 *   PostgreSQL backend (utime+stime from /proc/<pg_backend_pid()>/stat) and of this
 *   process, in µs per row.
 *   Kafka: buildRecords of 100-event batches (no broker): µs of CPU per event.
 *
 *   pnpm exec tsx bench/sink-apply.ts            (POSTGRES_URL from .state/servers.env)
 *   SINK_BENCH_BATCHES=200 SINK_BENCH_ONLY=pg|kafka
 *
 * The PostgreSQL server must run on this machine (its backend's /proc entry is read).
 *
 * Measured 2026-12-02 on the shared 2-core machine (load 3–16 from other sessions, so rows/s
 * swings; CPU µs per row is the steadier figure), before = 8880ce4, after = this branch,
 * runs interleaved, ranges over 2–3 runs:
 *
 *   PostgreSQL backend µs/row      before        after
 *     narrow insert                25.0–31.5     12.5–17.5
 *     narrow update                29.0–34.5     16.5–20.0
 *     narrow delete                12.0–18.0      9.0–10.0
 *     2 KB   insert                37.0–40.5     20.5–22.0
 *     2 KB   update                36.0–42.5     21.0–24.0
 *     2 KB   delete                12.0–21.0      8.5–9.0
 *   Kafka record building µs/event (median of 3)
 *     narrow, metadata off / on     18.7 / 15.4   8.3 / 9.6   (quiet machine: 12.5 / 13.5 → 5.8 / 5.6)
 *     2 KB,   metadata off / on     17.3 / 24.7  14.2 / 13.6  (quiet machine: 16.8 / 17.7 → 13.8 / 13.4)
 */
import { readFileSync } from 'node:fs';
import { Lsn, computeEventId, orderKeyOf, pinValueText, type ChangeEvent } from '@cdc/core';
import type { LaneCheckpoint, MergeBatch } from '@cdc/committer';
import { SinkWriter, TableCatalog, acquireEpoch, ensureBookkeeping } from '@cdc/sink-pg';
import { buildRecords } from '@cdc/sink-kafka';
import pg from 'pg';
import { pino } from 'pino';

const BATCH = 100;
const BATCHES = Number(process.env.SINK_BENCH_BATCHES ?? 200);
const ONLY = process.env.SINK_BENCH_ONLY;
const logger = pino({ level: 'silent' });
const CLK_TCK = 100;

function procCpuMicros(pid: number | 'self'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime, stime are fields 14 and 15 (1-based); after the ')' the 3rd field is index 0.
  return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / CLK_TCK;
}

function selfCpuMicros(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

let lsn = 0x2_0000_0000n;
let lamport = 1_800_000_000_000_000n;

function transaction(table: string, changes: { op: ChangeEvent['op']; id: number; after: Record<string, string> | null }[], columnTypes: Record<string, number>): ChangeEvent[] {
  lsn += 0x1000n;
  lamport += 1n;
  const commitLsn = Lsn.format(Lsn.fromBigInt(lsn));
  return changes.map((change, seq) => {
    const at = Lsn.format(Lsn.fromBigInt(lsn - 0x800n + BigInt(seq)));
    const key = [String(change.id)];
    return {
      kind: 'change',
      source: 'bench',
      table,
      keyColumns: ['id'],
      key,
      op: change.op,
      before: change.op === 'delete' ? { id: String(change.id) } : null,
      after: change.after,
      unchanged: [],
      columnTypes,
      lsn: at,
      commitLsn,
      seq,
      xid: Number(lsn & 0xffffn),
      commitTs: '2026-12-02 10:00:00.123456+00',
      lamport: lamport.toString(),
      eventId: computeEventId({ source: 'bench', table, key, lsn: at, commitLsn, seq }),
      traceId: `t-${commitLsn}-${seq}`,
    } satisfies ChangeEvent;
  });
}

interface Shape {
  readonly name: string;
  readonly ddl: string;
  readonly columnTypes: Record<string, number>;
  row(id: number, round: number): Record<string, string>;
}

const payload = 'x'.repeat(1_990);
const SHAPES: Shape[] = [
  {
    name: 'narrow',
    ddl: 'id bigint PRIMARY KEY, name text, qty integer, price numeric(12,2), at timestamptz',
    columnTypes: { id: 20, name: 25, qty: 23, price: 1700, at: 1184 },
    row: (id, round) => ({ id: String(id), name: `name-${id}-${round}`, qty: String(round), price: `${id}.25`, at: '2026-12-02 10:00:00.5+00' }),
  },
  {
    name: 'wide',
    ddl: 'id bigint PRIMARY KEY, body text, qty integer',
    columnTypes: { id: 20, body: 25, qty: 23 },
    row: (id, round) => ({ id: String(id), body: `${round}${payload}`, qty: String(round) }),
  },
];

async function benchPg(): Promise<void> {
  const url = process.env.POSTGRES_URL;
  if (!url) throw new Error('POSTGRES_URL is not set (source .state/servers.env)');
  const admin = new pg.Client({ connectionString: url });
  admin.on('error', (error) => console.error('admin connection:', error.message));
  await admin.connect();
  const db = `bench_sink_${process.pid}`;
  await admin.query(`CREATE DATABASE ${db}`);
  const sinkUrl = new URL(url);
  sinkUrl.pathname = `/${db}`;
  const pool = new pg.Pool({ ...pinValueText(sinkUrl.toString()), max: 2 });
  pool.on('error', (error) => console.error('pool connection:', error.message));
  try {
    const client = await pool.connect();
    let epoch: number;
    try {
      await ensureBookkeeping(client);
      epoch = await acquireEpoch(client, 'bench');
      for (const shape of SHAPES) await client.query(`CREATE TABLE public.${shape.name}_t (${shape.ddl})`);
    } finally {
      client.release();
    }
    const writer = new SinkWriter({ pool, catalog: new TableCatalog(pool), pipeline: 'bench', logger });
    let seq = 0;
    const apply = async (events: ChangeEvent[]): Promise<void> => {
      seq += 1;
      const checkpoints: LaneCheckpoint[] = [{ partition: 0, resumeSeq: seq, lastKey: orderKeyOf(events.at(-1)!), watermark: undefined }];
      const outcome = await writer.apply({ events, checkpoints, epoch, retry: false, beforeCommit: async () => undefined });
      if (outcome.refusals.length > 0) throw outcome.refusals[0]!.error;
    };
    // The catalog looks tables up on a second connection while a batch holds the first: both backends count.
    const backends = async (): Promise<number[]> =>
      (await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [db])).rows.map((row) => row.pid);
    const backendCpu = (pids: readonly number[]): number => pids.reduce((sum, pid) => sum + procCpuMicros(pid), 0);
    console.log(`PostgreSQL: ${BATCHES} batches × ${BATCH} rows per workload`);
    for (const shape of SHAPES) {
      const table = `public.${shape.name}_t`;
      // Warm-up: catalog, prepared statements, plans.
      for (let b = 0; b < 10; b++) {
        await apply(transaction(table, Array.from({ length: BATCH }, (_, i) => ({ op: 'insert' as const, id: 10_000_000 + b * BATCH + i, after: shape.row(10_000_000 + b * BATCH + i, 0) })), shape.columnTypes));
      }
      for (const [op, round] of [['insert', 1], ['update', 2], ['delete', 3]] as const) {
        const batches = Array.from({ length: BATCHES }, (_, b) =>
          transaction(
            table,
            Array.from({ length: BATCH }, (_, i) => {
              const id = b * BATCH + i;
              return { op, id, after: op === 'delete' ? null : shape.row(id, round) };
            }),
            shape.columnTypes,
          ),
        );
        const pids = await backends();
        const pgBefore = backendCpu(pids);
        const selfBefore = selfCpuMicros();
        const started = performance.now();
        for (const events of batches) await apply(events);
        const seconds = (performance.now() - started) / 1000;
        const rows = BATCHES * BATCH;
        const pgPerRow = (backendCpu(pids) - pgBefore) / rows;
        const selfPerRow = (selfCpuMicros() - selfBefore) / rows;
        console.log(
          `  ${shape.name.padEnd(6)} ${op.padEnd(6)} ${Math.round(rows / seconds).toString().padStart(7)} rows/s   ` +
            `PostgreSQL backend ${pgPerRow.toFixed(1).padStart(5)} µs/row   committer process ${selfPerRow.toFixed(1).padStart(5)} µs/row`,
        );
      }
    }
  } finally {
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await admin.end();
  }
}

function benchKafka(): void {
  console.log(`Kafka record building: ${BATCHES * 5} batches × ${BATCH} events (no broker)`);
  for (const shape of SHAPES) {
    for (const metadata of [false, true]) {
      const batches: MergeBatch[] = Array.from({ length: BATCHES * 5 }, (_, b) => {
        const events = transaction(
          `public.${shape.name}_t`,
          Array.from({ length: BATCH }, (_, i) => ({ op: i % 10 === 9 ? ('delete' as const) : ('insert' as const), id: b * BATCH + i, after: i % 10 === 9 ? null : shape.row(b * BATCH + i, 1) })),
          shape.columnTypes,
        );
        return {
          events: events.map((event, seq) => ({ partition: 0, seq, key: orderKeyOf(event), event })),
          checkpoints: [],
          transactions: 1,
          startsInside: false,
          endsInside: false,
        };
      });
      const options = { topicPrefix: 'bench', tombstones: true, transactionMetadata: metadata, maxMessageBytes: 1_000_000 };
      for (const batch of batches.slice(0, 50)) buildRecords(batch, options);
      const before = selfCpuMicros();
      let events = 0;
      for (const batch of batches) events += buildRecords(batch, options).events;
      const perEvent = (selfCpuMicros() - before) / events;
      console.log(`  ${shape.name.padEnd(6)} transaction metadata ${metadata ? 'on ' : 'off'}  ${perEvent.toFixed(2).padStart(6)} µs/event`);
    }
  }
}

if (ONLY !== 'kafka') await benchPg();
if (ONLY !== 'pg') benchKafka();
