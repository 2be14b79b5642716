/**
 * PostgreSQL with scram-sha-256 over TLS only (a server of this file's own: initdb in a
 * temp dir, `hostssl … scram-sha-256`, plain TCP rejected, certificates made by the test):
 * the reader's setup connects with `sslmode=verify-full&sslrootcert=<CA>` in the URL and
 * its session is encrypted; a wrong password and a server from another CA are each one
 * AuthenticationError naming the server, without the password; the sink's connect does
 * not retry a refused password.
 */
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { AuthenticationError } from '@cdc/core';
import { connectSource, setupSource } from '@cdc/pg-source';
import { createLogger } from '@cdc/runtime';
import { PgSink } from '@cdc/sink-pg';
import { afterAll, beforeAll } from 'vitest';
import { ManagedProcess, createTestContext, describe, expect, test, type TestContext } from '../harness/index.ts';
import { freePort } from '../harness/ports.ts';
import { makeCertificates, tempDir, type Certificates } from './secure-servers.ts';

const PG_BIN = '/usr/lib/postgresql/15/bin';
const PASSWORD = 'Pg-Scram-Pw-6620';
const WRONG = 'Pg-Wrong-Pw-0007';

function available(): boolean {
  try {
    return existsSync(join(PG_BIN, 'initdb')) && process.getuid?.() === 0 && execFileSync('id', ['-u', 'postgres']).length > 0;
  } catch {
    return false;
  }
}

describe.skipIf(!available())('PostgreSQL: scram-sha-256 over TLS', () => {
  let suite: TestContext;
  let certs: Certificates;
  let port: number;

  beforeAll(async () => {
    suite = createTestContext();
    const dir = tempDir(suite, 'pg');
    mkdirSync(join(dir, 'certs'));
    certs = makeCertificates(join(dir, 'certs'));
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    const data = join(dir, 'data');
    // The server's own copies: owned by postgres, the key private (PostgreSQL refuses it otherwise).
    for (const [from, to] of [[certs.serverCert, 'server.crt'], [certs.serverKey, 'server.key']] as const) copyFileSync(from, join(dir, to));
    writeFileSync(join(dir, 'pwfile'), `${PASSWORD}\n`);
    chownSync(dir, uid, gid);
    for (const file of ['server.crt', 'server.key', 'pwfile']) chownSync(join(dir, file), uid, gid);
    chmodSync(join(dir, 'server.key'), 0o600);
    execFileSync('runuser', ['-u', 'postgres', '--', join(PG_BIN, 'initdb'), '-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${join(dir, 'pwfile')}`, '-E', 'UTF8', '--locale=C.UTF-8'], { cwd: '/', stdio: 'pipe', timeout: 60_000 });
    port = await freePort();
    writeFileSync(
      join(data, 'postgresql.auto.conf'),
      [`port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`, 'ssl = on', `ssl_cert_file = '${join(dir, 'server.crt')}'`, `ssl_key_file = '${join(dir, 'server.key')}'`, 'wal_level = logical', "password_encryption = 'scram-sha-256'"].join('\n') + '\n',
    );
    writeFileSync(join(data, 'pg_hba.conf'), ['hostssl all all 127.0.0.1/32 scram-sha-256', 'hostssl replication all 127.0.0.1/32 scram-sha-256', 'host all all 127.0.0.1/32 reject'].join('\n') + '\n');
    chownSync(join(data, 'postgresql.auto.conf'), uid, gid);
    chownSync(join(data, 'pg_hba.conf'), uid, gid);
    const server = ManagedProcess.spawn({ name: `scram-pg-${port}`, command: 'runuser', args: ['-u', 'postgres', '--', join(PG_BIN, 'postgres'), '-D', data], cwd: '/' });
    suite.defer('stop postgres', () => server.stop(15_000));
    await server.waitForLine(/database system is ready to accept connections/, 30_000, { stream: 'stderr' });
  }, 120_000);

  afterAll(async () => {
    await suite?.[Symbol.asyncDispose]();
  }, 60_000);

  const url = (password: string, ca: string, mode = 'verify-full') => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres?sslmode=${mode}&sslrootcert=${ca}`;
  const logger = () => createLogger({ app: 'test', level: 'silent' });

  test('sslmode=verify-full with the CA: the session is encrypted and the reader sets up its slot', async ({ ctx }) => {
    const client = await connectSource(url(PASSWORD, certs.ca), 'scram-test');
    try {
      const ssl = await client.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      expect(ssl.rows[0]?.ssl).toBe(true);
      await client.query('CREATE TABLE IF NOT EXISTS scram_orders (id int PRIMARY KEY, note text)');
    } finally {
      await client.end();
    }
    const slot = ctx.uniqueName('scram').toLowerCase();
    const prepared = await setupSource({ connectionString: url(PASSWORD, certs.ca), tables: ['public.scram_orders'], publicationName: slot, slotName: slot, logger: logger() });
    expect(prepared.slot.created).toBe(true);
    ctx.defer('drop slot', async () => {
      const admin = await connectSource(url(PASSWORD, certs.ca), 'scram-test');
      await admin.query('SELECT pg_drop_replication_slot($1)', [slot]).catch(() => undefined);
      await admin.end();
    });
  });

  test('a wrong password is one AuthenticationError (SQLSTATE 28P01) without the password; the sink does not retry it', async () => {
    const error = await connectSource(url(WRONG, certs.ca), 'scram-test').then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toMatch(new RegExp(`^PostgreSQL at postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${port}/postgres\\?sslmode=verify-full.* refused the connection: .*28P01`));
    expect([(error as Error).message, (error as Error).stack, JSON.stringify((error as AuthenticationError).context)].join('\n')).not.toContain(WRONG);

    const started = Date.now();
    const sinkError = await PgSink.create({ pipeline: 'scram', partitions: 1, sinkUrl: url(WRONG, certs.ca), logger: logger() } as Parameters<typeof PgSink.create>[0]).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(sinkError).toBeInstanceOf(AuthenticationError);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((sinkError as Error).message).not.toContain(WRONG);
  });

  test('a server certificate from another CA is refused as a TLS failure', async () => {
    const error = await connectSource(url(PASSWORD, certs.otherCa), 'scram-test').then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toMatch(/TLS failed/);
    expect((error as Error).message).not.toContain(PASSWORD);
  });
});
