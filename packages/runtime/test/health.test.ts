import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { describe, expect, test } from 'vitest';
import { HealthServer, Metrics } from '../src/index.ts';

function memoryLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  const logger = pino({ level: 'debug' }, stream);
  return { logger, lines: () => chunks.join('').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>) };
}

async function get(health: HealthServer, path: string): Promise<{ status: number; text: string; type: string | null }> {
  const response = await fetch(`http://127.0.0.1:${health.port}${path}`);
  return { status: response.status, text: await response.text(), type: response.headers.get('content-type') };
}

describe('HealthServer', () => {
  test('listens on loopback unless a host is given', async () => {
    await using health = await HealthServer.create({ port: 0 });
    expect(health.host).toBe('127.0.0.1');
    await using everywhere = await HealthServer.create({ port: 0, host: '0.0.0.0' });
    expect(everywhere.host).toBe('0.0.0.0');
  });

  test('/readyz says check names, ok and reason codes only: a thrown error is "check failed" and is logged, prose is replaced', async () => {
    const { logger, lines } = memoryLogger();
    await using health = await HealthServer.create({ port: 0, logger });
    health.addCheck('nats', () => ({ ok: false, detail: 'reconnecting' }));
    health.addCheck('sink', () => {
      throw new Error('connect ECONNREFUSED 10.1.2.3:5432 postgres://app:hunter2@db/sink');
    });
    health.addCheck('committer', () => ({ ok: false, detail: 'SINK_SCHEMA_HELD table=public.orders column=colour' }));
    health.addCheck('snapshot', () => ({ ok: true, detail: 'public.orders: 50% of 2000 rows' }));
    health.addCheck('redis', () => ({ ok: true }));

    const first = await get(health, '/readyz');
    expect(first.status).toBe(503);
    expect(JSON.parse(first.text)).toEqual({
      ready: false,
      checks: {
        nats: { ok: false, detail: 'reconnecting' },
        sink: { ok: false, detail: 'check failed' },
        committer: { ok: false, detail: 'unavailable' },
        snapshot: { ok: true },
        redis: { ok: true },
      },
    });
    for (const secret of ['ECONNREFUSED', '10.1.2.3', 'hunter2', 'public.orders', 'colour']) expect(first.text).not.toContain(secret);
    await get(health, '/readyz');
    // The real error is in the log, once for repeated probes.
    const failed = lines().filter((line) => line['msg'] === 'readiness check failed');
    expect(failed).toHaveLength(1);
    expect(JSON.stringify(failed[0])).toContain('ECONNREFUSED');
    expect(lines().filter((line) => line['check'] === 'committer')).toHaveLength(1);
  });

  test('/metrics serves the registry: default process metrics and families read at scrape time, counters never going down', async () => {
    const metrics = Metrics.create({ app: 'test-app', pipeline: 'p1' });
    let value = 5;
    metrics.counter('cdc_test_events_total', 'events', ['partition'], () => [[{ partition: 0 }, value]]);
    metrics.gauge('cdc_test_lag_seconds', 'lag', ['partition'], () => [[{ partition: 0 }, 1.5]]);
    metrics.connections({ nats: () => true });
    metrics.connections({ redis: () => false });
    await using health = await HealthServer.create({ port: 0, metrics });
    const first = await get(health, '/metrics');
    expect(first.status).toBe(200);
    expect(first.type).toContain('text/plain');
    expect(first.text).toContain('process_resident_memory_bytes{app="test-app",pipeline="p1"}');
    expect(first.text).toContain('cdc_test_events_total{partition="0",app="test-app",pipeline="p1"} 5');
    expect(first.text).toContain('cdc_test_lag_seconds{partition="0",app="test-app",pipeline="p1"} 1.5');
    expect(first.text).toContain('cdc_connection_up{target="nats",app="test-app",pipeline="p1"} 1');
    expect(first.text).toContain('cdc_connection_up{target="redis",app="test-app",pipeline="p1"} 0');
    value = 8;
    expect((await get(health, '/metrics')).text).toContain('cdc_test_events_total{partition="0",app="test-app",pipeline="p1"} 8');
    // The component was recreated and counts from 0 again: its new count adds on.
    value = 2;
    expect((await get(health, '/metrics')).text).toContain('cdc_test_events_total{partition="0",app="test-app",pipeline="p1"} 10');
  });

  test('without a registry /metrics is 404', async () => {
    await using health = await HealthServer.create({ port: 0 });
    expect((await get(health, '/metrics')).status).toBe(404);
  });

  test('metric names follow the cdc_ convention and never redefine app or pipeline', () => {
    const metrics = Metrics.create({ app: 'a', pipeline: 'p', processMetrics: false });
    expect(() => metrics.counter('events_total', 'x', [], () => [])).toThrow(/cdc_/);
    expect(() => metrics.gauge('cdc_x', 'x', ['pipeline'], () => [])).toThrow(/pipeline/);
  });
});
