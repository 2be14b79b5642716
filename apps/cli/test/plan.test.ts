import { parsePipelineFile } from '@cdc/runtime';
import { describe, expect, it } from 'vitest';
import { planApps, slotOf, sumMetric } from '../src/plan.ts';

const file = parsePipelineFile(`
pipeline: Shop-1
partitions: 4
nats: { url: nats://n:4222 }
etcd: { url: http://e:2379 }
redis: { url: redis://r:6379 }
sources: [{ id: pg1, connection: postgres://a/b, tables: [public.t] }, { id: pg2, connection: postgres://a/c, tables: [public.t], slot: mine }]
relay: { reorderer: { processes: 3 } }
sinks: [{ kind: postgres, connection: postgres://s/d }, { kind: kafka, connection: [k:9092] }]
health: { firstPort: 9500 }
`);

describe('cdc run plan', () => {
  it('one reader per source, reorderers dealing the partitions round-robin, one gate, one committer per sink; consecutive ports in that order', () => {
    const apps = planApps(file, '/etc/p.yaml');
    expect(apps.map((a) => [a.name, a.port, a.rank])).toEqual([
      ['reader:pg1', 9500, 0],
      ['reader:pg2', 9501, 0],
      ['lamport-reorderer:0', 9502, 1],
      ['lamport-reorderer:1', 9503, 1],
      ['lamport-reorderer:2', 9504, 1],
      ['dedup-gate', 9505, 2],
      ['committer:postgres', 9506, 3],
      ['committer:kafka', 9507, 3],
    ]);
    expect(apps.map((a) => a.env['ASSIGNED_PARTITIONS'])).toEqual([undefined, undefined, '0,3', '1', '2', 'all', undefined, undefined]);
    expect(apps[1]!.env).toEqual({ SOURCE_ID: 'pg2', PIPELINE_FILE: '/etc/p.yaml', HEALTH_PORT: '9501' });
    expect(apps[7]!.env).toMatchObject({ SINK_NAME: 'kafka' });
  });

  it("names a source's slot as the reader does", () => {
    expect(slotOf(file, file.sources[0]!)).toBe('cdc_shop_1_pg1');
    expect(slotOf(file, file.sources[1]!)).toBe('mine');
  });

  it('sums a metric over its label sets, and says when it is absent', () => {
    const text = '# HELP x\ncdc_a_total{p="0"} 2\ncdc_a_total{p="1"} 3.5\ncdc_ab_total 7\n';
    expect(sumMetric(text, 'cdc_a_total')).toBe(5.5);
    expect(sumMetric(text, 'cdc_b_total')).toBeUndefined();
  });
});
