/**
 * The Kafka committer in this process against the real broker and JetStream: Debezium
 * records per table topic keyed by primary key, exactly once across restarts (the
 * checkpoint travels in the same Kafka transaction), zombie fencing by transactional id,
 * and the bad-input cases (too large, topic not creatable, Kafka unreachable).
 */
import { KafkaFencedError, TopicCreationError } from '@cdc/sink-kafka';
import { UnreachableError, type ChangeEvent } from '@cdc/core';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, test, waitFor } from '../harness/index.ts';
import { createPipeline, createPublishingPipeline, deadLetters, type SourceLog } from '../committer/support.ts';
import { parseJson, readTopics, startKafkaCommitter, type KafkaRecord } from './support.ts';

const P = 2;

function account(id: number, version: number, extra: Record<string, string> = {}): Record<string, string> {
  return { id: String(id), owner: `owner-${id}`, balance: String(100 * version), version: String(version), ...extra };
}

/** PostgreSQL type OIDs of the accounts columns, as a reader would send them. */
const ACCOUNT_TYPES = { id: 20, owner: 25, balance: 20, version: 23, note: 25 };

function typed(events: ChangeEvent[]): ChangeEvent[] {
  return events.map((event) => ({ ...event, columnTypes: ACCOUNT_TYPES }));
}

function insert(log: SourceLog, id: number, version = 1, extra: Record<string, string> = {}): ChangeEvent[] {
  return typed(log.transaction([{ table: 'public.accounts', op: 'insert', key: [String(id)], after: account(id, version, extra) }]));
}

interface Envelope {
  op: string;
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
  source: Record<string, unknown>;
}

/** (key, op, version) per record, tombstones as op 'tombstone'. */
function summary(records: readonly KafkaRecord[]): string[] {
  return records.map((record) => {
    const value = parseJson<Envelope>(record.value);
    if (value === null) return `${record.key} tombstone`;
    return `${record.key} ${value.op} v${String((value.after ?? value.before)?.version ?? '?')}`;
  });
}

