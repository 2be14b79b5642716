import { ConfigError } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import { env, loadConfig, redactConfig, z } from '../src/config.ts';

describe('env.partitions', () => {
  const schema = z.object({ PARTITIONS: env.partitions() });

  it('parses a positive count once, as a number', () => {
    expect(loadConfig(schema, { PARTITIONS: '8' })).toEqual({ PARTITIONS: 8 });
  });

  it.each([undefined, '0', '-1', '1.5', 'four', '4097'])('refuses %s naming PARTITIONS', (value) => {
    expect(() => loadConfig(schema, { PARTITIONS: value })).toThrow(ConfigError);
    try {
      loadConfig(schema, { PARTITIONS: value });
    } catch (error) {
      expect((error as ConfigError).problems.map((p) => p.variable)).toEqual(['PARTITIONS']);
    }
  });
});

describe('redactConfig', () => {
  it('hides the password of every *_URL (comma lists too) and turns Maps into objects', () => {
    const logged = redactConfig({
      SINK_DATABASE_URL: 'postgres://cdc:secret@db:5432/sink',
      ETCD_URL: 'http://root:pw@e1:2379, http://e2:2379',
      NATS_URL: 'nats://127.0.0.1:4222',
      TABLE_MAP: new Map([['public.a', 'public.b']]),
      PARTITIONS: 4,
      UNSET_URL: undefined,
    });
    expect(JSON.stringify(logged)).not.toContain('secret');
    expect(JSON.stringify(logged)).not.toContain(':pw@');
    expect(logged).toEqual({
      SINK_DATABASE_URL: 'postgres://cdc:***@db:5432/sink',
      ETCD_URL: 'http://root:***@e1:2379,http://e2:2379',
      NATS_URL: 'nats://127.0.0.1:4222',
      TABLE_MAP: { 'public.a': 'public.b' },
      PARTITIONS: 4,
      UNSET_URL: undefined,
    });
  });
});
