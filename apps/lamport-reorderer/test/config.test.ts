import { ConfigError } from '@cdc/core';
import { loadConfig } from '@cdc/runtime';
import { describe, expect, it } from 'vitest';
import { schema } from '../src/config.ts';

describe('lamport-reorderer config', () => {
  it('fills the defaults and expands the assignment', () => {
    const config = loadConfig(schema, { PIPELINE: 'orders', PARTITIONS: '4', SOURCES: 'pg1, pg2', NATS_URL: 'nats://127.0.0.1:4222' });
    expect(config).toMatchObject({
      partitions: [0, 1, 2, 3],
      SOURCES: ['pg1', 'pg2'],
      BUFFER_MAX_EVENTS: 50_000,
      BATCH_MAX: 64,
      BATCH_LINGER_MS: 500,
      HEALTH_PORT: 8080,
      LOG_LEVEL: 'info',
    });
  });

  it('names every bad variable at once', () => {
    try {
      loadConfig(schema, { PIPELINE: 'bad name', SOURCES: '', NATS_URL: 'http://x' });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const variables = (error as ConfigError).problems.map((p) => p.variable).sort();
      expect(variables).toEqual(['NATS_URL', 'PARTITIONS', 'PIPELINE', 'SOURCES']);
    }
  });

  it('rejects a partition outside PARTITIONS', () => {
    expect(() => loadConfig(schema, { PIPELINE: 'o', PARTITIONS: '2', ASSIGNED_PARTITIONS: '0,2', SOURCES: 'pg1', NATS_URL: 'nats://h:1' })).toThrow(
      /ASSIGNED_PARTITIONS: partition 2 is outside 0..1/,
    );
  });
});
