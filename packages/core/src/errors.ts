/**
 * Every error the pipeline raises on purpose is a CdcError: a stable `code` callers
 * can switch on, `retriable` to decide retry vs dead-letter (never the message text),
 * and readonly context fields. Foreign errors become ours at the boundary.
 */
import { redactError, redactText, redactUrl, redactValue } from './redact.ts';

export interface ErrorContext {
  readonly table?: string;
  readonly lsn?: string;
  readonly eventId?: string;
  readonly partition?: number;
  readonly subject?: string;
  readonly column?: string;
  readonly [key: string]: unknown;
}

export interface CdcErrorOptions extends ErrorOptions {
  readonly code: string;
  readonly retriable: boolean;
  readonly context?: ErrorContext;
}

export class CdcError extends Error {
  readonly code: string;
  readonly retriable: boolean;
  readonly context: ErrorContext;

  constructor(message: string, options: CdcErrorOptions) {
    // No secret in a message, context, stack or cause (redact.ts): scrubbed before the
    // stack is captured, so the stack's first line is clean too.
    if (options.cause instanceof Error) redactError(options.cause);
    super(redactText(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.retriable = options.retriable;
    this.context = (options.context === undefined ? {} : redactValue(options.context)) as ErrorContext;
  }

  /** Wraps anything thrown by a library so the caller sees one shape. */
  static from(cause: unknown, fallback: { code: string; retriable: boolean; context?: ErrorContext }): CdcError {
    if (cause instanceof CdcError) return cause;
    const message = cause instanceof Error ? cause.message : String(cause);
    return new CdcError(message, { ...fallback, cause });
  }
}

/** A configuration value is missing or malformed. Lists every bad variable at once. */
export class ConfigError extends CdcError {
  constructor(readonly problems: readonly { variable: string; problem: string }[]) {
    super(
      `invalid configuration: ${problems.map((p) => `${p.variable}: ${p.problem}`).join('; ')}`,
      { code: 'CONFIG_INVALID', retriable: false },
    );
  }
}

/** A component was asked to do something its current state does not allow. */
export class IllegalStateError extends CdcError {
  constructor(
    readonly component: string,
    readonly state: string,
    readonly attempted: string,
  ) {
    super(`${component}: '${attempted}' is not allowed in state '${state}'`, {
      code: 'ILLEGAL_STATE',
      retriable: false,
      context: { component, state, attempted },
    });
  }
}

/** A server we depend on did not answer; what to do is in the message. */
export class UnreachableError extends CdcError {
  readonly target: string;

  constructor(readonly server: string, target: string, hint: string, cause?: unknown) {
    const shown = redactUrl(target);
    super(`${server} at ${shown} is not reachable: ${hint}`, {
      code: 'SERVER_UNREACHABLE',
      retriable: true,
      cause,
      context: { server, target: shown },
    });
    this.target = shown;
  }
}

/**
 * A server answered but refused our credentials (wrong password, unknown user, bad
 * certificate, no permission). Not retriable: the same credentials fail the same way.
 * The message names the server and what failed, never the secret.
 */
export class AuthenticationError extends CdcError {
  readonly target: string;

  constructor(readonly server: string, target: string, problem: string, hint: string, cause?: unknown) {
    const shown = redactUrl(target);
    super(`${server} at ${shown} refused the connection: ${problem}; ${hint}`, {
      code: 'AUTHENTICATION_FAILED',
      retriable: false,
      cause,
      context: { server, target: shown },
    });
    this.target = shown;
  }
}

/**
 * A PostgreSQL connect failure that is about credentials or TLS (SQLSTATE class 28:
 * invalid authorization, e.g. 28P01 wrong password; or a TLS check that failed): one
 * AuthenticationError naming the server and what failed, else undefined.
 */
export function postgresAuthError(server: string, target: string, error: unknown, hint: string): AuthenticationError | undefined {
  const state = typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : undefined;
  const message = error instanceof Error ? error.message : String(error);
  if (state?.startsWith('28')) return new AuthenticationError(server, target, `${message} (SQLSTATE ${state})`, hint, error);
  if (/self[- ]signed|unable to verify|certificate|does not support SSL|ERR_TLS|Hostname\/IP does not match/i.test(`${message} ${state ?? ''}`)) {
    return new AuthenticationError(server, target, `TLS failed (${message})`, `${hint}; check sslmode, sslrootcert (the CA that signed the server) and the host name`, error);
  }
  return undefined;
}

/** An event the pipeline cannot process; goes to the dead-letter subject, never retried. */
export class PoisonEventError extends CdcError {
  constructor(message: string, context: ErrorContext, cause?: unknown) {
    super(message, { code: 'POISON_EVENT', retriable: false, context, cause });
  }
}

/** An error's message as it may be shown: secrets masked (redact.ts). */
export function errorMessage(error: unknown): string {
  return redactText(error instanceof Error ? error.message : String(error));
}
