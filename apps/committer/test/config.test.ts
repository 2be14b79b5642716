import { describe, expect, test } from 'vitest';
import { committerConfigSchema } from '../src/config.ts';

const base = { PIPELINE: 'p', PARTITIONS: '2', NATS_URL: 'nats://127.0.0.1:4222', ETCD_URL: 'http://127.0.0.1:2379', SINK_DATABASE_URL: 'postgres://u:p@127.0.0.1:5432/sink' };

describe('SCHEMA_CHANGES', () => {
  test('defaults to evolve, takes fail, refuses anything else', () => {
    expect(committerConfigSchema.parse(base).SCHEMA_CHANGES).toBe('evolve');
    expect(committerConfigSchema.parse({ ...base, SCHEMA_CHANGES: 'fail' }).SCHEMA_CHANGES).toBe('fail');
    const bad = committerConfigSchema.safeParse({ ...base, SCHEMA_CHANGES: 'ignore' });
    expect(bad.success).toBe(false);
    expect(JSON.stringify(bad.error?.issues)).toContain("'evolve' or 'fail'");
  });
});
