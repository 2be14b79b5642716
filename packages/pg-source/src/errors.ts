/**
 * What can go wrong between the reader and its source database. Each error says what to
 * do in its message (the app prints it as its one fatal line) and carries `retriable`:
 * configuration problems are not, a busy slot or a dropped connection are.
 */
import { CdcError } from '@cdc/core';

/** The source is not configured for logical decoding. */
export class WalLevelError extends CdcError {
  constructor(readonly walLevel: string, target: string) {
    super(
      `PostgreSQL at ${target} has wal_level=${walLevel}; logical replication needs wal_level=logical: ` +
        `run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart PostgreSQL`,
      { code: 'WAL_LEVEL_NOT_LOGICAL', retriable: false, context: { walLevel, target } },
    );
  }
}

/** A configured table does not exist (or is not an ordinary table). */
export class TableNotFoundError extends CdcError {
  constructor(readonly table: string, detail = 'does not exist') {
    super(`table ${table} ${detail}: fix TABLES or create the table before starting the reader`, {
      code: 'TABLE_NOT_FOUND',
      retriable: false,
      context: { table },
    });
  }
}

/** Rows of this table cannot be keyed, so updates and deletes could not be applied to a sink. */
export class TableWithoutKeyError extends CdcError {
  constructor(readonly table: string, readonly replicaIdentity: string) {
    super(
      `table ${table} has no primary key and REPLICA IDENTITY ${replicaIdentity.toUpperCase()}: its updates and deletes cannot be keyed; ` +
        `add a primary key or run ALTER TABLE ${table} REPLICA IDENTITY FULL`,
      { code: 'TABLE_WITHOUT_KEY', retriable: false, context: { table, replicaIdentity } },
    );
  }
}

/** The table has a key but its replica identity does not send the old key of updates and deletes. */
export class ReplicaIdentityError extends CdcError {
  constructor(readonly table: string, readonly replicaIdentity: string) {
    super(
      `table ${table} has REPLICA IDENTITY ${replicaIdentity.toUpperCase()}: PostgreSQL would not send the old primary key of ` +
        `updates and deletes; run ALTER TABLE ${table} REPLICA IDENTITY DEFAULT (or FULL)`,
      { code: 'REPLICA_IDENTITY_UNUSABLE', retriable: false, context: { table, replicaIdentity } },
    );
  }
}

/** A publication of that name exists but does not publish exactly what this reader is configured for. */
export class PublicationMismatchError extends CdcError {
  constructor(readonly publication: string, readonly differences: readonly string[]) {
    super(
      `publication ${publication} exists with other settings (${differences.join('; ')}); it is never reused silently: ` +
        `drop it (DROP PUBLICATION ${publication}) or set PUBLICATION_NAME to another name`,
      { code: 'PUBLICATION_MISMATCH', retriable: false, context: { publication, differences } },
    );
  }
}

/**
 * The reader's role may not do what setup needs (least privilege: a role with REPLICATION
 * and SELECT only). Names what is missing and the statement an administrator runs once.
 */
export class SourcePrivilegeError extends CdcError {
  constructor(readonly missing: string, readonly adminSql: string, cause?: unknown) {
    super(`the reader's role may not ${missing}; as an administrator run once: ${adminSql} (README: Security)`, {
      code: 'SOURCE_PRIVILEGE_MISSING',
      retriable: false,
      context: { missing, adminSql },
      cause,
    });
  }
}

/** A replication slot of that name exists but belongs to another plugin or database. */
export class SlotMismatchError extends CdcError {
  constructor(readonly slot: string, readonly differences: readonly string[]) {
    super(
      `replication slot ${slot} exists with other settings (${differences.join('; ')}); it is never reused silently: ` +
        `drop it (SELECT pg_drop_replication_slot('${slot}')) or set SLOT_NAME to another name`,
      { code: 'SLOT_MISMATCH', retriable: false, context: { slot, differences } },
    );
  }
}

