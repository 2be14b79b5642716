import { ConfigError, clearRegisteredSecrets, redactText } from '@cdc/core';
import { afterEach, describe, expect, it } from 'vitest';
import { natsConnectError, natsTarget } from '../src/index.ts';

afterEach(() => clearRegisteredSecrets());

describe('natsTarget', () => {
  it('takes user and password out of the URL (nats.js would dial with them and send none)', () => {
    const target = natsTarget('nats://app:p%40ss-Word1@nats.internal:4333');
    expect(target.servers).toEqual(['nats.internal:4333']);
    expect(target.options).toEqual({ user: 'app', pass: 'p@ss-Word1' });
    expect(target.shown).toBe('nats://app:***@nats.internal:4333');
    // The password is now a registered secret: masked wherever a library prints it.
    expect(redactText('CONNECT {"pass":"p@ss-Word1"}')).not.toContain('p@ss-Word1');
  });

  it('reads a lone user as a token, tls:// as TLS required, and a comma list of servers', () => {
    const target = natsTarget('tls://s3cr3t-token@a:4222,tls://s3cr3t-token@b');
    expect(target.servers).toEqual(['a:4222', 'b:4222']);
    expect(target.options).toEqual({ token: 's3cr3t-token', tls: {} });
    expect(target.shown).toBe('tls://***@a:4222,tls://***@b');
  });

  it('settings win over the URL; TLS files make TLS required', () => {
    const target = natsTarget('nats://old:old-password@h:1', { user: 'app', password: 'new-password', tls: { caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' } });
    expect(target.options).toEqual({ user: 'app', pass: 'new-password', tls: { caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' } });
  });

  it('refuses settings that do not go together, naming the variables', () => {
    expect(() => natsTarget('nats://h:1', { user: 'app', password: 'x', token: 'y' })).toThrow(ConfigError);
    expect(() => natsTarget('nats://h:1', { tls: { certFile: '/c.pem' } })).toThrow(/NATS_TLS_KEY_FILE: required with NATS_TLS_CERT_FILE/);
    expect(() => natsTarget('nats://h:1', { user: 'app' })).toThrow(/NATS_PASSWORD: required with NATS_USER/);
  });
});

describe('natsConnectError', () => {
  const target = natsTarget('nats://app:Wrong-Pass-77@h:4222');

  it('an authorization violation is an AuthenticationError without the password', () => {
    const error = natsConnectError(target, Object.assign(new Error('Authorization Violation'), { name: 'AuthorizationError' }));
    expect(error.code).toBe('AUTHENTICATION_FAILED');
    expect(error.retriable).toBe(false);
    expect(error.message).toMatch(/^NATS at nats:\/\/app:\*\*\*@h:4222 refused the connection: authorization violation/);
    expect(`${error.message}${error.stack}`).not.toContain('Wrong-Pass-77');
  });

  it('a certificate problem is a TLS failure; anything else is unreachable', () => {
    expect(natsConnectError(target, new Error('unable to verify the first certificate')).message).toMatch(/TLS failed/);
    expect(natsConnectError(target, new Error('connect ECONNREFUSED')).code).toBe('SERVER_UNREACHABLE');
  });
});
