import { UnreachableError, clearRegisteredSecrets, redactText } from '@cdc/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger, loadConfig, redactConfig, registerEnvSecrets, z, env } from '../src/index.ts';

const SECRET = 'Zebra-Pass-7731';

function capture(): { lines: string[]; destination: { write(line: string): void } } {
  const lines: string[] = [];
  return { lines, destination: { write: (line: string) => void lines.push(line) } };
}

afterEach(() => clearRegisteredSecrets());

describe('the logger writes no secret', () => {
  it('masks URLs in fields, messages, bindings, credential fields and errors with their causes', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ app: 'test', level: 'debug', destination }).child({ target: `redis://:${SECRET}@h:1` });
    const cause = Object.assign(new Error(`getaddrinfo ENOTFOUND http://root:${SECRET}@etcd`), { url: `http://root:${SECRET}@etcd` });
    logger.error({ err: new UnreachableError('etcd', `http://root:${SECRET}@etcd:2379`, 'fix ETCD_URL', cause) }, 'etcd down');
    logger.warn({ error: new Error(`nats://u:${SECRET}@n:1 refused`), nested: { deep: { password: SECRET, token: SECRET } } }, `failed at nats://u:${SECRET}@n:1`);
    logger.info({ NATS_PASSWORD: SECRET, REDIS_PASSWORD: SECRET, connectionString: `postgres://u:${SECRET}@db/x` }, 'config');
    const text = lines.join('');
    expect(lines).toHaveLength(3);
    expect(text).not.toContain(SECRET);
    expect(text).toContain('http://root:***@etcd:2379');
    expect(text).toContain('"stack"');
  });

  it('masks a credential loaded by loadConfig wherever a library prints it', () => {
    const { lines, destination } = capture();
    const schema = z.object({ NATS_URL: env.natsUrl(), NATS_PASSWORD: z.string() });
    const config = loadConfig(schema, { NATS_URL: 'nats://127.0.0.1:1', NATS_PASSWORD: SECRET });
    createLogger({ app: 'test', destination }).error({ err: new Error(`auth failed: pass "${config.NATS_PASSWORD}"`) }, `using ${SECRET}`);
    expect(lines.join('')).not.toContain(SECRET);
  });

  it('registers credential variables and URL passwords, not ordinary variables such as PWD', () => {
    registerEnvSecrets({ PWD: '/work/tree', HOME: '/root', GITHUB_TOKEN: SECRET, ETCD_URL: `http://root:${SECRET}x@e:1` });
    expect(redactText(`at file:///work/tree/main.js /root ${SECRET} ${SECRET}x`)).toBe('at file:///work/tree/main.js /root *** ***');
  });

  it('redactConfig leaves out credentials and URL passwords', () => {
    const shown = JSON.stringify(
      redactConfig({ NATS_URL: `nats://u:${SECRET}@h:1`, ETCD_URL: `http://root:${SECRET}@e:1,http://root:${SECRET}@e:2`, NATS_PASSWORD: SECRET, NATS_TOKEN: SECRET, REDIS_USER: 'gate' }),
    );
    expect(shown).not.toContain(SECRET);
    expect(shown).toContain('"REDIS_USER":"gate"');
  });
});
