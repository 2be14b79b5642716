import { CdcError } from '@cdc/core';

/** A publish whose PubAck did not arrive (timeout, no stream, server error). */
export class PublishError extends CdcError {
  constructor(subject: string, cause: unknown, context: { eventId?: string } = {}) {
    super(`publish to ${subject} was not acknowledged: ${cause instanceof Error ? cause.message : String(cause)}`, {
      code: 'PUBLISH_FAILED',
      retriable: true,
      cause,
      context: { subject, ...context },
    });
  }
}

/** The stream no longer holds the sequence a stage must resume from (retention removed it). */
export class StreamGapError extends CdcError {
  constructor(stream: string, subject: string, expected: number, found: number) {
    super(
      `stream ${stream} lost messages on ${subject}: resume needs sequence ${expected} but the first available is ${found}; ` +
        'raise the stream max_age/max_bytes and replay from the source slot',
      { code: 'STREAM_GAP', retriable: false, context: { subject, stream, expected, found } },
    );
  }
}
