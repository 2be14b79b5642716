/**
 * NATS connection options from a URL and the shared security settings (@cdc/runtime
 * NatsSecurity: NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED_FILE, NATS_CREDS_FILE,
 * NATS_TLS_*), and the classification of a failed connect.
 *
 * nats.js does not read userinfo from `servers`: `nats://user:pass@host` would CONNECT
 * without credentials and get "Authorization Violation". So the userinfo is taken out of
 * the URL here and passed as user/pass (a lone `nats://token@host` is a token, as in the
 * other NATS clients); a setting wins over the URL. `tls://` or any NATS_TLS_* file makes
 * the client require TLS.
 */
import { readFileSync } from 'node:fs';
import { AuthenticationError, ConfigError, UnreachableError, redactUrl, registerSecret } from '@cdc/core';
import { securityProblems, type NatsSecurity } from '@cdc/runtime';
import { credsAuthenticator, nkeyAuthenticator, type ConnectionOptions } from '@nats-io/nats-core';

export interface NatsTarget {
  /** What nats.js dials: host:port, without userinfo. */
  readonly servers: string[];
  /** The URL as it may be shown (password masked). */
  readonly shown: string;
  readonly options: Pick<ConnectionOptions, 'user' | 'pass' | 'token' | 'authenticator' | 'tls'>;
}

export function natsTarget(url: string, security: NatsSecurity = {}): NatsTarget {
  const problems = securityProblems('NATS', security);
  if (problems.length > 0) throw new ConfigError(problems);
  let user: string | undefined;
  let pass: string | undefined;
  let token: string | undefined;
  let wantsTls = false;
  const servers = url.split(',').map((one) => {
    const parsed = new URL(one.trim());
    if (parsed.protocol === 'tls:') wantsTls = true;
    if (parsed.username && parsed.password) {
      user ??= decodeURIComponent(parsed.username);
      pass ??= decodeURIComponent(parsed.password);
    } else if (parsed.username) {
      token ??= decodeURIComponent(parsed.username);
    }
    return `${parsed.hostname.includes(':') ? `[${parsed.hostname}]` : parsed.hostname}:${parsed.port || '4222'}`;
  });
  const options: NatsTarget['options'] & Record<string, unknown> = {};
  const settingAuth = security.user !== undefined || security.token !== undefined || security.nkeySeedFile !== undefined || security.credsFile !== undefined;
  if (security.credsFile !== undefined) {
    const creds = readFileSync(security.credsFile);
    options.authenticator = credsAuthenticator(new Uint8Array(creds));
  } else if (security.nkeySeedFile !== undefined) {
    const seed = readFileSync(security.nkeySeedFile, 'utf8').trim();
    registerSecret(seed);
    options.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  } else if (security.token !== undefined) {
    options.token = security.token;
  } else if (security.user !== undefined) {
    options.user = security.user;
    if (security.password !== undefined) options.pass = security.password;
  }
  if (!settingAuth) {
    if (user !== undefined) {
      options.user = user;
      options.pass = pass ?? '';
    } else if (token !== undefined) {
      options.token = token;
    }
  }
  for (const secret of [options.pass, options.token]) registerSecret(secret);
  if (wantsTls || security.tls !== undefined) {
    options.tls = {
      ...(security.tls?.caFile ? { caFile: security.tls.caFile } : {}),
      ...(security.tls?.certFile ? { certFile: security.tls.certFile } : {}),
      ...(security.tls?.keyFile ? { keyFile: security.tls.keyFile } : {}),
    };
  }
  return { servers, shown: redactUrl(url), options };
}

/**
 * A failed connect as one of ours: refused credentials and failed TLS checks are
 * AuthenticationError (not retriable, one line naming what failed), anything else is
 * UnreachableError. Neither carries the secret (core redact.ts).
 */
export function natsConnectError(target: NatsTarget, error: unknown): AuthenticationError | UnreachableError {
  const text = error instanceof Error ? `${error.name} ${error.message} ${String((error as { cause?: unknown }).cause ?? '')}` : String(error);
  if (/authorization violation|authentication|user authentication expired|AuthorizationError/i.test(text)) {
    return new AuthenticationError(
      'NATS',
      target.shown,
      'authorization violation (the server refused the credentials)',
      'check NATS_USER/NATS_PASSWORD (or the URL\'s user and password), NATS_TOKEN, NATS_NKEY_SEED_FILE or NATS_CREDS_FILE',
      error,
    );
  }
  if (/certificate|self[- ]signed|unable to verify|tls|ssl|handshake|ERR_TLS|UNABLE_TO_GET_ISSUER/i.test(text)) {
    const detail = error instanceof Error ? error.message : String(error);
    return new AuthenticationError('NATS', target.shown, `TLS failed (${detail})`, 'check NATS_TLS_CA_FILE (the CA that signed the server), NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE, and that the server has TLS', error);
  }
  return new UnreachableError('NATS', target.shown, 'start nats-server with JetStream (bash infra/local/servers.sh up) or fix NATS_URL', error);
}
