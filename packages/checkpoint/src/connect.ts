/**
 * etcd client options from ETCD_URL and the shared security settings (@cdc/runtime
 * BasicSecurity: ETCD_USER/ETCD_PASSWORD, ETCD_TLS_CA_FILE/CERT_FILE/KEY_FILE).
 *
 * `http://root:pw@etcd:2379` is accepted: the userinfo is taken out of the host list
 * (gRPC would not dial it) and becomes the etcd3 `auth` option; a setting wins over the
 * URL. `https://` hosts or a CA file make the client use TLS (etcd3 `credentials`); a
 * client certificate is sent when given (etcd `--client-cert-auth`).
 */
import { readFileSync } from 'node:fs';
import { AuthenticationError, ConfigError, UnreachableError, redactUrl, registerSecret } from '@cdc/core';
import { securityProblems, type BasicSecurity } from '@cdc/runtime';
import type { IOptions } from 'etcd3';

export interface EtcdTarget {
  readonly shown: string;
  readonly options: IOptions;
}

export function etcdTarget(url: string, security: BasicSecurity = {}, dialTimeout = 5_000): EtcdTarget {
  const problems = securityProblems('ETCD', security);
  if (problems.length > 0) throw new ConfigError(problems);
  let user: string | undefined;
  let password: string | undefined;
  let https = false;
  const hosts = url.split(',').map((one) => {
    const parsed = new URL(one.trim());
    if (parsed.protocol === 'https:') https = true;
    if (parsed.username) {
      user ??= decodeURIComponent(parsed.username);
      password ??= decodeURIComponent(parsed.password);
    }
    return `${parsed.protocol}//${parsed.host}`;
  });
  if (security.user !== undefined) {
    user = security.user;
    password = security.password;
  }
  registerSecret(password);
  const options: IOptions & { auth?: { username: string; password: string } } = { hosts, dialTimeout };
  if (user !== undefined) options.auth = { username: user, password: password ?? '' };
  // https:// without TLS files: etcd3 uses TLS with the system's roots by itself.
  const tls = security.tls;
  if (tls !== undefined) {
    if (!https) throw new ConfigError([{ variable: 'ETCD_URL', problem: 'ETCD_TLS_* files are set: use https:// URLs' }]);
    options.credentials = {
      ...(tls.caFile ? { rootCertificate: readFileSync(tls.caFile) } : {}),
      ...(tls.keyFile ? { privateKey: readFileSync(tls.keyFile) } : {}),
      ...(tls.certFile ? { certChain: readFileSync(tls.certFile) } : {}),
    } as NonNullable<IOptions['credentials']>;
  }
  return { shown: redactUrl(url), options };
}

/** A failed first call as one of ours: refused credentials and TLS failures are AuthenticationError. */
export function etcdConnectError(target: EtcdTarget, error: unknown): AuthenticationError | UnreachableError {
  const name = error instanceof Error ? error.name || error.constructor.name : '';
  const text = `${name} ${error instanceof Error ? error.message : String(error)}`;
  if (/EtcdAuthenticationFailedError|authentication failed|invalid auth token|EtcdInvalidAuthTokenError|user name is empty|EtcdUserNotFoundError/i.test(text)) {
    return new AuthenticationError('etcd', target.shown, 'authentication failed (the server refused the user or password)', 'check ETCD_USER/ETCD_PASSWORD or the URL\'s user and password', error);
  }
  if (/EtcdPermissionDeniedError|permission denied/i.test(text)) {
    return new AuthenticationError('etcd', target.shown, 'permission denied', 'grant the user a role with readwrite on /checkpoints/ and /cdc/ (README: Security)', error);
  }
  if (/certificate|SSL|TLS|handshake|self[- ]signed/i.test(text)) {
    return new AuthenticationError('etcd', target.shown, 'TLS failed', 'check ETCD_TLS_CA_FILE (the CA that signed the server), ETCD_TLS_CERT_FILE, ETCD_TLS_KEY_FILE and that the URL is https://', error);
  }
  return new UnreachableError('etcd', target.shown, 'start etcd (bash infra/local/servers.sh up) or fix ETCD_URL', error);
}
