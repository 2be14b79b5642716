/**
 * Logs are events: JSON to stdout, one pino root per process, a child per component
 * with fixed bindings. Credentials are redacted wherever they appear in known fields,
 * and connection URLs are passed through `redactUrl` before they are logged.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT_PATHS = [
  'password',
  '*.password',
  'config.*.password',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'connectionString',
  '*.connectionString',
];

export function createLogger(options: { app: string; level?: string }): Logger {
  return pino({
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    base: { app: options.app, pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
  }
}

/** The process's memory, for progress lines: what an operator compares with its limit. */
export function memoryFields(): { rss_mb: number; heap_used_mb: number; external_mb: number } {
  const usage = process.memoryUsage();
  const mb = (bytes: number): number => Math.round(bytes / 1_048_576);
  return { rss_mb: mb(usage.rss), heap_used_mb: mb(usage.heapUsed), external_mb: mb(usage.external + usage.arrayBuffers) };
}
