/**
 * Credentials and TLS for every connection, as environment variables every app shares
 * (spread the field shapes into an app's schema, compile with the functions below):
 *
 *   NATS_USER, NATS_PASSWORD | NATS_TOKEN | NATS_NKEY_SEED_FILE | NATS_CREDS_FILE,
 *   NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE
 *   REDIS_USER, REDIS_PASSWORD, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE
 *   ETCD_USER, ETCD_PASSWORD, ETCD_TLS_CA_FILE, ETCD_TLS_CERT_FILE, ETCD_TLS_KEY_FILE
 *
 * A user and password may also come in the URL (`nats://user:pass@host`,
 * `redis://user:pass@host`, `https://user:pass@etcd:2379`); a setting wins over the URL.
 * Files are checked at start-up (readable); their contents are read by the connection code.
 * Every value of a credential variable is registered as a secret by loadConfig (redact.ts).
 */
import { accessSync, constants } from 'node:fs';
import { z } from 'zod';

function readableFile(what: string) {
  return z
    .string()
    .min(1, `a path to the ${what}`)
    .refine((path) => {
      try {
        accessSync(path, constants.R_OK);
        return true;
      } catch {
        return false;
      }
    }, `no readable file at this path (the ${what})`)
    .optional();
}

const secret = () => z.string().min(1, 'empty: leave the variable unset instead').optional();
const user = () => z.string().min(1, 'empty: leave the variable unset instead').optional();

/** TLS files of one connection. A client certificate needs its key and the other way round. */
export interface TlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

export interface NatsSecurity {
  readonly user?: string;
  readonly password?: string;
  readonly token?: string;
  readonly nkeySeedFile?: string;
  readonly credsFile?: string;
  readonly tls?: TlsFiles;
}

export interface BasicSecurity {
  readonly user?: string;
  readonly password?: string;
  readonly tls?: TlsFiles;
}

export const natsSecurityFields = {
  NATS_USER: user(),
  NATS_PASSWORD: secret(),
  NATS_TOKEN: secret(),
  NATS_NKEY_SEED_FILE: readableFile('nkey seed (SU…)'),
  NATS_CREDS_FILE: readableFile('creds file (JWT and nkey seed)'),
  NATS_TLS_CA_FILE: readableFile('CA certificate (PEM) that signed the server'),
  NATS_TLS_CERT_FILE: readableFile('client certificate (PEM)'),
  NATS_TLS_KEY_FILE: readableFile('client key (PEM)'),
};

export const redisSecurityFields = {
  REDIS_USER: user(),
  REDIS_PASSWORD: secret(),
  REDIS_TLS_CA_FILE: readableFile('CA certificate (PEM) that signed the server'),
  REDIS_TLS_CERT_FILE: readableFile('client certificate (PEM)'),
  REDIS_TLS_KEY_FILE: readableFile('client key (PEM)'),
};

export const etcdSecurityFields = {
  ETCD_USER: user(),
  ETCD_PASSWORD: secret(),
  ETCD_TLS_CA_FILE: readableFile('CA certificate (PEM) that signed the server'),
  ETCD_TLS_CERT_FILE: readableFile('client certificate (PEM)'),
  ETCD_TLS_KEY_FILE: readableFile('client key (PEM)'),
};

type Fields<Shape extends z.ZodRawShape> = { readonly [K in keyof Shape]?: z.output<Shape[K]> };

function tlsOf(ca: string | undefined, cert: string | undefined, key: string | undefined): TlsFiles | undefined {
  if (ca === undefined && cert === undefined && key === undefined) return undefined;
  return { ...(ca ? { caFile: ca } : {}), ...(cert ? { certFile: cert } : {}), ...(key ? { keyFile: key } : {}) };
}

function defined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

export function natsSecurity(config: Fields<typeof natsSecurityFields>): NatsSecurity {
  return defined({
    user: config.NATS_USER,
    password: config.NATS_PASSWORD,
    token: config.NATS_TOKEN,
    nkeySeedFile: config.NATS_NKEY_SEED_FILE,
    credsFile: config.NATS_CREDS_FILE,
    tls: tlsOf(config.NATS_TLS_CA_FILE, config.NATS_TLS_CERT_FILE, config.NATS_TLS_KEY_FILE),
  });
}

export function redisSecurity(config: Fields<typeof redisSecurityFields>): BasicSecurity {
  return defined({ user: config.REDIS_USER, password: config.REDIS_PASSWORD, tls: tlsOf(config.REDIS_TLS_CA_FILE, config.REDIS_TLS_CERT_FILE, config.REDIS_TLS_KEY_FILE) });
}

export function etcdSecurity(config: Fields<typeof etcdSecurityFields>): BasicSecurity {
  return defined({ user: config.ETCD_USER, password: config.ETCD_PASSWORD, tls: tlsOf(config.ETCD_TLS_CA_FILE, config.ETCD_TLS_CERT_FILE, config.ETCD_TLS_KEY_FILE) });
}

/**
 * What is wrong with a connection's security settings taken together (empty: nothing),
 * as `variable: problem` pairs for a ConfigError. `prefix` is NATS, REDIS or ETCD.
 */
export function securityProblems(prefix: string, security: NatsSecurity | BasicSecurity): { variable: string; problem: string }[] {
  const problems: { variable: string; problem: string }[] = [];
  const nats = security as NatsSecurity;
  const ways = [security.user !== undefined || security.password !== undefined, nats.token !== undefined, nats.nkeySeedFile !== undefined, nats.credsFile !== undefined].filter(Boolean).length;
  if (ways > 1) problems.push({ variable: `${prefix}_*`, problem: 'set one way to authenticate: user/password, token, nkey seed or creds file' });
  if (security.password !== undefined && security.user === undefined && prefix !== 'REDIS') problems.push({ variable: `${prefix}_USER`, problem: `required with ${prefix}_PASSWORD` });
  if (security.user !== undefined && security.password === undefined) problems.push({ variable: `${prefix}_PASSWORD`, problem: `required with ${prefix}_USER` });
  if (security.tls?.certFile !== undefined && security.tls.keyFile === undefined) problems.push({ variable: `${prefix}_TLS_KEY_FILE`, problem: `required with ${prefix}_TLS_CERT_FILE` });
  if (security.tls?.keyFile !== undefined && security.tls.certFile === undefined) problems.push({ variable: `${prefix}_TLS_CERT_FILE`, problem: `required with ${prefix}_TLS_KEY_FILE` });
  return problems;
}
