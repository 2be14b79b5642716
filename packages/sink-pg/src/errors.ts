/**
 * What can go wrong while applying to the sink, as CdcErrors the caller switches on:
 *  - SinkRefusedError (not retriable): the sink cannot take ONE event — the table or a
 *    column is missing, a value does not fit its column type, a constraint refuses it.
 *    The event is dead-lettered and the batch goes on without it.
 *  - SinkUnavailableError (retriable): the connection broke, a serialization failure,
 *    the server is shutting down. The whole batch is retried.
 *  - FencedError (not retriable): another committer bumped the owner epoch. We stop.
 * Classification is by SQLSTATE, never by message text.
 */
import { CdcError, type ErrorContext } from '@cdc/core';

/** Why the sink refused an event; becomes the `code` SINK_<KIND> of the dead letter. */
export type RefusalKind =
  | 'table_missing'
  | 'table_unusable'
  | 'no_primary_key'
  | 'column_missing'
  | 'key_missing'
  | 'row_missing'
  | 'row_absent'
  | 'value_refused'
  | 'constraint';

export interface SinkErrorContext extends ErrorContext {
  readonly sqlstate?: string;
}

export class SinkRefusedError extends CdcError {
  declare readonly context: SinkErrorContext;

  constructor(
    readonly kind: RefusalKind,
    message: string,
    context: SinkErrorContext,
    cause?: unknown,
  ) {
    super(message, { code: `SINK_${kind.toUpperCase()}`, retriable: false, context, cause });
  }

  /** The same refusal, with the event it belongs to filled in. */
  withContext(context: SinkErrorContext): SinkRefusedError {
    return new SinkRefusedError(this.kind, this.message, { ...this.context, ...context }, this.cause);
  }
}

export class SinkUnavailableError extends CdcError {
  constructor(message: string, context: SinkErrorContext, cause?: unknown) {
    super(message, { code: 'SINK_UNAVAILABLE', retriable: true, context, cause });
  }
}

/** A statement we generated was rejected in a way that is not about one event's data: a bug. */
export class SinkStatementError extends CdcError {
  constructor(message: string, context: SinkErrorContext, cause?: unknown) {
    super(message, { code: 'SINK_STATEMENT_FAILED', retriable: false, context, cause });
  }
}

/** PITFALLS 21: a lease or lock is no proof of ownership; the epoch row in the sink is. */
export class FencedError extends CdcError {
  constructor(
    readonly pipeline: string,
    readonly ownEpoch: number,
    readonly currentEpoch: number | undefined,
  ) {
    super(
      `committer for pipeline '${pipeline}' was fenced: it holds epoch ${ownEpoch} but the sink's cdc_owner says ` +
        `${currentEpoch ?? 'nothing'}; another committer took over, this one stops without writing`,
      { code: 'COMMITTER_FENCED', retriable: false, context: { pipeline, ownEpoch, currentEpoch } },
    );
  }
}

/** The fields node-postgres puts on a server error (DatabaseError). */
export interface PgErrorFields {
  readonly code?: string;
  readonly column?: string;
  readonly table?: string;
  readonly schema?: string;
  readonly constraint?: string;
  readonly detail?: string;
  readonly message?: string;
}

export function pgFields(error: unknown): PgErrorFields {
  return typeof error === 'object' && error !== null ? (error as PgErrorFields) : {};
}

/** SQLSTATE of a server error, or undefined for a client-side failure (socket, timeout). */
export function sqlstateOf(error: unknown): string | undefined {
  const code = pgFields(error).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export type PgErrorClass = 'refusal' | 'retriable' | 'bug';

/**
 * 22 data exception (invalid input syntax, out of range, too long), 23 integrity
 * constraint (not null, check, unique, foreign key), 42 schema mismatch (undefined column,
 * datatype mismatch, generated column): the sink refuses this data → dead letter.
 * 42601 (syntax error) can only be our own statement: a bug, not the event's fault.
 * Everything else — no SQLSTATE (socket closed), 08 connection, 40 serialization/deadlock,
 * 53 resources, 55P03 lock timeout, 57 shutdown/cancel, 58/XX system — is retried.
 */
export function classifyPgError(error: unknown): PgErrorClass {
  const state = sqlstateOf(error);
  if (state === undefined) return 'retriable';
  if (state === '42601') return 'bug';
  const cls = state.slice(0, 2);
  if (cls === '22' || cls === '23' || cls === '42') return 'refusal';
  return 'retriable';
}

/** A foreign error from the sink, as ours. Refusals get the SQLSTATE and column named. */
export function fromPgError(error: unknown, context: SinkErrorContext): CdcError {
  if (error instanceof CdcError) return error;
  const fields = pgFields(error);
  const state = sqlstateOf(error);
  const message = fields.message ?? String(error);
  const full = { ...context, ...(state ? { sqlstate: state } : {}), ...(fields.column ? { column: fields.column } : {}) };
  switch (classifyPgError(error)) {
    case 'refusal': {
      const kind: RefusalKind =
        state === '42703' ? 'column_missing' : state === '42P01' ? 'table_missing' : state?.startsWith('23') ? 'constraint' : 'value_refused';
      return new SinkRefusedError(kind, `sink refused the change: ${message}${fields.detail ? ` (${fields.detail})` : ''}`, full, error);
    }
    case 'bug':
      return new SinkStatementError(`sink rejected a generated statement: ${message}`, full, error);
    default:
      return new SinkUnavailableError(`sink failed transiently: ${message}`, full, error);
  }
}

/**
 * The sink's table does not fit valid data (a column or the table is missing, a type the
 * sink cannot take) and SCHEMA_CHANGES=fail, or evolve could not fix it. Retriable: the
 * committer HOLDS — applies and commits nothing past the change, retries with back-off and
 * shows this error in /readyz — until the operator fixes the sink; valid data is never
 * dead-lettered for the sink's shape.
 */
export class SinkSchemaError extends CdcError {
  declare readonly context: SinkErrorContext;

  constructor(
    readonly reason: RefusalKind | 'type_narrower' | 'type_unknown' | 'evolve_failed',
    message: string,
    context: SinkErrorContext,
    cause?: unknown,
  ) {
    super(message, { code: 'SINK_SCHEMA_HELD', retriable: true, context, cause });
  }
}

/** Refusals that are about the sink table's shape, not the event's data: held, never dead-lettered. */
export const SHAPE_REFUSALS: ReadonlySet<RefusalKind> = new Set(['table_missing', 'table_unusable', 'no_primary_key', 'column_missing']);
