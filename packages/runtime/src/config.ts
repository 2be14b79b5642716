/**
 * Options in, compiled options out: each app declares a zod schema over its
 * environment; `loadConfig` parses it once and throws a ConfigError that names every
 * bad variable at once (never the first only).
 */
import { ConfigError } from '@cdc/core';
import { z } from 'zod';

export { z };

export type Env = Readonly<Record<string, string | undefined>>;

export function loadConfig<S extends z.ZodTypeAny>(schema: S, env: Env = process.env): z.output<S> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => ({
    variable: issue.path.join('.') || '(environment)',
    problem: issue.message,
  }));
  throw new ConfigError(problems);
}

/** Reusable field schemas with messages a user can act on. */
export const env = {
  url: (protocols: readonly string[], example: string) =>
    z
      .string({ required_error: `required, for example ${example}` })
      .min(1, `required, for example ${example}`)
      .refine((value) => {
        try {
          return protocols.includes(new URL(value).protocol.replace(/:$/, ''));
        } catch {
          return false;
        }
      }, `must be a ${protocols.join('/')} URL, for example ${example}`),
  port: (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback),
  positiveInt: (fallback: number) => z.coerce.number().int().positive().default(fallback),
  /** A required count with no sensible default (e.g. PARTITIONS): absent is an error, not 0. */
  requiredCount: (example: string) =>
    z
      .string({ required_error: `required, for example ${example}` })
      .regex(/^[1-9][0-9]*$/, `a positive integer, for example ${example}`)
      .transform(Number),
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
