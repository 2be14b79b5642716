/**
 * A bounded, concurrent write workload on the source. Each client owns a disjoint key
 * range (no lock waits between clients), runs transactions of 1..maxTxnSize changes
 * over the three watched tables — inserts, updates (some leaving the TOASTed note
 * unchanged), deletes, key changes and multi-row transactions — and stops after
 * `totalChanges` changes or when the signal aborts. Randomness is seeded so a failing
 * run can be replayed.
 */
import pg from 'pg';
import { prng } from './builders.ts';

export interface WorkloadOptions {
  readonly databaseUrl: string;
  readonly totalChanges: number;
  readonly clients?: number;
  readonly maxTxnSize?: number;
  readonly seed?: number;
  readonly signal?: AbortSignal;
  /** Called after every committed transaction with the running total. */
  readonly onProgress?: (committedChanges: number) => void;
}

export interface WorkloadResult {
  readonly changes: number;
  readonly transactions: number;
  readonly elapsedMs: number;
}

const BIG_NOTE = (n: number): string => `note-${n}-`.padEnd(3000, String.fromCharCode(97 + (n % 26)));

interface ClientState {
  readonly random: () => number;
  readonly accounts: number[];
  readonly lines: [number, number][];
  readonly audits: number[];
  nextId: number;
  readonly version: Map<string, number>;
}

type Change = { sql: string; params: unknown[] };

function pick<T>(random: () => number, items: T[]): { item: T; index: number } | undefined {
  if (items.length === 0) return undefined;
  const index = Math.floor(random() * items.length);
  return { item: items[index] as T, index };
}

function removeAt<T>(items: T[], index: number): void {
  items[index] = items[items.length - 1] as T;
  items.pop();
}

function bump(state: ClientState, key: string): number {
  const next = (state.version.get(key) ?? 0) + 1;
  state.version.set(key, next);
  return next;
}

function nextChange(state: ClientState): Change {
  const r = state.random();
  const table = state.random();
  if (table < 0.45) {
    const existing = pick(state.random, state.accounts);
    if (!existing || r < 0.3) {
      const id = state.nextId++;
      state.accounts.push(id);
      return {
        sql: 'INSERT INTO accounts (id, owner, balance, note, version) VALUES ($1, $2, $3, $4, $5)',
        params: [id, `owner-${id}`, Math.floor(state.random() * 1e6), BIG_NOTE(id), bump(state, `a${id}`)],
      };
    }
    const id = existing.item;
    if (r < 0.38) {
      removeAt(state.accounts, existing.index);
      return { sql: 'DELETE FROM accounts WHERE id = $1', params: [id] };
    }
    if (r < 0.42) {
      // Key change: travels as delete(old) + insert(new), possibly across partitions.
      const newId = state.nextId++;
      state.accounts[existing.index] = newId;
      const version = (state.version.get(`a${id}`) ?? 0) + 1;
      state.version.set(`a${newId}`, version);
      return { sql: 'UPDATE accounts SET id = $2, version = $3 WHERE id = $1', params: [id, newId, version] };
    }
    if (r < 0.8) {
      // The TOASTed note is not touched: pgoutput sends it as "unchanged".
      return {
        sql: 'UPDATE accounts SET balance = balance + $2, version = $3 WHERE id = $1',
        params: [id, Math.floor(state.random() * 100) - 50, bump(state, `a${id}`)],
      };
    }
    return {
      sql: 'UPDATE accounts SET note = $2, owner = $3, version = $4 WHERE id = $1',
      params: [id, BIG_NOTE(Math.floor(state.random() * 1e6)), `owner-${Math.floor(state.random() * 1e6)}`, bump(state, `a${id}`)],
    };
  }
  if (table < 0.8) {
    const existing = pick(state.random, state.lines);
    if (!existing || r < 0.35) {
      const order = state.nextId++;
      const line = 1 + Math.floor(state.random() * 5);
      state.lines.push([order, line]);
      return {
        sql: 'INSERT INTO order_lines (order_id, line_no, sku, qty, version) VALUES ($1, $2, $3, $4, $5)',
        params: [order, line, `sku-${Math.floor(state.random() * 1000)}`, 1 + Math.floor(state.random() * 9), bump(state, `o${order}/${line}`)],
      };
    }
    const [order, line] = existing.item;
    if (r < 0.45) {
      removeAt(state.lines, existing.index);
      return { sql: 'DELETE FROM order_lines WHERE order_id = $1 AND line_no = $2', params: [order, line] };
    }
    return {
      sql: 'UPDATE order_lines SET qty = qty + 1, version = $3 WHERE order_id = $1 AND line_no = $2',
      params: [order, line, bump(state, `o${order}/${line}`)],
    };
  }
  const existing = pick(state.random, state.audits);
  if (!existing || r < 0.4) {
    const id = state.nextId++;
    state.audits.push(id);
    return {
      sql: 'INSERT INTO audit_events (id, kind, payload, version) VALUES ($1, $2, $3, $4)',
      params: [id, ['login', 'logout', 'transfer'][id % 3], `payload-${id}-${state.random()}`, bump(state, `e${id}`)],
    };
  }
  const id = existing.item;
  if (r < 0.5) {
    removeAt(state.audits, existing.index);
    return { sql: 'DELETE FROM audit_events WHERE id = $1', params: [id] };
  }
  return {
    sql: 'UPDATE audit_events SET payload = $2, version = $3 WHERE id = $1',
    params: [id, `payload-${state.random()}`, bump(state, `e${id}`)],
  };
}

export async function runWorkload(options: WorkloadOptions): Promise<WorkloadResult> {
  const clients = options.clients ?? 4;
  const maxTxnSize = options.maxTxnSize ?? 12;
  const seed = options.seed ?? 42;
  const started = Date.now();
  let changes = 0;
  let transactions = 0;

  const worker = async (index: number): Promise<void> => {
    const client = new pg.Client({ connectionString: options.databaseUrl });
    await client.connect();
    const state: ClientState = {
      random: prng(seed * 1000 + index),
      accounts: [],
      lines: [],
      audits: [],
      // Disjoint id ranges per client and per run (seed): no lock waits, no collisions.
      nextId: (seed % 1000) * 1e9 + index * 1e8 + 1,
      version: new Map(),
    };
    try {
      while (changes < options.totalChanges && !options.signal?.aborted) {
        // Mostly small transactions, now and then a large multi-row one.
        const size = state.random() < 0.05 ? 20 + Math.floor(state.random() * 40) : 1 + Math.floor(state.random() * maxTxnSize);
        const take = Math.min(size, options.totalChanges - changes);
        if (take <= 0) break;
        changes += take;
        await client.query('BEGIN');
        for (let i = 0; i < take; i++) {
          const change = nextChange(state);
          await client.query(change.sql, change.params);
        }
        await client.query('COMMIT');
        transactions += 1;
        options.onProgress?.(changes);
      }
    } finally {
      await client.end();
    }
  };

  await Promise.all(Array.from({ length: clients }, (_, index) => worker(index)));
  return { changes, transactions, elapsedMs: Date.now() - started };
}

/** Writes WAL on an unwatched table (for the idle-slot test and the demo). */
export async function writeNoise(databaseUrl: string, rows: number): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(`INSERT INTO noise (filler) SELECT repeat('x', 500) FROM generate_series(1, $1)`, [rows]);
  } finally {
    await client.end();
  }
}
