/**
 * The apps' images, as built by infra/images/build.sh (podman, from each Dockerfile), run
 * here without a container engine: each image is mounted and its entry point started under
 * chroot as the image's user, with the image's working directory, command and environment
 * only (nothing of this machine's environment leaks in). Checks:
 *  - with no configuration, each app exits 1 with one clear stderr line naming the missing
 *    variables, as the non-root user;
 *  - with the demo's configuration and the local servers, every app becomes ready (/readyz
 *    200) and a workload goes through the images' bundles into both sinks exactly once.
 *
 * Runs only when CDC_IMAGES_TAG names built images (infra/images/build.sh sets it).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runWorkload, verifySourceAgainstSink, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { ManagedProcess } from '../harness/process.ts';
import { waitForSinkToCatchUp } from '../e2e/convergence.ts';
import { createSourceAndSink } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';
import { readTopics } from '../kafka/support.ts';
import { compareHistories, kafkaHistory, sourceHistory } from '../kafka/verify.ts';

const TAG = process.env.CDC_IMAGES_TAG;
const APPS = ['reader', 'lamport-reorderer', 'dedup-gate', 'committer'] as const;

interface Image {
  readonly root: string;
  readonly uid: number;
  readonly gid: number;
  readonly workdir: string;
  readonly cmd: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

function podman(...args: string[]): string {
  return execFileSync('podman', args, { encoding: 'utf8' }).trim();
}

function image(app: string): Image {
  const name = `localhost/cdc-${app}:${TAG}`;
  const config = JSON.parse(podman('image', 'inspect', '--format', '{{json .Config}}', name)) as {
    User?: string;
    WorkingDir?: string;
    Cmd?: string[];
    Env?: string[];
  };
  const root = podman('image', 'mount', name);
  const user = config.User ?? 'root';
  const entry = readFileSync(join(root, 'etc/passwd'), 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === user || fields[2] === user);
  if (entry === undefined) throw new Error(`${name}: user ${user} is not in the image's /etc/passwd`);
  return {
    root,
    uid: Number(entry[2]),
    gid: Number(entry[3]),
    workdir: config.WorkingDir || '/',
    cmd: config.Cmd ?? [],
    env: Object.fromEntries((config.Env ?? []).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)])),
  };
}

/** Starts the image's command under chroot with only the image's environment and `env`. */
function runImage(name: string, app: string, env: Readonly<Record<string, string>>): ManagedProcess {
  const img = image(app);
  const cleared = Object.fromEntries(Object.keys(process.env).map((key) => [key, undefined]));
  return ManagedProcess.spawn({
    name,
    command: '/usr/sbin/chroot',
    args: [`--userspec=${img.uid}:${img.gid}`, img.root, '/bin/sh', '-c', `cd '${img.workdir}' && exec "$@"`, 'sh', ...img.cmd],
    env: { ...cleared, ...img.env, ...env },
  });
}

describe.skipIf(TAG === undefined)('the apps\' images', () => {
  test.for(APPS)('%s: without configuration it exits 1 with one line naming what is missing, as its non-root user', async (app) => {
    const img = image(app);
    expect(img.uid).not.toBe(0);
    const child = runImage(`${app}-image`, app, {});
    const status = await child.waitForExit(30_000);
    expect(status.code).toBe(1);
    const lines = child.stderr.filter((line) => line.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^${app === 'lamport-reorderer' ? '(lamport-reorderer|reorderer)' : app}: CONFIG_INVALID: invalid configuration: .*PIPELINE`));
  });

  test('with the demo configuration every app is ready and a workload reaches both sinks exactly once through the images', { timeout: 600_000 }, async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'images');
    const pipelineName = ctx.uniqueName('images').toLowerCase();
    const topicPrefix = ctx.uniqueName('images');
    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 4,
      sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
      sinks: ['postgres', 'kafka'],
      sinkUrl: dbs.sinkUrl,
      kafka: { topicPrefix, checkpointTopic: ctx.uniqueName('ckpt') },
      servers: ctx.servers,
      launch: (name, entry, env) => runImage(name, /^apps\/([^/]+)\//.exec(entry)?.[1] ?? name, env),
    });
    ctx.defer('stop pipeline', () => pipeline.stop());

    // Every app's /readyz, on the port its health line names (HEALTH_PORT=0: any free one).
    for (const name of pipeline.names) {
      const line = pipeline.process(name).stdout.find((l) => l.includes('health server listening')) ?? '';
      const port = Number(/"port":(\d+)/.exec(line)?.[1]);
      expect(port, `${name} health port`).toBeGreaterThan(0);
      const deadline = Date.now() + 60_000;
      let status = 0;
      while (Date.now() < deadline) {
        status = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0);
        if (status === 200) break;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      expect(status, `${name} /readyz`).toBe(200);
    }

    const load = await runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 4_000, clients: 2, seed: 18 });
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 240_000 });
    const report = await verifySourceAgainstSink(dbs.sourceUrl, dbs.sinkUrl);
    const reader = await readTopics(ctx, WATCHED_TABLES.map((table) => `${topicPrefix}.${table}`));
    await reader.until((records) => records.filter((r) => r.value !== null).length >= caughtUp.committed, 120_000, `${caughtUp.committed} change records`);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const kafka = compareHistories(await sourceHistory(dbs.sourceUrl), kafkaHistory(reader.records), { tombstones: true });
    console.log(`[images] ${load.changes} changes; postgres: ${report.summary}; kafka: missing ${kafka.missing}, duplicates ${kafka.duplicates}, order violations ${kafka.orderViolations}`);
    expect(caughtUp.caughtUp).toBe(true);
    expect(report.appliedTwice).toBe(0);
    expect(report.neverApplied).toBe(0);
    expect(report.ok).toBe(true);
    expect(kafka.mismatches).toEqual([]);
    expect(kafka.ok).toBe(true);
  });
});
