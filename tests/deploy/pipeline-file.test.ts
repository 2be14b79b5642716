/**
 * The example pipeline file (infra/local/pipeline.yaml, the README's) gives every app
 * variables its own config schema accepts: the file and the schemas cannot drift apart.
 */
import { loadPipelineFile, pipelineFileEnv, type z } from '@cdc/runtime';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { committerConfigSchema } from '@cdc/app-committer/config';
import { schema as dedupGateSchema } from '@cdc/app-dedup-gate/config';
import { schema as reordererSchema } from '@cdc/app-lamport-reorderer/config';
import { readerConfigSchema } from '@cdc/app-reader/config';

const EXAMPLE = fileURLToPath(new URL('../../infra/local/pipeline.yaml', import.meta.url));
const ENV = {
  NATS_URL: 'nats://127.0.0.1:54222',
  ETCD_URL: 'http://127.0.0.1:52379',
  REDIS_URL: 'redis://127.0.0.1:56379',
  SOURCE_DATABASE_URL: 'postgres://postgres@127.0.0.1:55432/app',
  SINK_DATABASE_URL: 'postgres://postgres@127.0.0.1:55432/warehouse',
};

describe('the example pipeline file', () => {
  it('passes every app schema', () => {
    const file = loadPipelineFile(EXAMPLE, ENV);
    const schemas: [string, z.ZodTypeAny, Record<string, string>][] = [
      ['reader', readerConfigSchema, pipelineFileEnv(file, 'reader')],
      ['lamport-reorderer', reordererSchema, pipelineFileEnv(file, 'lamport-reorderer')],
      ['dedup-gate', dedupGateSchema, pipelineFileEnv(file, 'dedup-gate')],
      ['committer', committerConfigSchema, pipelineFileEnv(file, 'committer')],
    ];
    for (const [app, schema, env] of schemas) {
      const result = schema.safeParse(env);
      expect(result.success ? [] : result.error.issues, app).toEqual([]);
    }
    expect(pipelineFileEnv(file, 'reader')).toMatchObject({ PIPELINE: 'local', PARTITIONS: '4', SINKS: 'postgres', TABLES: 'public.orders,public.customers' });
  });
});
