import { clearRegisteredSecrets } from '@cdc/core';
import { afterEach, describe, expect, it } from 'vitest';
import { etcdConnectError, etcdTarget } from '../src/index.ts';

afterEach(() => clearRegisteredSecrets());

describe('etcdTarget', () => {
  it('takes user and password out of the hosts (gRPC cannot dial userinfo) into etcd3 auth', () => {
    const target = etcdTarget('http://root:Etcd-Pw-1@e1:2379, http://root:Etcd-Pw-1@e2:2379');
    expect(target.options.hosts).toEqual(['http://e1:2379', 'http://e2:2379']);
    expect(target.options.auth).toEqual({ username: 'root', password: 'Etcd-Pw-1' });
    expect(target.shown).toBe('http://root:***@e1:2379, http://root:***@e2:2379');
  });

  it('settings win; TLS files need https:// URLs', () => {
    expect(etcdTarget('https://e:2379', { user: 'cdc', password: 'Other-Pw-2' }).options.auth).toEqual({ username: 'cdc', password: 'Other-Pw-2' });
    expect(() => etcdTarget('http://e:2379', { tls: { caFile: '/ca.pem' } })).toThrow(/use https:\/\/ URLs/);
  });

  it('a refused password is an AuthenticationError without it', () => {
    const target = etcdTarget('https://cdc:Bad-Pw-3@e:2379');
    const error = etcdConnectError(target, Object.assign(new Error('etcdserver: authentication failed, invalid user ID or password'), { name: 'EtcdAuthenticationFailedError' }));
    expect(error.code).toBe('AUTHENTICATION_FAILED');
    expect(`${error.message}${error.stack}`).not.toContain('Bad-Pw-3');
    expect(etcdConnectError(target, new Error('14 UNAVAILABLE: No connection established')).code).toBe('SERVER_UNREACHABLE');
  });
});
