/**
 * Kafka connection security as pipeline settings: TLS with the user's CA (and a client
 * certificate for mutual TLS), SASL PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER. Files are
 * read once at start; a missing or unreadable file is a startup error naming the setting.
 * `describeSecurity` is what logs and errors may show: mechanism, user and file paths,
 * never a password, token or key.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from '@platformatic/kafka';
import { ConfigError } from '@cdc/core';

export type SaslMechanism = 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512' | 'OAUTHBEARER';
export const SASL_MECHANISMS: readonly SaslMechanism[] = ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512', 'OAUTHBEARER'];

export interface KafkaSecurity {
  /** TLS to the brokers (SSL / SASL_SSL listeners). */
  readonly tls?: {
    /** PEM file of the CA that signed the brokers' certificates; default: the system's CAs. */
    readonly caFile?: string | undefined;
    /** PEM client certificate and key, for brokers that require mutual TLS. */
    readonly certFile?: string | undefined;
    readonly keyFile?: string | undefined;
    /** Name checked against the broker certificate when it differs from the address. */
    readonly serverName?: string | undefined;
  } | undefined;
  readonly sasl?: {
    readonly mechanism: SaslMechanism;
    readonly username?: string | undefined;
    readonly password?: string | undefined;
    /** OAUTHBEARER: the bearer token. */
    readonly token?: string | undefined;
  } | undefined;
}

function readPem(file: string, setting: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([{ variable: setting, problem: `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}` }]);
  }
}

/**
 * What is missing or contradictory in `security`, by the variable to fix (no file is read):
 * the committer's configuration reports these with every other bad variable at start, and
 * connectionOptions refuses them.
 */
export function securityProblems(security: KafkaSecurity | undefined): { variable: string; problem: string }[] {
  const problems: { variable: string; problem: string }[] = [];
  const tls = security?.tls;
  if (tls !== undefined && (tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    problems.push({ variable: 'KAFKA_TLS_CERT_FILE', problem: 'goes with KAFKA_TLS_KEY_FILE: set both for mutual TLS, or neither' });
  }
  const sasl = security?.sasl;
  if (sasl?.mechanism === 'OAUTHBEARER' && !sasl.token) {
    problems.push({ variable: 'KAFKA_SASL_TOKEN', problem: 'required with KAFKA_SASL_MECHANISM=OAUTHBEARER' });
  }
  if (sasl !== undefined && sasl.mechanism !== 'OAUTHBEARER' && (!sasl.username || sasl.password === undefined)) {
    problems.push({ variable: 'KAFKA_SASL_USERNAME', problem: `KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with KAFKA_SASL_MECHANISM=${sasl.mechanism}` });
  }
  return problems;
}

/** The client's connection options for `security` (TLS material read from its files). */
export function connectionOptions(security: KafkaSecurity | undefined): Pick<ConnectionOptions, 'tls' | 'sasl' | 'tlsServerName'> {
  const problems = securityProblems(security);
  if (problems.length > 0) throw new ConfigError(problems);
  const out: { tls?: ConnectionOptions['tls']; sasl?: ConnectionOptions['sasl']; tlsServerName?: string } = {};
  const tls = security?.tls;
  if (tls !== undefined) {
    out.tls = {
      ...(tls.caFile ? { ca: readPem(tls.caFile, 'KAFKA_TLS_CA_FILE') } : {}),
      ...(tls.certFile ? { cert: readPem(tls.certFile, 'KAFKA_TLS_CERT_FILE') } : {}),
      ...(tls.keyFile ? { key: readPem(tls.keyFile, 'KAFKA_TLS_KEY_FILE') } : {}),
      rejectUnauthorized: true,
    };
    if (tls.serverName) out.tlsServerName = tls.serverName;
  }
  const sasl = security?.sasl;
  if (sasl?.mechanism === 'OAUTHBEARER') out.sasl = { mechanism: sasl.mechanism, token: sasl.token as string };
  else if (sasl !== undefined) out.sasl = { mechanism: sasl.mechanism, username: sasl.username as string, password: sasl.password as string };
  return out;
}

/** What may be logged about the security settings: no password, token or key material. */
export function describeSecurity(security: KafkaSecurity | undefined): { protocol: string; mechanism?: string; user?: string; ca_file?: string } {
  const tls = security?.tls !== undefined;
  const sasl = security?.sasl;
  return {
    protocol: sasl ? (tls ? 'SASL_SSL' : 'SASL_PLAINTEXT') : tls ? 'SSL' : 'PLAINTEXT',
    ...(sasl ? { mechanism: sasl.mechanism } : {}),
    ...(sasl?.username ? { user: sasl.username } : {}),
    ...(security?.tls?.caFile ? { ca_file: security.tls.caFile } : {}),
  };
}
