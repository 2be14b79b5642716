import { afterEach, describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  CdcError,
  UnreachableError,
  clearRegisteredSecrets,
  errorMessage,
  redactError,
  redactText,
  redactUrl,
  redactValue,
  registerSecret,
  registerUrlSecrets,
} from '../src/index.ts';

const SECRET = 'Hunter2-zq9';

afterEach(() => clearRegisteredSecrets());

describe('redactUrl', () => {
  it.each([
    [`nats://app:${SECRET}@nats:4222`, 'nats://app:***@nats:4222'],
    [`tls://app:${SECRET}@nats:4222`, 'tls://app:***@nats:4222'],
    [`nats://${SECRET}@nats:4222`, 'nats://***@nats:4222'],
    [`http://root:${SECRET}@127.0.0.1:2379`, 'http://root:***@127.0.0.1:2379'],
    [`https://root:${SECRET}@etcd:2379`, 'https://root:***@etcd:2379'],
    [`postgres://cdc:${SECRET}@db:5432/app?sslmode=verify-full`, 'postgres://cdc:***@db:5432/app?sslmode=verify-full'],
    [`redis://:${SECRET}@redis:6379/0`, 'redis://:***@redis:6379/0'],
    [`rediss://gate:${SECRET}@redis:6380`, 'rediss://gate:***@redis:6380'],
    [`postgres://db/app?user=cdc&password=${SECRET}&sslpassword=${SECRET}`, 'postgres://db/app?user=cdc&password=***&sslpassword=***'],
  ])('masks the secret of %s', (url, expected) => {
    expect(redactUrl(url)).toBe(expected);
  });

  it('masks a password with an unencoded @ whole (URL parsers split at the last @)', () => {
    expect(redactUrl('postgres://u:p@ss@w0rd@db:5432/x')).toBe('postgres://u:***@db:5432/x');
    expect(redactText('a nats://u:p@q@h:1 and redis://:x@y@h:2 b')).toBe('a nats://u:***@h:1 and redis://:***@h:2 b');
  });

  it('keeps a URL without a secret as it is, and masks every URL of a comma list', () => {
    expect(redactUrl('postgres://cdc@db:5432/app')).toBe('postgres://cdc@db:5432/app');
    expect(redactUrl(`http://a:${SECRET}@e1:2379,http://a:${SECRET}@e2:2379`)).toBe('http://a:***@e1:2379,http://a:***@e2:2379');
  });
});

describe('redactText', () => {
  it('masks userinfo passwords in URLs anywhere in a text', () => {
    const text = `connect ECONNREFUSED: nats://u:${SECRET}@127.0.0.1:1 then redis://:${SECRET}@h:1 and http://root:${SECRET}@h:2`;
    const out = redactText(text);
    expect(out).not.toContain(SECRET);
    expect(out).toContain('nats://u:***@127.0.0.1:1');
    expect(out).toContain('redis://:***@h:1');
    expect(out).toContain('http://root:***@h:2');
  });

  it('masks key=value secrets of query strings, conninfo strings and JSON', () => {
    expect(redactText(`host=db password=${SECRET} user=x`)).toBe('host=db password=*** user=x');
    expect(redactText(`host=db password='${SECRET} x' user=x`)).toBe('host=db password=*** user=x');
    expect(redactText(`?sslpassword=${SECRET}&token=${SECRET}&a=1`)).toBe('?sslpassword=***&token=***&a=1');
    expect(redactText(`{"password":"${SECRET}","user":"u"}`)).toBe('{"password":"***","user":"u"}');
  });

  it('masks a registered secret wherever it appears, also URL-encoded', () => {
    const odd = 'p@ss/w:rd!';
    registerSecret(odd);
    expect(redactText(`auth failed for ${odd} and ${encodeURIComponent(odd)}`)).toBe('auth failed for *** and ***');
  });

  it('registers the password a URL carries', () => {
    registerUrlSecrets(`nats://u:${SECRET}@h:1`);
    expect(redactText(`Authorization Violation (pass ${SECRET})`)).toBe('Authorization Violation (pass ***)');
  });

  it('leaves ordinary text alone', () => {
    expect(redactText('committed 10 events at 0/16B3748 (lamport=42)')).toBe('committed 10 events at 0/16B3748 (lamport=42)');
  });
});

describe('redactValue', () => {
  it('replaces credential-named fields at any depth and scrubs every string', () => {
    const out = redactValue({
      NATS_PASSWORD: SECRET,
      nested: { password: SECRET, authToken: SECRET, url: `nats://u:${SECRET}@h:1`, list: [`http://r:${SECRET}@e:1`] },
      NATS_CREDS_FILE: '/etc/cdc/reader.creds',
      count: 3,
    });
    expect(JSON.stringify(out)).not.toContain(SECRET);
    expect(out).toMatchObject({ NATS_PASSWORD: '[redacted]', nested: { password: '[redacted]', authToken: '[redacted]', url: 'nats://u:***@h:1' }, NATS_CREDS_FILE: '/etc/cdc/reader.creds', count: 3 });
  });
});

describe('errors carry no secret', () => {
  it('an UnreachableError has a clean message, context, target and stack', () => {
    const cause = new Error(`connect ECONNREFUSED nats://u:${SECRET}@127.0.0.1:1`);
    const error = new UnreachableError('NATS', `nats://u:${SECRET}@127.0.0.1:1`, 'fix NATS_URL', cause);
    const all = [error.message, error.stack, JSON.stringify(error.context), error.target, cause.message, cause.stack].join('\n');
    expect(all).not.toContain(SECRET);
    expect(error.message).toContain('nats://u:***@127.0.0.1:1');
  });

  it('an AuthenticationError names the server and the problem, not the secret', () => {
    const error = new AuthenticationError('etcd', `http://root:${SECRET}@h:2379`, 'authentication failed', 'check ETCD_USER/ETCD_PASSWORD');
    expect(error.message).toBe('etcd at http://root:***@h:2379 refused the connection: authentication failed; check ETCD_USER/ETCD_PASSWORD');
    expect(error.retriable).toBe(false);
    expect(error.code).toBe('AUTHENTICATION_FAILED');
  });

  it('CdcError.from a foreign error scrubs it and its cause chain in place', () => {
    const root = Object.assign(new Error(`password=${SECRET}`), { connectionString: `postgres://u:${SECRET}@h/db`, detail: `at redis://:${SECRET}@h` });
    const mid = new Error(`wrapped http://root:${SECRET}@h:1`, { cause: root });
    const error = CdcError.from(mid, { code: 'X', retriable: false, context: { url: `nats://u:${SECRET}@h` } });
    const seen = [error.message, error.stack, JSON.stringify(error.context), mid.stack, root.message, root.stack, (root as unknown as { connectionString: string }).connectionString, (root as unknown as { detail: string }).detail];
    expect(seen.join('\n')).not.toContain(SECRET);
  });

  it('errorMessage and redactError mask a registered secret in any error', () => {
    registerSecret(SECRET);
    const error = new Error(`WRONGPASS ${SECRET}`);
    expect(errorMessage(error)).toBe('WRONGPASS ***');
    redactError(error);
    expect(error.stack).not.toContain(SECRET);
  });
});
