/**
 * Cost of a dedup claim, per event: gate CPU, Redis CPU and Redis memory, for the layouts
 * and round-trip shapes we considered. Runs a scratch redis-server of its own (no other
 * clients, so INFO deltas are ours alone):
 *
 *   pnpm exec tsx packages/dedup/bench/claims.ts [events=200000] [batch=100]
 *
 * Workloads at a nominal 20k events/s: single-row transactions (one event per 50 µs of
 * commit time) and 100-row transactions (one transaction per 5 ms).
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { computeEventId } from '@cdc/core';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { CLAIM_SCRIPT, RedisDedupStore } from '../src/redis-store.ts';
import type { DedupClaim } from '../src/store.ts';

const EVENTS = Number(process.argv[2] ?? 200_000);
const BATCH = Number(process.argv[3] ?? 100);
const WINDOW = 600_000;
const T0 = 1_700_000_000_000_000n;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function workload(kind: 'single' | 'tx100'): DedupClaim[] {
  const out: DedupClaim[] = [];
  for (let i = 0; i < EVENTS; i++) {
    const tx = kind === 'single' ? i : Math.floor(i / 100);
    const seq = kind === 'single' ? 0 : i % 100;
    const lamport = T0 + BigInt(tx) * (kind === 'single' ? 50n : 5000n);
    const commitLsn = `0/${(0x1000 + tx * 0x40).toString(16).toUpperCase()}`;
    const eventId = computeEventId({ source: 'pg1', table: 'public.t', key: [String(i)], lsn: commitLsn, commitLsn, seq });
    const micros = lamport % 1000n;
    const commitTs = new Date(Number(lamport / 1000n)).toISOString().replace('Z', `${micros.toString().padStart(3, '0')}Z`);
    out.push({ eventId, inputSeq: 1 + Math.floor(i / 100), commitTs, seq });
  }
  return out;
}

type Layout = { name: string; claim: (redis: Redis, batch: DedupClaim[]) => Promise<unknown> };

const STRING_LUA = `
local out = {}
for i = 1, #KEYS do
  local owner = redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1], 'NX', 'GET')
  if not owner then out[i] = '0' elseif owner == ARGV[i + 1] then out[i] = '1' else out[i] = '2' end
end
return table.concat(out)`;

/** Hash buckets with a chosen field encoding, through the store's own script. */
function hashLayout(name: string, field: (id: string) => string | Buffer, bucket: (c: DedupClaim) => string): Layout {
  return {
    name,
    claim: async (redis, batch) => {
      const keys: string[] = [];
      const args: (string | Buffer)[] = [];
      for (const c of batch) {
        const key = bucket(c);
        let index = keys.lastIndexOf(key);
        if (index < 0) index = keys.push(key) - 1;
        args.push(String(index + 1), field(c.eventId), String(c.inputSeq));
      }
      return (redis as unknown as { benchClaim(...a: unknown[]): Promise<string> }).benchClaim(keys.length, ...keys, String(WINDOW), ...args);
    },
  };
}

const msBucket = (c: DedupClaim) => `cdc:dedup:bench:${c.commitTs.slice(0, 23)}${c.seq >> 6 ? `:${c.seq >> 6}` : ''}`;

