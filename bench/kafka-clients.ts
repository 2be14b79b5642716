/**
 * The Kafka committer's producer workload on each candidate client, side by side in one
 * run (issue #14): transactions of `BATCH` Debezium-sized records on one table topic plus
 * one checkpoint record on a second topic, `acks=all`, idempotent and transactional under a
 * stable id — what `packages/sink-kafka` does per batch, without the rest of the pipeline.
 *
 *   node --import tsx bench/kafka-clients.ts            (KAFKA_BROKERS from .state/servers.env)
 *
 * Each (client, compression) case runs in a child process of its own, twice, interleaved
 * (a, b, a, b), so one process's JIT or GC never lands in another's figure; a case reports
 * records/s and the process's CPU µs per record (utime + stime over the timed part).
 */
import { spawnSync } from 'node:child_process';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { Kafka, CompressionTypes, logLevel } from 'kafkajs';
import { Admin, Producer, stringSerializers } from '@platformatic/kafka';

const BATCH = Number(process.env.KAFKA_CLIENTS_BATCH ?? 2_000);
const TRANSACTIONS = Number(process.env.KAFKA_CLIENTS_TRANSACTIONS ?? 40);
const WARMUP = 5;

interface CaseResult {
  readonly client: string;
  readonly compression: string;
  readonly records: number;
  readonly seconds: number;
  readonly recordsPerSecond: number;
  readonly cpuUsPerRecord: number;
}

/** A Debezium-shaped value of ~600 bytes, different per record (as the committer's are). */
function value(i: number): string {
  return JSON.stringify({
    before: null,
    after: { id: i, account: `acct-${i % 977}`, amount: (i * 7) % 100_000, note: `payment ${i} for invoice ${i * 31}`, updated_at: '2026-12-04T21:00:00.123456Z' },
    source: { version: 'cdc-0.1', connector: 'postgresql', name: 'bench', ts_ms: 1_796_000_000_000 + i, snapshot: 'false', db: 'bench', schema: 'public', table: 'orders', txId: 1000 + Math.floor(i / 100), lsn: 100_000_000 + i * 64 },
    op: 'c',
    ts_ms: 1_796_000_000_000 + i,
    transaction: null,
  });
}

async function runKafkajs(brokers: string[], topic: string, checkpointTopic: string, compression: string): Promise<CaseResult> {
  const kafka = new Kafka({ clientId: 'bench-kafkajs', brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ transactionalId: `bench-kafkajs-${process.pid}`, idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  const codec = compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
  let n = 0;
  const once = async (): Promise<void> => {
    const messages = Array.from({ length: BATCH }, () => ({ key: `{"id":${n}}`, value: value(n++) }));
    const transaction = await producer.transaction();
    await transaction.sendBatch({ topicMessages: [{ topic, messages }, { topic: checkpointTopic, messages: [{ key: 'bench', value: `{"n":${n}}` }] }], acks: -1, compression: codec });
    await transaction.commit();
  };
  return timed('kafkajs', compression, once, () => producer.disconnect());
}

async function runPlatformatic(brokers: string[], topic: string, checkpointTopic: string, compression: string): Promise<CaseResult> {
  const producer = new Producer({
    clientId: 'bench-platformatic',
    bootstrapBrokers: brokers,
    transactionalId: `bench-platformatic-${process.pid}`,
    idempotent: true,
    acks: -1,
    autocreateTopics: false,
    serializers: stringSerializers,
    ...(compression === 'none' ? {} : { compression: compression as 'gzip' | 'snappy' | 'lz4' | 'zstd' }),
  });
  let n = 0;
  const once = async (): Promise<void> => {
    const messages = Array.from({ length: BATCH }, () => ({ topic, key: `{"id":${n}}`, value: value(n++) }));
    messages.push({ topic: checkpointTopic, key: 'bench', value: `{"n":${n}}` });
    const transaction = await producer.beginTransaction();
    await transaction.send({ messages });
    await transaction.commit();
  };
  return timed('platformatic', compression, once, () => producer.close());
}

async function timed(client: string, compression: string, once: () => Promise<void>, close: () => Promise<void>): Promise<CaseResult> {
  try {
    for (let i = 0; i < WARMUP; i++) await once();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < TRANSACTIONS; i++) await once();
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const records = TRANSACTIONS * BATCH;
    return { client, compression, records, seconds, recordsPerSecond: Math.round(records / seconds), cpuUsPerRecord: (cpu.user + cpu.system) / records };
  } finally {
    await close();
  }
}

async function child(clientName: string, compression: string): Promise<void> {
  const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
  const topic = `bench.kafka-clients.${clientName}.${compression}`;
  const checkpointTopic = 'bench.kafka-clients.checkpoints';
  const admin = new Admin({ clientId: 'bench-admin', bootstrapBrokers: brokers });
  try {
    const existing = new Set(await admin.listTopics());
    const missing = [topic, checkpointTopic].filter((t) => !existing.has(t));
    if (missing.length > 0) await admin.createTopics({ topics: missing, partitions: 1, replicas: 1 });
  } finally {
    await admin.close();
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const run = clientName === 'kafkajs' ? runKafkajs : runPlatformatic;
  const result = await run(brokers, topic, checkpointTopic, compression);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function main(): void {
  const cases: [string, string][] = [
    ['kafkajs', 'none'],
    ['platformatic', 'none'],
    ['kafkajs', 'gzip'],
    ['platformatic', 'gzip'],
    ['platformatic', 'snappy'],
    ['platformatic', 'lz4'],
    // zstd: node:zlib has it from Node 22.15 on.
    ...(typeof (zlib as { zstdCompressSync?: unknown }).zstdCompressSync === 'function' ? ([['platformatic', 'zstd']] as [string, string][]) : []),
  ];
  const results: CaseResult[] = [];
  for (let round = 0; round < 2; round++) {
    for (const [clientName, compression] of cases) {
      const out = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), clientName, compression], { encoding: 'utf8', timeout: 180_000 });
      const line = out.stdout.trim().split('\n').at(-1);
      if (out.status !== 0 || line === undefined || line === '') {
        process.stderr.write(`case ${clientName}/${compression} failed (status ${out.status}): ${out.stderr.slice(-2000)}\n`);
        process.exitCode = 1;
        continue;
      }
      results.push(JSON.parse(line) as CaseResult);
      process.stderr.write(`${line}\n`);
    }
  }
  console.log(`batch ${BATCH} records + 1 checkpoint per transaction, ${TRANSACTIONS} transactions per case, 2 rounds`);
  console.log('client        compression  records/s (each round)   CPU µs/record (each round)');
  for (const [clientName, compression] of cases) {
    const mine = results.filter((r) => r.client === clientName && r.compression === compression);
    console.log(
      `${clientName.padEnd(13)} ${compression.padEnd(12)} ${mine.map((r) => String(r.recordsPerSecond).padStart(8)).join(' ')}          ${mine.map((r) => r.cpuUsPerRecord.toFixed(1).padStart(6)).join(' ')}`,
    );
  }
}

const [clientArg, compressionArg] = process.argv.slice(2);
if (clientArg !== undefined && compressionArg !== undefined) await child(clientArg, compressionArg);
else main();
