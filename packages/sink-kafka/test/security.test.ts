import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import { connectionOptions, describeSecurity } from '../src/security.ts';

describe('Kafka connection security', () => {
  it('plaintext without settings', () => {
    expect(connectionOptions(undefined)).toEqual({});
    expect(describeSecurity(undefined)).toEqual({ protocol: 'PLAINTEXT' });
  });

  it.each(['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'] as const)('%s takes user and password', (mechanism) => {
    const options = connectionOptions({ sasl: { mechanism, username: 'cdc', password: 'pw-1' } });
    expect(options.sasl).toEqual({ mechanism, username: 'cdc', password: 'pw-1' });
    expect(options.tls).toBeUndefined();
    expect(() => connectionOptions({ sasl: { mechanism, username: 'cdc' } })).toThrow(ConfigError);
  });

  it('OAUTHBEARER takes a token', () => {
    expect(connectionOptions({ sasl: { mechanism: 'OAUTHBEARER', token: 'tok' } }).sasl).toEqual({ mechanism: 'OAUTHBEARER', token: 'tok' });
    expect(() => connectionOptions({ sasl: { mechanism: 'OAUTHBEARER' } })).toThrow(/KAFKA_SASL_TOKEN/);
  });

  it('TLS reads the CA and the client pair from their files; one of the pair alone is an error; a missing file names its setting', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kafka-tls-'));
    for (const name of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(join(dir, name), `-----${name}-----\n`);
    const options = connectionOptions({ tls: { caFile: join(dir, 'ca.pem'), certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), serverName: 'kafka.internal' } });
    expect(options.tls).toEqual({ ca: '-----ca.pem-----\n', cert: '-----cert.pem-----\n', key: '-----key.pem-----\n', rejectUnauthorized: true });
    expect(options.tlsServerName).toBe('kafka.internal');
    expect(() => connectionOptions({ tls: { certFile: join(dir, 'cert.pem') } })).toThrow(/KAFKA_TLS_KEY_FILE/);
    expect(() => connectionOptions({ tls: { caFile: join(dir, 'missing.pem') } })).toThrow(/KAFKA_TLS_CA_FILE: cannot read .*missing\.pem: ENOENT/);
  });

  it('what may be logged names the protocol, mechanism, user and CA file, never a password or token', () => {
    const described = describeSecurity({ tls: { caFile: '/etc/ca.pem' }, sasl: { mechanism: 'SCRAM-SHA-512', username: 'cdc', password: 'hunter2' } });
    expect(described).toEqual({ protocol: 'SASL_SSL', mechanism: 'SCRAM-SHA-512', user: 'cdc', ca_file: '/etc/ca.pem' });
    expect(JSON.stringify(describeSecurity({ sasl: { mechanism: 'OAUTHBEARER', token: 'secret-token' } }))).not.toContain('secret-token');
  });
});