const layouts: Layout[] = [
  {
    name: 'before: string key per event, pipelined SET NX GET',
    claim: async (redis, batch) => {
      const p = redis.pipeline();
      for (const c of batch) p.call('SET', `cdc:dedup:bench:${c.eventId}`, String(c.inputSeq), 'PX', String(WINDOW), 'NX', 'GET');
      const replies = (await p.exec()) ?? [];
      return batch.map((c, i) => {
        const owner = replies[i]?.[1];
        return owner === null ? 'new' : String(owner) === String(c.inputSeq) ? 'redelivery' : 'duplicate';
      });
    },
  },
  {
    name: 'string key per event, one script call',
    claim: async (redis, batch) =>
      (redis as unknown as { benchString(...a: unknown[]): Promise<string> }).benchString(
        batch.length,
        ...batch.map((c) => `cdc:dedup:bench:${c.eventId}`),
        String(WINDOW),
        ...batch.map((c) => String(c.inputSeq)),
      ),
  },
  {
    name: 'hash per ms, pipelined HSETNX+HGET, PEXPIRE per bucket',
    claim: async (redis, batch) => {
      const p = redis.pipeline();
      const seen = new Set<string>();
      for (const c of batch) {
        const key = msBucket(c);
        const field = Buffer.from(c.eventId.slice(0, 24), 'hex');
        p.hsetnx(key, field, String(c.inputSeq));
        p.hget(key, field);
        seen.add(key);
      }
      for (const key of seen) p.pexpire(key, WINDOW);
      return p.exec();
    },
  },
  hashLayout('hash per ms, script, field = 32 hex chars', (id) => id, msBucket),
  hashLayout('hash per ms, script, field = 16 binary bytes', (id) => Buffer.from(id, 'hex'), msBucket),
  hashLayout('hash per ms, script, field = 8 binary bytes', (id) => Buffer.from(id.slice(0, 16), 'hex'), msBucket),
  hashLayout('hash per minute, script, field = 12 binary bytes', (id) => Buffer.from(id.slice(0, 24), 'hex'), (c) => `cdc:dedup:bench:m${c.commitTs.slice(0, 16)}`),
];

async function main(): Promise<void> {
  const port = await freePort();
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 100 });
  for (let i = 0; i < 50; i++) {
    try {
      await redis.connect();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  redis.defineCommand('benchClaim', { lua: CLAIM_SCRIPT });
  redis.defineCommand('benchString', { lua: STRING_LUA });
  const info = async () => {
    const text = (await redis.info('cpu')) + (await redis.info('memory'));
    const num = (name: string) => Number(/^(\w+):(.*)$/m.test(text) ? (new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 'NaN') : 'NaN');
    return { cpu: num('used_cpu_user') + num('used_cpu_sys'), memory: num('used_memory') };
  };
  const rows: string[] = [];
  const store = RedisDedupStore.create({ url: `redis://127.0.0.1:${port}`, pipeline: 'bench', windowMs: WINDOW, logger: pino({ level: 'silent' }) });
  while (!store.isReady()) await new Promise((r) => setTimeout(r, 20));
  const after: Layout = { name: 'after: RedisDedupStore.check (hash per ms, 12 B fields, script)', claim: (_r, batch) => store.check(batch) };
  const all: Layout[] = [after, ...layouts, after];
  for (const kind of ['single', 'tx100'] as const) {
    const claims = workload(kind);
    for (const layout of all) {
      await redis.flushall();
      await layout.claim(redis, claims.slice(0, BATCH)); // warm up: script loaded, JIT
      await redis.flushall();
      await new Promise((r) => setTimeout(r, 200));
      const before = await info();
      const cpu0 = process.cpuUsage();
      for (let i = 0; i < claims.length; i += BATCH) await layout.claim(redis, claims.slice(i, i + BATCH));
      const cpu1 = process.cpuUsage(cpu0);
      const after = await info();
      const gateUs = (cpu1.user + cpu1.system) / claims.length;
      const redisUs = ((after.cpu - before.cpu) * 1e6) / claims.length;
      const bytes = (after.memory - before.memory) / claims.length;
      rows.push(`| ${kind} | ${layout.name} | ${gateUs.toFixed(2)} | ${redisUs.toFixed(2)} | ${bytes.toFixed(1)} |`);
      console.log(rows.at(-1));
    }
  }
  console.log(`\n${EVENTS} claims per run, ${BATCH} per batch\n| workload | layout | gate CPU µs/event | Redis CPU µs/event | Redis bytes/event |\n|---|---|---|---|---|\n${rows.join('\n')}`);
  await store.close();
  redis.disconnect();
  server.kill('SIGTERM');
}

await main();