describe('Kafka committer', () => {
  test('writes Debezium records keyed by primary key, with tombstones, exactly once across a restart', async ({ ctx }) => {
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const prefix = ctx.uniqueName('dbz');
    const checkpointTopic = ctx.uniqueName('ckpt');
    await out.events(insert(log, 1));
    await out.events(insert(log, 2));
    await out.events(typed(log.transaction([{ table: 'public.accounts', op: 'update', key: ['1'], after: account(1, 2) }])));
    await out.events(typed(log.transaction([{ table: 'public.accounts', op: 'delete', key: ['2'], before: { id: '2' } }])));
    await out.watermark(log.watermark());
    await out.flush();

    const options = { pipeline, partitions: P, bus, checkpointTopic, records: { topicPrefix: prefix, tombstones: true, transactionMetadata: false } };
    const first = await startKafkaCommitter(ctx, options);
    const topic = `${prefix}.public.accounts`;
    const reader = await readTopics(ctx, [topic]);
    await reader.until((records) => records.length >= 5, 30_000, '4 events and a tombstone');
    expect(summary(reader.records)).toEqual(['{"id":1} c v1', '{"id":2} c v1', '{"id":1} u v2', '{"id":2} d v?', '{"id":2} tombstone']);
    const created = parseJson<Envelope>(reader.records[0]?.value ?? null);
    expect(created?.source).toMatchObject({ connector: 'postgresql', name: prefix, schema: 'public', table: 'accounts' });
    expect(created?.after).toMatchObject({ id: 1, owner: 'owner-1', balance: 100, version: 1 });
    await first.close();

    // More changes while no committer runs; the restarted one resumes after its checkpoint.
    await out.events(insert(log, 3));
    await out.watermark(log.watermark());
    await out.flush();
    const second = await startKafkaCommitter(ctx, options);
    expect(second.transactionalId).toBe(first.transactionalId);
    await reader.until((records) => records.length >= 6, 30_000, 'the change written after the restart');
    // Anything replayed would arrive right behind it; give it the time to show.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(summary(reader.records)).toEqual(['{"id":1} c v1', '{"id":2} c v1', '{"id":1} u v2', '{"id":2} d v?', '{"id":2} tombstone', '{"id":3} c v1']);

    const checkpoints = await readTopics(ctx, [checkpointTopic]);
    await checkpoints.until((records) => records.some((r) => r.key === second.transactionalId), 20_000, 'a checkpoint record');
    const stored = parseJson<{ lanes: { partition: number; resumeSeq: number }[] }>(
      checkpoints.records.filter((r) => r.key === second.transactionalId).at(-1)?.value ?? null,
    );
    expect(stored?.lanes.map((lane) => lane.partition)).toEqual([0, 1]);
  });

  test('a second committer with the same transactional id fences the first: the zombie writes nothing more', async ({ ctx }) => {
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, P);
    const prefix = ctx.uniqueName('zmb');
    const checkpointTopic = ctx.uniqueName('ckpt');
    const options = { pipeline, partitions: P, bus, checkpointTopic, records: { topicPrefix: prefix, tombstones: false, transactionMetadata: false } };
    const zombie = await startKafkaCommitter(ctx, options);
    for (let id = 1; id <= 3; id++) await out.events(insert(log, id));
    await out.watermark(log.watermark());
    await out.flush();
    const reader = await readTopics(ctx, [`${prefix}.public.accounts`]);
    await reader.until((records) => records.length >= 3, 30_000, 'the first three inserts');

    const successor = await startKafkaCommitter(ctx, options);
    for (let id = 4; id <= 8; id++) await out.events(insert(log, id));
    await out.watermark(log.watermark());
    await out.flush();
    // Both read the new events; only the successor may commit them.
    const failure = await Promise.race([zombie.closed(), new Promise((resolve) => setTimeout(() => resolve('still running'), 30_000))]);
    expect(failure).toBeInstanceOf(KafkaFencedError);
    expect(zombie.state).toBe('failed');
    await reader.until((records) => records.length >= 8, 30_000, 'all eight inserts');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(summary(reader.records)).toEqual(Array.from({ length: 8 }, (_, i) => `{"id":${i + 1}} c v1`));
    expect(successor.state).toBe('running');
  });

  test('a record larger than the broker takes is dead-lettered with its size and the limit; the rest commits', async ({ ctx }) => {
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, 1);
    const prefix = ctx.uniqueName('big');
    await out.events(insert(log, 1, 1, { note: 'x'.repeat(10_000) }));
    await out.events(insert(log, 2));
    await out.watermark(log.watermark());
    await out.flush();
    await startKafkaCommitter(ctx, {
      pipeline,
      partitions: 1,
      bus,
      checkpointTopic: ctx.uniqueName('ckpt'),
      maxMessageBytes: 4_000,
      records: { topicPrefix: prefix, tombstones: false, transactionMetadata: false },
    });
    const reader = await readTopics(ctx, [`${prefix}.public.accounts`]);
    await reader.until((records) => records.length >= 1, 30_000, 'the small insert');
    const letters = await waitFor(async () => {
      const found = await deadLetters(bus, pipeline);
      return found.length > 0 ? found : undefined;
    }, { what: 'a dead letter', timeoutMs: 20_000 });
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ stage: 'committer', code: 'KAFKA_RECORD_TOO_LARGE', table: 'public.accounts' });
    expect(letters[0]?.reason).toMatch(/of \d{5} bytes .* exceeds the limit of 4000 bytes/);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(summary(reader.records)).toEqual(['{"id":2} c v1']);
  });

  test('a topic that cannot be created: a clear error naming it, retried, the committer stays up', async ({ ctx }) => {
    const { pipeline, bus, log, out } = await createPublishingPipeline(ctx, 1);
    const prefix = ctx.uniqueName('nocreate');
    await out.events(insert(log, 1));
    await out.watermark(log.watermark());
    await out.flush();
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) });
    const committer = await startKafkaCommitter(ctx, {
      pipeline,
      partitions: 1,
      bus,
      checkpointTopic: ctx.uniqueName('ckpt'),
      // One broker: three replicas cannot be placed, so the broker refuses to create the topic.
      topicReplicationFactor: 3,
      records: { topicPrefix: prefix, tombstones: false, transactionMetadata: false },
      logger: pino({ level: 'warn' }, sink),
    });
    const topic = `${prefix}.public.accounts`;
    await waitFor(() => lines.some((line) => line.includes('KAFKA_TOPIC_NOT_CREATED') && line.includes(JSON.stringify(topic).slice(1, -1))), {
      what: 'an error naming the topic',
      timeoutMs: 30_000,
    });
    await waitFor(() => committer.stats().retries >= 2, { what: 'retries', timeoutMs: 30_000 });
    expect(committer.state).toBe('running');
    expect(committer.readiness().ok).toBe(false);
    const failure = new TopicCreationError(topic, new Error('x'));
    expect(failure.message).toContain(topic);
  });

  test('Kafka unreachable at start: retried with a message, then a clear UnreachableError', async ({ ctx }) => {
    const { pipeline, bus } = await createPipeline(ctx);
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) });
    const started = startKafkaCommitter(ctx, {
      pipeline,
      partitions: 1,
      bus,
      brokers: ['127.0.0.1:1'],
      connectAttempts: 2,
      records: { topicPrefix: 'unused', tombstones: false, transactionMetadata: false },
      logger: pino({ level: 'warn' }, sink),
    });
    const error = await started.then(() => undefined, (failure: unknown) => failure);
    expect(error).toBeInstanceOf(Error);
    const unreachable = (error as Error & { cause?: unknown }).cause ?? error;
    expect(unreachable).toBeInstanceOf(UnreachableError);
    expect(String((unreachable as Error).message)).toMatch(/Kafka at 127\.0\.0\.1:1 is not reachable/);
    expect(lines.some((line) => line.includes('Kafka not reachable yet; retrying'))).toBe(true);
  });
});
