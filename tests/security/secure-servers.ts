/**
 * Servers of a test's own with authentication and TLS on: a CA and certificates made with
 * openssl, nats-server (JetStream, user/password, TLS), redis-server (TLS only, an ACL
 * user and requirepass), etcd (TLS with client certificates, auth enabled). Loopback
 * only, data under a mktemp dir, ports in this suite's ranges (NATS 14222-14229, Redis
 * 16390-16399, etcd 12390-12399), stopped by the test context's teardown.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Etcd3, Range } from 'etcd3';
import { ManagedProcess, type TestContext } from '../harness/index.ts';

export function secureServersAvailable(): boolean {
  return ['nats-server', 'redis-server', 'etcd', 'openssl'].every((bin) => spawnSync(bin, ['--version'], { stdio: 'ignore' }).status === 0 || spawnSync(bin, ['version'], { stdio: 'ignore' }).status === 0);
}

export interface Certificates {
  readonly dir: string;
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A CA that signed nothing here: a client trusting only it must refuse the servers. */
  readonly otherCa: string;
}

/** A temporary directory removed at teardown. */
export function tempDir(ctx: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `cdc-${prefix}-`));
  ctx.defer(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe', timeout: 30_000 });
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate (CN=cdc-client), all PEM. */
export function makeCertificates(dir: string): Certificates {
  const sub = (cn: string) => ['-subj', `/CN=${cn}`];
  openssl(dir, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-keyout', 'ca.key', '-out', 'ca.pem', ...sub('cdc-test-ca')]);
  openssl(dir, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-keyout', 'other-ca.key', '-out', 'other-ca.pem', ...sub('cdc-other-ca')]);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, cn] of [['server', 'localhost'], ['client', 'cdc-client']] as const) {
    openssl(dir, ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, ...sub(cn)]);
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`]);
  }
  return {
    dir,
    ca: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
    otherCa: join(dir, 'other-ca.pem'),
  };
}

/** The first port of [from, to] nobody listens on now. */
export async function portIn(from: number, to: number): Promise<number> {
  for (let port = from; port <= to; port += 1) {
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port in ${from}-${to}`);
}

function started(ctx: TestContext, process: ManagedProcess): ManagedProcess {
  ctx.defer(`stop ${process.name}`, () => process.stop(5_000));
  return process;
}

export interface SecureNats {
  readonly port: number;
  /** tls://127.0.0.1:<port> without credentials. */
  readonly url: string;
  readonly process: ManagedProcess;
}

/**
 * nats-server 2.9 with JetStream, TLS (server certificate from `certs`; client certificates
 * verified when `verifyClients`) and the given users. `conf` is appended (permissions...).
 */
export async function startSecureNats(
  ctx: TestContext,
  options: {
    certs: Certificates;
    users: readonly { user: string; password: string; permissions?: string }[];
    /** Public nkeys (U…) allowed besides the users. */
    nkeys?: readonly string[];
    verifyClients?: boolean;
    extra?: string;
    /** A configuration file copied beside the server's and included before `authorization` (permission variables). */
    include?: string;
  },
): Promise<SecureNats> {
  const port = await portIn(14222, 14229);
  const dir = tempDir(ctx, 'nats');
  if (options.include) copyFileSync(options.include, join(dir, basename(options.include)));
  const users = options.users
    .map((u) => `    { user: ${JSON.stringify(u.user)}, password: ${JSON.stringify(u.password)}${u.permissions ? `, permissions: ${u.permissions}` : ''} }`)
    .concat((options.nkeys ?? []).map((nkey) => `    { nkey: ${JSON.stringify(nkey)} }`))
    .join('\n');
  const conf = `
listen: "127.0.0.1:${port}"
server_name: "cdc-secure-${port}"
jetstream { store_dir: ${JSON.stringify(dir)} }
tls {
  cert_file: ${JSON.stringify(options.certs.serverCert)}
  key_file: ${JSON.stringify(options.certs.serverKey)}
  ca_file: ${JSON.stringify(options.certs.ca)}
  verify: ${options.verifyClients ? 'true' : 'false'}
  timeout: 5
}
${options.include ? `include "${basename(options.include)}"` : ''}
authorization {
  users: [
${users}
  ]
}
${options.extra ?? ''}
`;
  writeFileSync(join(dir, 'nats.conf'), conf);
  const process = started(ctx, ManagedProcess.spawn({ name: `secure-nats-${port}`, command: 'nats-server', args: ['-c', join(dir, 'nats.conf')] }));
  await process.waitForLine(/Server is ready/, 20_000, { stream: 'stderr' });
  return { port, url: `tls://127.0.0.1:${port}`, process };
}

export interface SecureRedis {
  readonly port: number;
  readonly process: ManagedProcess;
}

/** redis-server with TLS only (`--port 0`), `requirepass` for the default user and an ACL user. */
export async function startSecureRedis(
  ctx: TestContext,
  options: { certs: Certificates; requirepass: string; aclUser: { user: string; password: string }; verifyClients?: boolean },
): Promise<SecureRedis> {
  const port = await portIn(16390, 16399);
  const dir = tempDir(ctx, 'redis');
  const { certs } = options;
  const conf = [
    'bind 127.0.0.1',
    'port 0',
    `tls-port ${port}`,
    `tls-cert-file ${certs.serverCert}`,
    `tls-key-file ${certs.serverKey}`,
    `tls-ca-cert-file ${certs.ca}`,
    `tls-auth-clients ${options.verifyClients ? 'yes' : 'no'}`,
    `dir ${dir}`,
    'save ""',
    'appendonly no',
    `requirepass ${options.requirepass}`,
    // The gate's user: its keys, the claim script, CONFIG GET for its listpack check only.
    `user ${options.aclUser.user} on >${options.aclUser.password} ~cdc:dedup:* -@all +@read +@write +@scripting +ping +info +hello +client|setname +config|get`,
  ].join('\n');
  writeFileSync(join(dir, 'redis.conf'), `${conf}\n`);
  const process = started(ctx, ManagedProcess.spawn({ name: `secure-redis-${port}`, command: 'redis-server', args: [join(dir, 'redis.conf')] }));
  await process.waitForLine(/Ready to accept connections/, 20_000);
  return { port, process };
}

export interface SecureEtcd {
  readonly port: number;
  /** https://127.0.0.1:<port> */
  readonly url: string;
  readonly process: ManagedProcess;
}

/**
 * etcd 3.4 serving clients on https only, requiring a client certificate signed by the
 * CA, with auth enabled: a root user (root role) and a `cdc` user whose role may read
 * and write /checkpoints/ and /cdc/ only.
 */
export async function startSecureEtcd(
  ctx: TestContext,
  options: { certs: Certificates; rootPassword: string; cdcUser: { user: string; password: string } },
): Promise<SecureEtcd> {
  const port = await portIn(12390, 12399);
  const peerPort = await portIn(port + 1, 12399);
  const dir = tempDir(ctx, 'etcd');
  const { certs } = options;
  const name = `cdc-secure-${port}`;
  const process = started(
    ctx,
    ManagedProcess.spawn({
      name,
      command: 'etcd',
      env: { ETCD_UNSUPPORTED_ARCH: undefined },
      args: [
        '--name', name,
        '--data-dir', join(dir, 'data'),
        '--listen-client-urls', `https://127.0.0.1:${port}`,
        '--advertise-client-urls', `https://127.0.0.1:${port}`,
        '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-cluster', `${name}=http://127.0.0.1:${peerPort}`,
        '--initial-cluster-state', 'new',
        '--cert-file', certs.serverCert,
        '--key-file', certs.serverKey,
        '--trusted-ca-file', certs.ca,
        '--client-cert-auth',
      ],
    }),
  );
  await process.waitForLine(/ready to serve client requests|serving client traffic securely/, 30_000, { stream: 'stderr' });
  const url = `https://127.0.0.1:${port}`;
  const tls = { rootCertificate: readPem(certs.ca), privateKey: readPem(certs.clientKey), certChain: readPem(certs.clientCert) };
  const admin = new Etcd3({ hosts: [url], credentials: tls, dialTimeout: 10_000 });
  try {
    await admin.user('root').create(options.rootPassword);
    await admin.role('root').create().catch(() => undefined);
    await admin.user('root').addRole('root');
    const role = await admin.role('cdc').create();
    await role.grant({ permission: 'Readwrite', range: Range.prefix('/checkpoints/') });
    await role.grant({ permission: 'Readwrite', range: Range.prefix('/cdc/') });
    await admin.user(options.cdcUser.user).create(options.cdcUser.password);
    await admin.user(options.cdcUser.user).addRole('cdc');
    await admin.auth.authEnable();
  } finally {
    admin.close();
  }
  return { port, url, process };
}

function readPem(path: string): Buffer {
  return readFileSync(path);
}
