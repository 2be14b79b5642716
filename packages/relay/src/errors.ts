import { CdcError } from '@cdc/core';

/** The ordered consumer ended (connection closed, consumer deleted): reopen from the checkpoint. */
export class ReaderClosedError extends CdcError {
  constructor(subject: string) {
    super(`the reader of ${subject} ended unexpectedly; reopening from the last checkpoint`, {
      code: 'READER_CLOSED',
      retriable: true,
      context: { subject },
    });
  }
}

/** Our own output carries a checkpoint header we cannot read: refuse to guess a resume point. */
export class BadCheckpointError extends CdcError {
  constructor(subject: string, header: string, value: string) {
    super(`the last message of ${subject} has an invalid ${header} header ${JSON.stringify(value)}; refusing to guess where to resume`, {
      code: 'BAD_CHECKPOINT',
      retriable: false,
      context: { subject, header, value },
    });
  }
}

/**
 * An output that cannot fit in one NATS message (max_payload) once this stage's headers are
 * added: its publish could never succeed, and a failed publish restarts the stage into the
 * same message again (PITFALLS 25). It is dead-lettered with its size and the limit instead.
 */
export class MessageTooLargeError extends CdcError {
  constructor(subject: string, msgId: string, readonly bytes: number, readonly limit: number, where: { table?: string; lsn?: string } = {}) {
    super(
      `message ${msgId} for ${subject} is ${bytes} bytes with its headers, over the server's max_payload of ${limit} bytes: ` +
        'dead-lettered, not published; raise max_payload in the nats-server configuration to carry it',
      { code: 'MESSAGE_TOO_LARGE', retriable: false, context: { subject, eventId: msgId, bytes, limit, ...where } },
    );
  }
}
