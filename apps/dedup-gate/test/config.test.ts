import { ConfigError } from '@cdc/core';
import { loadConfig } from '@cdc/runtime';
import { describe, expect, it } from 'vitest';
import { schema } from '../src/config.ts';

describe('dedup-gate config', () => {
  it('fills the defaults (10 min window, 64 messages per batch) and parses a partition list', () => {
    const config = loadConfig(schema, {
      PIPELINE: 'orders',
      PARTITIONS: '4',
      ASSIGNED_PARTITIONS: '1,3',
      REDIS_URL: 'redis://127.0.0.1:6379',
      NATS_URL: 'nats://127.0.0.1:4222',
    });
    expect(config).toMatchObject({ partitions: [1, 3], DEDUP_WINDOW_MS: 600_000, BATCH_MAX: 64, BATCH_LINGER_MS: 500, HEALTH_PORT: 8080 });
  });

  it('names every bad variable at once', () => {
    try {
      loadConfig(schema, { PIPELINE: 'o', PARTITIONS: '0', REDIS_URL: 'nats://x', DEDUP_WINDOW_MS: '-1' });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const variables = (error as ConfigError).problems.map((p) => p.variable).sort();
      expect(variables).toEqual(['DEDUP_WINDOW_MS', 'NATS_URL', 'PARTITIONS', 'REDIS_URL']);
    }
  });
});
