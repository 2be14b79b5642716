/**
 * Every error the pipeline raises on purpose is a CdcError: a stable `code` callers
 * can switch on, `retriable` to decide retry vs dead-letter (never the message text),
 * and readonly context fields. Foreign errors become ours at the boundary.
 */
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
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.retriable = options.retriable;
    this.context = options.context ?? {};
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
  constructor(readonly server: string, readonly target: string, hint: string, cause?: unknown) {
    super(`${server} at ${target} is not reachable: ${hint}`, {
      code: 'SERVER_UNREACHABLE',
      retriable: true,
      cause,
      context: { server, target },
    });
  }
}

/** An event the pipeline cannot process; goes to the dead-letter subject, never retried. */
export class PoisonEventError extends CdcError {
  constructor(message: string, context: ErrorContext, cause?: unknown) {
    super(message, { code: 'POISON_EVENT', retriable: false, context, cause });
  }
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
