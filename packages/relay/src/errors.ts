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