/**
 * The slot can no longer deliver every change since the last confirmed position
 * (PITFALLS 8): continuing would leave a silent gap in the sink.
 */
export class SlotLostError extends CdcError {
  constructor(readonly slot: string, reason: string, cause?: unknown) {
    super(
      `replication slot ${slot} lost changes: ${reason}; the sink must be re-synchronised (snapshot) before the pipeline ` +
        `restarts with a new slot — refusing to continue with a gap`,
      { code: 'SLOT_LOST', retriable: false, cause, context: { slot } },
    );
  }
}

/** The slot is held by another walsender (often the previous one after a crash, PITFALLS 9). */
export class SlotBusyError extends CdcError {
  constructor(readonly slot: string, cause?: unknown) {
    super(`replication slot ${slot} is in use by another connection (${cause instanceof Error ? cause.message : 'active'})`, {
      code: 'SLOT_BUSY',
      retriable: true,
      cause,
      context: { slot },
    });
  }
}

/** The replication stream broke (connection lost, server error, protocol surprise). */
export class ReplicationError extends CdcError {
  constructor(message: string, options: { retriable?: boolean; cause?: unknown; lsn?: string; slot?: string } = {}) {
    super(message, {
      code: 'REPLICATION_FAILED',
      retriable: options.retriable ?? true,
      cause: options.cause,
      context: { ...(options.lsn ? { lsn: options.lsn } : {}), ...(options.slot ? { slot: options.slot } : {}) },
    });
  }
}

/** The database refused us for a reason a retry will not fix (authentication, missing database, privileges). */
export class SourceRefusedError extends CdcError {
  constructor(target: string, detail: string, readonly sqlState: string | undefined, cause?: unknown) {
    super(`PostgreSQL at ${target} refused the reader: ${detail}`, {
      code: 'SOURCE_REFUSED',
      retriable: false,
      cause,
      context: { target, sqlState },
    });
  }
}

/**
 * A change whose encoded event is larger than the bus can carry (NATS `max_payload`, less
 * the room the later stages need for their headers). Publishing it can never succeed, and
 * a failed publish restarts the session from the slot — which meets the same row again
 * (PITFALLS 25). So it is dead-lettered with its size and the limit, and the rest goes on.
 */
export class EventTooLargeError extends CdcError {
  constructor(
    readonly event: { readonly table: string; readonly key: readonly (string | null)[]; readonly lsn: string; readonly commitLsn: string; readonly seq: number; readonly eventId: string },
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(
      `change of ${event.table} key ${JSON.stringify(event.key)} at ${event.commitLsn}/${event.seq} is ${bytes} bytes encoded, ` +
        `over the bus limit of ${limit} bytes (NATS max_payload less header room): dead-lettered, not published; ` +
        'raise max_payload in the nats-server configuration to carry such rows',
      {
        code: 'EVENT_TOO_LARGE',
        retriable: false,
        context: { table: event.table, lsn: event.lsn, eventId: event.eventId, commitLsn: event.commitLsn, seq: event.seq, bytes, limit },
      },
    );
  }
}

/**
 * The server does not format values with the settings the pipeline pinned (PITFALLS 23):
 * continuing would change values silently (a German DateStyle swaps day and month).
 */
export class SourceSettingsError extends CdcError {
  constructor(target: string, mismatches: readonly { name: string; expected: string; actual: string | undefined }[], where: string) {
    const list = mismatches.map((m) => `${m.name}=${m.actual ?? '(unknown)'} (needs ${m.expected})`).join(', ');
    super(
      `PostgreSQL at ${target} formats values with ${list} on the ${where} connection although the reader asked for the pinned settings in its startup packet: ` +
        `something between the reader and the server (a pooler, an extension) overrides them; connect directly or remove the override`,
      { code: 'SOURCE_SETTINGS_OVERRIDDEN', retriable: false, context: { target, settings: mismatches.map((m) => m.name).join(',') } },
    );
  }
}
