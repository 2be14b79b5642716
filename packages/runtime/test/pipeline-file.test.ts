import { ConfigError } from '@cdc/core';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePipelineFile, pipelineFileEnv, withPipelineFile } from '../src/pipeline-file.ts';

const FILE = `
pipeline: shop
partitions: 4
nats: { url: nats://127.0.0.1:4222 }
etcd: { url: http://127.0.0.1:2379 }
redis: { url: redis://127.0.0.1:6379 }
sources:
  - id: pg1
    connection: postgres://cdc:\${SRC_PASSWORD}@db1:5432/app
    tables: [public.orders, public.customers]
    slot: shop_pg1
  - id: pg2
    connection: postgres://cdc@db2:5432/app
    tables: [public.orders]
relay:
  reorderer: { processes: 2, bufferMaxEvents: 1000 }
  dedupGate: { batchLinger: 250ms }
dedup: { window: 15m }
sinks:
  - kind: postgres
    connection: postgres://cdc:\${SINK_PASSWORD}@wh:5432/warehouse
    tables: { public.orders: archive.orders }
    batch: { maxEvents: 500, linger: 20ms }
  - kind: kafka
    connection: [k1:9092, k2:9092]
    routes: { public.orders: orders-cdc, "audit.*": cdc.audit }
    env: { KAFKA_SASL_MECHANISM: PLAIN }
`;
const ENV = { SRC_PASSWORD: 's3cret', SINK_PASSWORD: 'p@ss' };

function problems(text: string, environment: Record<string, string> = ENV): string[] {
  try {
    parsePipelineFile(text, environment, 'f.yaml');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems.map((p) => `${p.variable}: ${p.problem}`);
  }
  throw new Error('expected the file to be refused');
}

