/**
 * Options in, compiled options out: each app declares a zod schema over its
 * environment; `loadConfig` parses it once and throws a ConfigError that names every
 * bad variable at once (never the first only).
 */
import { ConfigError, isSecretKey, redactUrl, redactValue, registerSecret, registerUrlSecrets } from '@cdc/core';
import { z } from 'zod';

export { z };

export type Env = Readonly<Record<string, string | undefined>>;

export function loadConfig<S extends z.ZodTypeAny>(schema: S, env: Env = process.env): z.output<S> {
  registerEnvSecrets(env);
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => ({
    variable: issue.path.join('.') || '(environment)',
    problem: issue.message,
  }));
  throw new ConfigError(problems);
}

/**
 * Every credential the environment carries becomes a registered secret (redact.ts), before
 * anything is parsed or connected: a credential variable's value, the password of every
 * `*_URL(S)`. From then on no log line, error or health response can show it.
 */
export function registerEnvSecrets(env: Env): void {
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined || value === '') continue;
    if (isSecretKey(key)) registerSecret(value);
    else if (/_URLS?$|_BROKERS$/.test(key)) registerUrlSecrets(value);
  }
}

export const MAX_PARTITIONS = 4096;
/** Port of every app's /healthz and /readyz. */
export const DEFAULT_HEALTH_PORT = 8080;

/**
 * The compiled config as it may be logged (at debug, at start-up): every `*_URL` /
 * `*_URLS` field (comma lists too) goes through redactUrl, credential fields (`*_PASSWORD`,
 * `*_TOKEN`) become `[redacted]`, every other string is scrubbed, Maps become objects.
 */
export function redactConfig(config: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (typeof value === 'string' && /_URLS?$/.test(key)) out[key] = value.split(',').map((url) => redactUrl(url.trim())).join(',');
    else if (value instanceof Map) out[key] = redactValue(Object.fromEntries(value));
    else out[key] = redactValue(value, key);
  }
  return out;
}

function urlField(protocols: readonly string[], example: string) {
  return z
    .string({ required_error: `required, for example ${example}` })
    .min(1, `required, for example ${example}`)
    .refine((value) => {
      try {
        return protocols.includes(new URL(value).protocol.replace(/:$/, ''));
      } catch {
        return false;
      }
    }, `must be a ${protocols.join('/')} URL, for example ${example}`);
}

function portField(fallback: number) {
  return z.coerce.number().int().min(0).max(65535).default(fallback);
}

/** Reusable field schemas with messages a user can act on. */
export const env = {
  url: urlField,
  port: portField,
  positiveInt: (fallback: number) => z.coerce.number().int().positive().default(fallback),
  /**
   * PARTITIONS, the same in every app (the reader hashes keys over it): required, no
   * default (absent is an error, not 0), 1..4096. Every app parses it with this.
   */
  partitions: () =>
    z
      .string({ required_error: 'required: the number of partitions, the same in every app, for example 4' })
      .regex(/^[1-9][0-9]*$/, 'a positive integer (the number of partitions, the same in every app), for example 4')
      .transform(Number)
      .refine((count) => count <= MAX_PARTITIONS, `at most ${MAX_PARTITIONS}`),
  natsUrl: () => urlField(['nats', 'tls'], 'nats://127.0.0.1:4222'),
  healthPort: () => portField(DEFAULT_HEALTH_PORT),
  /** HEALTH_HOST: the address /healthz, /readyz and /metrics listen on; loopback by default. */
  healthHost: () =>
    z
      .string()
      .regex(/^(?:[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?)$/, 'an address to listen on, for example 127.0.0.1 (loopback) or 0.0.0.0 (every interface)')
      .transform((host) => host.replace(/^\[(.*)\]$/, '$1'))
      .default('127.0.0.1'),
  /** A duration or count where 0 means "never" (e.g. a stats interval). */
  nonNegativeInt: (fallback: number) => z.coerce.number().int().min(0).default(fallback),
  name: (fallback?: string) => {
    const base = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and - only (1-64)');
    return fallback === undefined ? base : base.default(fallback);
  },
  list: () =>
    z
      .string()
      .transform((value) => value.split(',').map((item) => item.trim()).filter((item) => item.length > 0)),
  logLevel: () => z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
};
