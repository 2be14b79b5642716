/**
 * The physical limit: the same WAL the pipeline read, drained again by tools that only
 * decode pgoutput and throw the result away.
 *
 *   pg_recvlogical  PostgreSQL's own client (C), pgoutput proto 1, --endpos = the workload's
 *                   end LSN, output to /dev/null: what the walsender can send;
 *   node pgoutput   pg-logical-replication's PgoutputPlugin in this process (the library the
 *                   reader uses), counting inserts and discarding them: what one Node
 *                   process can decode before doing anything else.
 *
 * Both slots are created (after their publication: pgoutput looks the publication up as of
 * each change) BEFORE the workload writes, and drained AFTER the pipeline stopped, so they
 * read exactly the pipeline's WAL without competing with it for the two cores.
 */
import { spawn, spawnSync } from 'node:child_process';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { Lsn } from '@cdc/core';
import { WATCHED_TABLES } from '@cdc/testkit';
import { withClient } from '../tests/e2e/databases.ts';

export interface LimitSlots {
  readonly publication: string;
  /** One slot per attempt: a drained slot cannot be read again. */
  readonly recvlogicalSlots: readonly string[];
  readonly nodeSlots: readonly string[];
}

export interface LimitResult {
  readonly tool: 'pg_recvlogical' | 'node-pgoutput' | 'copy';
  readonly ok: boolean;
  readonly seconds: number;
  readonly changesPerSecond: number;
  /** node-pgoutput: inserts decoded (must equal the workload's changes). */
  readonly decodedChanges?: number;
  readonly error?: string;
  /** Every attempt's changes/s (0 = failed); the result is the best one. */
  readonly attempts?: readonly number[];
}

/** The best of several attempts: on a shared machine the limit is what the tool CAN do. */
export function bestOf(results: readonly LimitResult[]): LimitResult | undefined {
  const ok = results.filter((r) => r.ok);
  const best = ok.length > 0 ? ok.reduce((a, b) => (b.changesPerSecond > a.changesPerSecond ? b : a)) : results[results.length - 1];
  return best ? { ...best, attempts: results.map((r) => Math.round(r.changesPerSecond)) } : undefined;
}

export async function createLimitSlots(sourceUrl: string, tag: string, attempts: number): Promise<LimitSlots> {
  const slots: LimitSlots = {
    publication: `bench_limit_${tag}`,
    recvlogicalSlots: Array.from({ length: attempts }, (_, i) => `bench_limit_recv_${tag}_${i}`),
    nodeSlots: Array.from({ length: attempts }, (_, i) => `bench_limit_node_${tag}_${i}`),
  };
  await withClient(sourceUrl, async (client) => {
    await client.query(`CREATE PUBLICATION ${slots.publication} FOR TABLE ${WATCHED_TABLES.join(', ')}`);
    for (const slot of [...slots.recvlogicalSlots, ...slots.nodeSlots]) {
      await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    }
  });
  return slots;
}

export async function dropLimitSlots(sourceUrl: string, slots: LimitSlots): Promise<void> {
  await withClient(sourceUrl, async (client) => {
    for (const slot of [...slots.recvlogicalSlots, ...slots.nodeSlots]) {
      await client.query(
        `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`,
        [slot],
      );
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
          break;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      }
    }
    await client.query(`DROP PUBLICATION IF EXISTS ${slots.publication}`);
  });
}

export function pgRecvlogicalPath(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v pg_recvlogical'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path !== '' ? path : undefined;
}

/** One drain of the workload's WAL from its own slot, up to the workload's end. */
export interface DrainOptions {
  readonly sourceUrl: string;
  readonly publication: string;
  readonly slot: string;
  readonly endLsn: string;
  readonly changes: number;
  readonly timeoutMs: number;
}

