/**
 * pgoutput through `pg-logical-replication`, with two adjustments:
 *
 *  - Values stay in PostgreSQL text form. The library runs each column through
 *    node-postgres' type parser (timestamps become Date and lose microseconds, numerics
 *    become floats, json is parsed); a ChangeEvent carries the text the sink can insert
 *    as is. Each Relation message's columns get an identity parser, and the library's
 *    relation cache holds that same object, so later tuples of the relation stay text.
 *  - A message the library cannot parse (a change for a relation it has not seen, an
 *    unknown tag) becomes an `invalid` message instead of an exception: parse() runs
 *    inside the socket's data handler, where a throw would take the process down.
 *
 * Library facts the decoder relies on (pg-logical-replication 2.5, proto_version 1):
 *  - an unchanged TOAST column ('u') is `undefined` in the new tuple, unless the update
 *    carries the whole old row (REPLICA IDENTITY FULL), which fills it with the old value;
 *  - `key` (a 'K' tuple) has only the replica identity columns, the others `undefined`;
 *  - BEGIN.commitLsn is the transaction's final LSN, COMMIT.commitEndLsn the end of its
 *    commit record: the position a slot may be confirmed to.
 *  - commitTime is microseconds since the Unix epoch (bigint).
 */
import type { Client } from 'pg';
import { PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';

export const HEARTBEAT_PREFIX = 'cdc-heartbeat';
/** Prefix of the snapshot watermark messages (snapshot.ts). */
export const SNAPSHOT_PREFIX = 'cdc-snapshot';

export interface InvalidMessage {
  readonly tag: 'invalid';
  readonly error: unknown;
  /** The relation OID an Insert/Update/Delete referred to, when the bytes tell. */
  readonly relationOid?: number;
}

export type SourceMessage = Pgoutput.Message | InvalidMessage;

const keepText = (raw: unknown): unknown => raw;

export class TextPgoutputPlugin extends PgoutputPlugin {
  readonly #beforeStart: ((client: Client) => Promise<void>) | undefined;

  /** `beforeStart` runs on the replication connection before START_REPLICATION (the settings check). */
  constructor(publicationName: string, beforeStart?: (client: Client) => Promise<void>) {
    // protoVersion 1: only committed transactions are sent (no in-progress streaming to undo).
    super({ protoVersion: 1, publicationNames: [publicationName], messages: true });
    this.#beforeStart = beforeStart;
  }

  override async start(client: Client, slotName: string, lastLsn: string): Promise<unknown> {
    await this.#beforeStart?.(client);
    return super.start(client, slotName, lastLsn);
  }

  override parse(buffer: Buffer): Pgoutput.Message {
    try {
      const message = super.parse(buffer);
      if (message.tag === 'relation') {
        for (const column of message.columns) column.parser = keepText;
      }
      return message;
    } catch (error) {
      const tag = buffer[0];
      const invalid: InvalidMessage = {
        tag: 'invalid',
        error,
        ...((tag === 0x49 || tag === 0x55 || tag === 0x44) && buffer.length >= 5 ? { relationOid: buffer.readUInt32BE(1) } : {}),
      };
      // The library's type says Message; the decoder accepts SourceMessage.
      return invalid as unknown as Pgoutput.Message;
    }
  }
}
