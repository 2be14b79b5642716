/**
 * Logs are events: JSON to stdout, one pino root per process, a child per component
 * with fixed bindings. Credentials are redacted wherever they appear in known fields,
 * and connection URLs are passed through `redactUrl` before they are logged.
 */
import { isSecretKey, redactError, redactText, redactUrl, redactValue } from '@cdc/core';
import { destination as pinoDestination, pino, stdSerializers, type Bindings, type ChildLoggerOptions, type DestinationStream, type Logger } from 'pino';

export type { Logger };
export { redactUrl };

/**
 * Fields pino's fast-redact censors by path. The walk in `formatters.log` below catches
 * credential-named fields at any depth and secrets inside any string; these paths are the
 * cheap first line for the common shapes.
 */
const SECRET_FIELDS = ['password', 'secret', 'token', 'connectionString', 'credentials', 'authorization', 'NATS_PASSWORD', 'NATS_TOKEN', 'REDIS_PASSWORD', 'ETCD_PASSWORD'];
const REDACT_PATHS = [...SECRET_FIELDS, ...SECRET_FIELDS.map((field) => `*.${field}`), 'config.*.password', 'headers.authorization', 'err.config'];

/**
 * Every log line, before it is written: credential-named fields become `[redacted]`, every
 * string (URLs, messages, error messages and stacks, error context) goes through
 * redactText, Errors are scrubbed in place (their own fields and cause chain). The
 * `connectionString` field is masked whole by the paths above; other URL fields keep
 * host and user and lose only their password.
 */
function redactLogObject(object: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(object)) {
    if (value instanceof Error) out[key] = redactError(value);
    else if (isSecretKey(key) && value !== undefined && value !== null && value !== '') out[key] = '[redacted]';
    else out[key] = redactValue(value, key);
  }
  return out;
}

export function createLogger(options: { app: string; level?: string; destination?: DestinationStream }): Logger {
  const root = pino(
    {
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    base: { app: options.app, pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: {
      log: redactLogObject,
      bindings: (bindings) => redactLogObject(bindings),
    },
    serializers: {
      err: (error: unknown) => stdSerializers.err(error instanceof Error ? redactError(error) : (error as Error)),
    },
    hooks: {
      // The message (and any printf-style argument) may carry a URL or an error's text.
      logMethod(args, method) {
        const clean = args.map((arg) => (typeof arg === 'string' ? redactText(arg) : arg)) as Parameters<typeof method>;
        method.apply(this, clean);
      },
    },
  },
    options.destination ?? pinoDestination(1),
  );
  // pino applies `formatters.bindings` to the root's bindings only; a child's bindings (a
  // component's URL, say) are scrubbed here. Children inherit this `child` from the root.
  const child = root.child as unknown as (this: Logger, bindings: Bindings, childOptions?: ChildLoggerOptions) => Logger;
  Object.defineProperty(root, 'child', {
    value: function redactedChild(this: Logger, bindings: Bindings, childOptions?: ChildLoggerOptions): Logger {
      return child.call(this, redactLogObject(bindings), childOptions);
    },
    writable: true,
    configurable: true,
  });
  return root;
}

/** The process's memory, for progress lines: what an operator compares with its limit. */
export function memoryFields(): { rss_mb: number; heap_used_mb: number; external_mb: number } {
  const usage = process.memoryUsage();
  const mb = (bytes: number): number => Math.round(bytes / 1_048_576);
  return { rss_mb: mb(usage.rss), heap_used_mb: mb(usage.heapUsed), external_mb: mb(usage.external + usage.arrayBuffers) };
}