/** pg_recvlogical --start ... --endpos=<end>: wall time of the whole process (connect included, a few ms). */
export function drainWithRecvlogical(options: DrainOptions): Promise<LimitResult> {
  const binary = pgRecvlogicalPath();
  if (binary === undefined) {
    return Promise.resolve({ tool: 'pg_recvlogical', ok: false, seconds: 0, changesPerSecond: 0, error: 'pg_recvlogical not installed' });
  }
  const args = [
    '-d', options.sourceUrl,
    `--slot=${options.slot}`,
    '--start',
    `--endpos=${options.endLsn}`,
    '--no-loop',
    '-F', '0',
    '-f', '/dev/null',
    '-o', 'proto_version=1',
    '-o', `publication_names=${options.publication}`,
  ];
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-2000);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = (performance.now() - started) / 1000;
      const ok = code === 0;
      resolve({
        tool: 'pg_recvlogical',
        ok,
        seconds,
        changesPerSecond: ok ? options.changes / seconds : 0,
        ...(ok ? {} : { error: signal ? `killed (${signal}) after ${options.timeoutMs} ms` : `exit ${code}: ${stderr.trim()}` }),
      });
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ tool: 'pg_recvlogical', ok: false, seconds: 0, changesPerSecond: 0, error: error.message });
    });
  });
}

function lsnValue(text: string | null | undefined): bigint {
  return text ? Lsn.parse(text) : 0n;
}

/** pg-logical-replication + PgoutputPlugin in this process, until the workload's last commit. */
export async function drainWithNode(options: DrainOptions): Promise<LimitResult> {
  const end = lsnValue(options.endLsn);
  const service = new LogicalReplicationService(
    { connectionString: options.sourceUrl },
    { acknowledge: { auto: false, timeoutSeconds: 0 } },
  );
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [options.publication] });
  let decoded = 0;
  let failure: Error | undefined;
  const started = performance.now();
  let finished = 0;
  const done = new Promise<void>((resolve) => {
    service.on('data', (lsn: string, message: { tag: string; commitEndLsn?: string | null }) => {
      if (message.tag === 'insert' || message.tag === 'update' || message.tag === 'delete') decoded += 1;
      // Done at the commit that completes the workload's changes; or, should a change be
      // missing, at the first transaction that begins past the end LSN. (Stopping at a commit
      // whose end LSN passed endLsn once cut the last 25 of 20,000 TOASTed rows.)
      const reached = (message.tag === 'commit' && decoded >= options.changes) || (message.tag === 'begin' && lsnValue(lsn) >= end);
      if (reached && finished === 0) {
        finished = performance.now();
        resolve();
      }
    });
    service.on('error', (error: Error) => {
      failure = error;
      resolve();
    });
  });
  const timeout = new Promise<'timeout'>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), options.timeoutMs);
    void done.then(() => clearTimeout(timer));
  });
  const subscription = service.subscribe(plugin, options.slot).catch((error: unknown) => {
    failure ??= error instanceof Error ? error : new Error(String(error));
  });
  const outcome = await Promise.race([done, timeout]);
  await service.stop().catch(() => undefined);
  await Promise.race([subscription, new Promise((resolve) => setTimeout(resolve, 5_000))]);
  const seconds = ((finished || performance.now()) - started) / 1000;
  const ok = outcome !== 'timeout' && failure === undefined && finished > 0;
  return {
    tool: 'node-pgoutput',
    ok,
    seconds,
    changesPerSecond: ok ? decoded / seconds : 0,
    decodedChanges: decoded,
    ...(ok ? {} : { error: outcome === 'timeout' ? `no commit past ${options.endLsn} within ${options.timeoutMs} ms` : (failure?.message ?? 'stopped early') }),
  };
}

/**
 * The snapshot workload's limit: `COPY <table> TO STDOUT` read by psql into /dev/null —
 * what reading the same rows costs PostgreSQL and one client, with nothing downstream.
 */
export async function copyToDevNull(options: { sourceUrl: string; table: string; rows: number; timeoutMs: number }): Promise<LimitResult> {
  const psql = pgRecvlogicalPath()?.replace(/pg_recvlogical$/, 'psql') ?? 'psql';
  const started = performance.now();
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(psql, [options.sourceUrl, '-X', '-q', '-c', `\\copy ${options.table} TO '/dev/null'`], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
      child.on('error', reject);
      child.on('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`psql exited ${code}: ${stderr.trim()}`));
      });
    });
    const seconds = (performance.now() - started) / 1000;
    return { tool: 'copy', ok: true, seconds, changesPerSecond: options.rows / seconds };
  } catch (error) {
    return { tool: 'copy', ok: false, seconds: 0, changesPerSecond: 0, error: error instanceof Error ? error.message : String(error) };
  }
}
