import { ConfigError } from '@cdc/core';
import { loadConfig } from '@cdc/runtime';
import { describe, expect, it } from 'vitest';
import { defaultSlotName, readerConfigSchema } from '../src/config.ts';

const base = {
  PIPELINE: 'Orders-EU',
  SOURCE_ID: 'pg-1',
  SOURCE_DATABASE_URL: 'postgres://cdc:secret@db:5432/shop',
  TABLES: 'public.orders, public.customers',
  PARTITIONS: '8',
  NATS_URL: 'nats://nats:4222',
  ETCD_URL: 'http://etcd:2379',
};

describe('reader config', () => {
  it('fills defaults: slot and publication cdc_<pipeline>_<source>, sanitised; heartbeat 1000 ms; port 8080', () => {
    const config = loadConfig(readerConfigSchema, base);
    expect(config).toMatchObject({
      TABLES: ['public.orders', 'public.customers'],
      PARTITIONS: 8,
      SLOT_NAME: 'cdc_orders_eu_pg_1',
      PUBLICATION_NAME: 'cdc_orders_eu_pg_1',
      HEARTBEAT_INTERVAL_MS: 1000,
      MAX_IN_FLIGHT: 256,
      HEALTH_PORT: 8080,
      LOG_LEVEL: 'info',
    });
    expect(defaultSlotName('p'.repeat(80), 's')).toHaveLength(63);
  });

  it('names every bad variable at once', () => {
    let error: unknown;
    try {
      loadConfig(readerConfigSchema, { ...base, SOURCE_DATABASE_URL: 'mysql://x', TABLES: 'orders', PARTITIONS: undefined, SLOT_NAME: 'Bad Name' });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const variables = (error as ConfigError).problems.map((p) => p.variable);
    expect(variables).toEqual(expect.arrayContaining(['SOURCE_DATABASE_URL', 'TABLES', 'PARTITIONS', 'SLOT_NAME']));
  });
});
