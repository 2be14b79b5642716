/**
 * The apps of a pipeline check at start that they agree on partitions, sources and sinks
 * (a NATS KV bucket of their views): a disagreement is a startup error naming both values.
 */
import { Bus, PipelineAgreement, PipelineMismatchError, instanceKey } from '@cdc/bus';
import { STAGES, streamName } from '@cdc/core';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, test } from '../harness/index.ts';
import { spawnApp } from '../harness/process.ts';

const logger = pino({ level: 'silent' });

describe('pipeline agreement', () => {
  test('a view that disagrees with a live app is refused naming both values; once that app has closed it is accepted', async ({ ctx }) => {
    const pipeline = ctx.uniqueName('agree');
    const bus = await Bus.create({ url: ctx.servers.nats, name: `test:${pipeline}`, logger });
    ctx.defer('bus close', () => bus.close());

    const reader = await PipelineAgreement.join(bus, { pipeline, logger, view: { app: 'reader', instance: instanceKey('reader', 'pg1'), partitions: 4, source: 'pg1', sinks: ['postgres'] } });
    ctx.defer('reader view', () => reader.close());
    // Agreeing views join.
    const reorderer = await PipelineAgreement.join(bus, { pipeline, logger, view: { app: 'lamport-reorderer', instance: instanceKey('lamport-reorderer', 'all'), partitions: 4, sources: ['pg1'] } });
    await reorderer.close();

    const wrong = PipelineAgreement.join(bus, { pipeline, logger, view: { app: 'committer', instance: instanceKey('committer', 'kafka'), partitions: 8, sink: 'kafka' } });
    const error = await wrong.then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(PipelineMismatchError);
    expect((error as PipelineMismatchError).mismatches).toEqual([
      'PARTITIONS: this committer (committer.kafka) has 8, reader (reader.pg1) has 4',
      'SINKS: this committer (committer.kafka) is sink kafka, which reader (reader.pg1) does not wait for (its SINKS: postgres)',
    ]);
    const otherSources = await PipelineAgreement.join(bus, { pipeline, logger, view: { app: 'lamport-reorderer', instance: 'lamport-reorderer.all', partitions: 4, sources: ['pg2'] } }).then(() => undefined, (e: unknown) => e);
    expect((otherSources as Error).message).toContain('SOURCES: this lamport-reorderer (lamport-reorderer.all) merges pg2, but reader (reader.pg1) reads source pg1');

    await reader.close();
    const later = await PipelineAgreement.join(bus, { pipeline, logger, view: { app: 'committer', instance: 'committer.kafka', partitions: 8, sink: 'kafka' } });
    await later.close();
  });

  test('an app started from a pipeline file with other partitions than a running app fails at start, naming both', async ({ ctx }) => {
    const pipeline = ctx.uniqueName('agree_app');
    const bus = await Bus.create({ url: ctx.servers.nats, name: `test:${pipeline}`, logger });
    ctx.defer('bus close', () => bus.close());
    ctx.defer('delete streams', async () => {
      for (const stage of [...STAGES, 'dlq'] as const) await bus.jsm.streams.delete(streamName(pipeline, stage)).catch(() => undefined);
    });
    const dir = mkdtempSync(join(tmpdir(), 'agree-'));
    const file = join(dir, 'pipeline.yaml');
    const yaml = (partitions: number): string => `
pipeline: ${pipeline}
partitions: ${partitions}
nats: { url: ${ctx.servers.nats} }
etcd: { url: ${ctx.servers.etcd} }
redis: { url: ${ctx.servers.redis} }
sources: [{ id: pg1, connection: "postgres://nobody@127.0.0.1:1/none", tables: [public.t] }]
sinks: [{ kind: postgres, connection: "postgres://nobody@127.0.0.1:1/none" }]
`;
    writeFileSync(file, yaml(4));
    const gate = spawnApp('apps/dedup-gate/src/main.ts', { name: 'dedup-gate', env: { PIPELINE_FILE: file, HEALTH_PORT: '0' } });
    ctx.defer('stop gate', () => gate.stop());
    await gate.waitForLine(/health server listening/, 30_000);

    writeFileSync(file, yaml(8));
    const reorderer = spawnApp('apps/lamport-reorderer/src/main.ts', { name: 'lamport-reorderer', env: { PIPELINE_FILE: file, HEALTH_PORT: '0' } });
    ctx.defer('stop reorderer', () => reorderer.stop());
    const exit = await reorderer.waitForExit(30_000);
    expect(exit.code).not.toBe(0);
    const said = [...reorderer.stdout, ...reorderer.stderr].join('\n');
    expect(said).toContain('PARTITIONS: this lamport-reorderer (lamport-reorderer.all) has 8, dedup-gate (dedup-gate.all) has 4');

    // The gate, stopped cleanly, deletes its view: the reorderer with 8 partitions now starts.
    await gate.stop();
    const again = spawnApp('apps/lamport-reorderer/src/main.ts', { name: 'lamport-reorderer', env: { PIPELINE_FILE: file, HEALTH_PORT: '0' } });
    ctx.defer('stop reorderer again', () => again.stop());
    await again.waitForLine(/health server listening/, 30_000);
  });
});