describe('the pipeline file', () => {
  it('turns into the variables each app reads, secrets substituted from the environment', () => {
    const file = parsePipelineFile(FILE, ENV);
    expect(pipelineFileEnv(file, 'reader', { sourceId: 'pg1' })).toEqual({
      PIPELINE: 'shop',
      PARTITIONS: '4',
      NATS_URL: 'nats://127.0.0.1:4222',
      SOURCE_ID: 'pg1',
      SOURCE_DATABASE_URL: 'postgres://cdc:s3cret@db1:5432/app',
      TABLES: 'public.orders,public.customers',
      SLOT_NAME: 'shop_pg1',
      ETCD_URL: 'http://127.0.0.1:2379',
      SINKS: 'postgres,kafka',
    });
    expect(pipelineFileEnv(file, 'lamport-reorderer')).toMatchObject({ SOURCES: 'pg1,pg2', BUFFER_MAX_EVENTS: '1000' });
    expect(pipelineFileEnv(file, 'dedup-gate')).toMatchObject({ REDIS_URL: 'redis://127.0.0.1:6379', DEDUP_WINDOW_MS: '900000', BATCH_LINGER_MS: '250' });
    expect(pipelineFileEnv(file, 'committer', { sinkName: 'postgres' })).toMatchObject({
      SINK: 'postgres',
      SINK_NAME: 'postgres',
      SINK_DATABASE_URL: 'postgres://cdc:p@ss@wh:5432/warehouse',
      TABLE_MAP: 'public.orders=archive.orders',
      BATCH_MAX_EVENTS: '500',
      BATCH_LINGER_MS: '20',
    });
    expect(pipelineFileEnv(file, 'committer', { sinkName: 'kafka' })).toMatchObject({
      SINK: 'kafka',
      KAFKA_BROKERS: 'k1:9092,k2:9092',
      KAFKA_TOPIC_ROUTES: 'public.orders=orders-cdc,audit.*=cdc.audit',
      KAFKA_SASL_MECHANISM: 'PLAIN',
    });
  });

  it('names every bad field by its path in the file, without echoing values', () => {
    const bad = FILE.replace('partitions: 4', 'partitions: 0')
      .replace('connection: [k1:9092, k2:9092]', 'connection: [k1]')
      .replace('tables: [public.orders]\n', 'tables: [orders]\n')
      .replace('postgres://cdc:${SINK_PASSWORD}@wh:5432/warehouse', 'mysql://cdc:hunter2@wh/warehouse')
      .replace('dedup: { window: 15m }', 'dedup: { window: soon }\nextra: 1');
    const found = problems(bad);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^f\.yaml partitions: /),
        expect.stringMatching(/^f\.yaml sinks\[1\]\.connection: host:port brokers/),
        expect.stringMatching(/^f\.yaml sinks\[0\]\.connection: must be a postgres\/postgresql URL/),
        expect.stringMatching(/^f\.yaml sources\[1\]\.tables\[0\]: schema\.table/),
        expect.stringMatching(/^f\.yaml dedup\.window: a duration/),
        expect.stringMatching(/^f\.yaml \(file\): unknown field\(s\) extra/),
      ]),
    );
    expect(found.join('\n')).not.toContain('hunter2');
  });

  it('an unset ${VARIABLE} is a problem at its field; $${ is a literal', () => {
    expect(problems(FILE, { SINK_PASSWORD: 'x' })).toEqual(['f.yaml sources[0].connection: references ${SRC_PASSWORD}, which is not set in the environment']);
    const file = parsePipelineFile(FILE.replace('slot: shop_pg1', () => 'env: { NOTE: "$${HOME}" }'), ENV);
    expect(file.sources[0]!.env).toEqual({ NOTE: '${HOME}' });
  });

  it("an app needs only its own connections' variables: another source's or sink's missing one is no error for it", () => {
    const path = join(mkdtempSync(join(tmpdir(), 'pipeline-file-')), 'p.yaml');
    writeFileSync(path, FILE.replace('postgres://cdc@db2:5432/app', () => 'postgres://cdc:${SRC2_PASSWORD}@db2:5432/app'));
    // The reader of pg1 has its own secret only.
    expect(withPipelineFile('reader', { PIPELINE_FILE: path, SOURCE_ID: 'pg1', SRC_PASSWORD: 's' })).toMatchObject({ SOURCE_DATABASE_URL: 'postgres://cdc:s@db1:5432/app', SINKS: 'postgres,kafka' });
    expect(() => withPipelineFile('reader', { PIPELINE_FILE: path, SOURCE_ID: 'pg2', SRC_PASSWORD: 's' })).toThrow(/sources\[1\]\.connection: references \$\{SRC2_PASSWORD\}/);
    // The PostgreSQL committer its sink's; the relay apps none.
    expect(withPipelineFile('committer', { PIPELINE_FILE: path, SINK_NAME: 'postgres', SINK_PASSWORD: 'k' })).toMatchObject({ SINK_DATABASE_URL: 'postgres://cdc:k@wh:5432/warehouse' });
    expect(() => withPipelineFile('committer', { PIPELINE_FILE: path, SINK_NAME: 'postgres' })).toThrow(/sinks\[0\]\.connection: references \$\{SINK_PASSWORD\}/);
    expect(withPipelineFile('dedup-gate', { PIPELINE_FILE: path })).toMatchObject({ REDIS_URL: 'redis://127.0.0.1:6379' });
    expect(withPipelineFile('lamport-reorderer', { PIPELINE_FILE: path })).toMatchObject({ SOURCES: 'pg1,pg2' });
    // Without an app (cdc), every reference is needed.
    expect(problems(FILE, { SRC_PASSWORD: 's' })).toEqual(['f.yaml sinks[0].connection: references ${SINK_PASSWORD}, which is not set in the environment']);
  });

  it('two sinks of one kind need names; duplicate source ids are refused', () => {
    const twoPostgres = FILE.replace('kind: kafka\n    connection: [k1:9092, k2:9092]', 'kind: postgres\n    connection: postgres://wh2/x').replace(/routes: .*\n/, '').replace(/env: \{ KAFKA.*\n/, '');
    expect(problems(twoPostgres)).toEqual(['f.yaml sinks[1].name: a second sink named postgres: give each sink its own name']);
    expect(problems(FILE.replace('id: pg2', 'id: pg1'))).toEqual(['f.yaml sources[1].id: a second source with id pg1']);
  });

  it('withPipelineFile: the environment overrides single values; several sources need SOURCE_ID', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pipeline-file-'));
    const path = join(dir, 'p.yaml');
    writeFileSync(path, FILE);
    const merged = withPipelineFile('reader', { ...ENV, PIPELINE_FILE: path, SOURCE_ID: 'pg2', PARTITIONS: '8' });
    expect(merged).toMatchObject({ SOURCE_ID: 'pg2', SOURCE_DATABASE_URL: 'postgres://cdc@db2:5432/app', PARTITIONS: '8' });
    expect(() => withPipelineFile('reader', { ...ENV, PIPELINE_FILE: path })).toThrow(/SOURCE_ID: required: the file has 2 sources \(pg1, pg2\)/);
    expect(() => withPipelineFile('committer', { ...ENV, PIPELINE_FILE: path, SINK_NAME: 'nope' })).toThrow(/SINK_NAME: nope is not one of the file's sinks \(postgres, kafka\)/);
    expect(withPipelineFile('reader', { A: '1' })).toEqual({ A: '1' });
    expect(() => withPipelineFile('reader', { PIPELINE_FILE: join(dir, 'missing.yaml') })).toThrow(/PIPELINE_FILE: cannot read .*ENOENT/);
  });
});
