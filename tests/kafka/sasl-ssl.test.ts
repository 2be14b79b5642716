/**
 * The Kafka committer against a broker that requires SASL_SSL (SCRAM-SHA-512 over TLS,
 * a CA and broker certificate made here with openssl): with the pipeline's credentials
 * and CA every change arrives exactly once, read back over the same listener; with a
 * wrong password the committer stops with one line naming the broker and the mechanism,
 * without a retry storm; no password reaches any output line.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runWorkload, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test } from '../harness/index.ts';
import { ScratchKafka, scratchKafkaAvailable } from '../harness/scratch-kafka.ts';
import { historyCount } from '../e2e/convergence.ts';
import { createSourceAndSink } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';
import { readTopics } from './support.ts';
import { compareHistories, kafkaHistory, sourceHistory } from './verify.ts';

const CHANGES = 3_000;

/** A CA and a broker certificate for 127.0.0.1 / localhost signed by it (PEM files in `dir`). */
function makeCertificates(dir: string): { caFile: string; brokerPem: string } {
  const run = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  };
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=cdc-test-ca');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'broker.key', '-out', 'broker.csr', '-subj', '/CN=localhost');
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run('x509', '-req', '-in', 'broker.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'broker.crt', '-days', '2', '-extfile', 'san.ext');
  run('pkcs8', '-topk8', '-nocrypt', '-in', 'broker.key', '-out', 'broker.p8');
  return { caFile: join(dir, 'ca.pem'), brokerPem: readFileSync(join(dir, 'broker.p8'), 'utf8') + readFileSync(join(dir, 'broker.crt'), 'utf8') };
}

describe('Kafka sink over SASL_SSL', () => {
  test.skipIf(!scratchKafkaAvailable())(
    'SCRAM-SHA-512 with the pipeline CA: exactly once; a wrong password is one clear error, not a retry storm; no secret in any output',
    { timeout: 600_000 },
    async ({ ctx }) => {
      const dir = mkdtempSync(join(tmpdir(), 'cdc-kafka-tls-'));
      ctx.defer('certificates', () => rmSync(dir, { recursive: true, force: true }));
      const { caFile, brokerPem } = makeCertificates(dir);
      const password = `pw-${ctx.uniqueName('scram')}`;
      const broker = await ScratchKafka.start(ctx, { saslSsl: { keyAndCertificatePem: brokerPem, users: [{ name: 'cdc-committer', password }] } });
      const security = { tls: { caFile }, sasl: { mechanism: 'SCRAM-SHA-512' as const, username: 'cdc-committer', password } };

      const dbs = await createSourceAndSink(ctx, 'ksasl');
      const pipelineName = ctx.uniqueName('ksasl').toLowerCase();
      const topicPrefix = ctx.uniqueName('ksasl');
      const pipeline = await PipelineProcesses.start({
        pipeline: pipelineName,
        partitions: 2,
        sources: [{ id: 'src1', databaseUrl: dbs.sourceUrl, tables: WATCHED_TABLES }],
        sinks: ['kafka'],
        kafka: {
          topicPrefix,
          checkpointTopic: ctx.uniqueName('ckpt'),
          env: {
            KAFKA_BROKERS: broker.secureBrokers.join(','),
            KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512',
            KAFKA_SASL_USERNAME: 'cdc-committer',
            KAFKA_SASL_PASSWORD: password,
            KAFKA_TLS_CA_FILE: caFile,
            KAFKA_COMPRESSION: 'lz4',
            LOG_LEVEL: 'debug',
          },
        },
        servers: { ...ctx.servers, kafkaBrokers: broker.brokers },
        reorderers: 1,
      });
      ctx.defer('stop pipeline', () => pipeline.stop());

      await runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: CHANGES, clients: 2, seed: 41 });
      const committedChanges = await historyCount(dbs.sourceUrl);
      const reader = await readTopics(ctx, WATCHED_TABLES.map((table) => `${topicPrefix}.${table}`), { brokers: broker.secureBrokers, security });
      await reader.until((records) => records.filter((record) => record.value !== null).length >= committedChanges, 240_000, `${committedChanges} change records`);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const verification = compareHistories(await sourceHistory(dbs.sourceUrl), kafkaHistory(reader.records), { tombstones: true });
      console.log(`[kafka sasl_ssl] ${verification.kafkaChanges} change records for ${verification.sourceChanges} source changes; missing ${verification.missing}, duplicates ${verification.duplicates}`);
      expect(verification.mismatches).toEqual([]);
      expect(verification.ok).toBe(true);
      const good = pipeline.process('committer-kafka');
      expect(good.stdout.some((line) => line.includes('"protocol":"SASL_SSL"') && line.includes('kafka sink connected'))).toBe(true);
      const goodOutput = [...good.stdout, ...good.stderr];

      // The same committer with a wrong password: it stops, saying why, once.
      const wrong = `wrong-${password}`;
      const started = await pipeline.restart('committer-kafka', { KAFKA_SASL_PASSWORD: wrong }).then(
        () => 'ready',
        (error: unknown) => String(error),
      );
      expect(started).toMatch(/exited \(code 1\) before printing/);
      const failed = pipeline.process('committer-kafka');
      const exit = await failed.waitForExit(60_000);
      const output = [...failed.stdout, ...failed.stderr];
      const refusals = failed.stderr.filter((line) => /refused authentication/.test(line));
      const retries = output.filter((line) => line.includes('not reachable yet; retrying')).length;
      console.log(`[kafka sasl_ssl] wrong password: exit ${JSON.stringify(exit)}; stderr: ${failed.stderr.join(' | ')}`);
      expect(exit.code).not.toBe(0);
      expect(refusals).toHaveLength(1);
      expect(refusals[0]).toContain(broker.secureBrokers[0]);
      expect(refusals[0]).toContain('SCRAM-SHA-512');
      expect(retries).toBe(0);
      for (const line of [...goodOutput, ...output]) {
        expect(line).not.toContain(password);
      }
    },
  );
});
