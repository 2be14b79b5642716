/**
 * The life of an app process: parse config, create resources (each registered with
 * `defer`), run until the work ends or SIGTERM/SIGINT, then close everything in
 * reverse order of creation. A failure prints ONE line saying what went wrong and
 * exits non-zero; the structured log keeps the details.
 */
import { CdcError, errorMessage, redactError } from '@cdc/core';
import { createLogger, type Logger } from './logger.ts';

export interface AppContext {
  readonly logger: Logger;
  /** Aborted on SIGTERM/SIGINT: every loop watches it. */
  readonly signal: AbortSignal;
  /** Registers a closer; closers run in reverse order on the way out. */
  defer(name: string, close: () => Promise<void> | void): void;
}

export interface RunOptions {
  readonly app: string;
  readonly shutdownTimeoutMs?: number;
  /** For tests: do not call process.exit. */
  readonly exit?: (code: number) => void;
}

export async function runApp(options: RunOptions, main: (context: AppContext) => Promise<void>): Promise<number> {
  const logger = createLogger({ app: options.app });
  const controller = new AbortController();
  const closers: { name: string; close: () => Promise<void> | void }[] = [];
  const exit = options.exit ?? ((code: number) => process.exit(code));

  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    logger.info({ signal }, 'shutdown requested: draining');
    controller.abort(new Error(`received ${signal}`));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let code = 0;
  try {
    await main({
      logger,
      signal: controller.signal,
      defer: (name, close) => closers.push({ name, close }),
    });
  } catch (error) {
    if (!controller.signal.aborted || !isAbort(error)) {
      code = 1;
      reportFatal(options.app, logger, error);
    }
  }

  const timeout = setTimeout(() => {
    logger.error({ pending: closers.map((c) => c.name) }, 'shutdown timed out');
    exit(code || 1);
  }, options.shutdownTimeoutMs ?? 30_000);
  timeout.unref();
  for (const closer of closers.reverse()) {
    try {
      await closer.close();
      logger.debug({ resource: closer.name }, 'closed');
    } catch (error) {
      logger.warn({ resource: closer.name, err: error }, 'close failed');
    }
  }
  clearTimeout(timeout);
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  logger.info({ code }, 'stopped');
  logger.flush();
  exit(code);
  return code;
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || /received SIG/.test(error.message));
}

function reportFatal(app: string, logger: Logger, error: unknown): void {
  const code = error instanceof CdcError ? error.code : 'UNEXPECTED';
  if (error instanceof Error) redactError(error);
  logger.fatal({ err: error, code }, errorMessage(error));
  // One human line on stderr, whatever the log level: what failed and what to do.
  process.stderr.write(`${app}: ${code}: ${errorMessage(error)}\n`);
}

/** Resolves when the signal aborts: for apps whose work runs in the background. */
export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
