/**
 * The sink-side checkpoint and fencing statements. The checkpoint of a partition is
 * written in the same transaction as the rows it covers, so after a crash the sink and
 * its checkpoint agree: nothing is applied twice, nothing skipped.
 */
import { formatOrderKey, parseOrderKey } from '@cdc/core';
import type { PoolClient } from 'pg';
import { FencedError } from './errors.ts';
import type { LaneCheckpoint, LaneStart } from '@cdc/committer';

interface CheckpointRow {
  partition: number;
  resume_seq: string;
  last_key: string | null;
  lamport: string | null;
  positions: Record<string, string> | null;
}

/** Bumps the owner epoch (inserting the row the first time); the new epoch is ours. */
export async function acquireEpoch(client: PoolClient, pipeline: string): Promise<number> {
  const result = await client.query<{ epoch: string }>(
    `INSERT INTO public.cdc_owner (pipeline, epoch) VALUES ($1, 1)
     ON CONFLICT (pipeline) DO UPDATE SET epoch = public.cdc_owner.epoch + 1
     RETURNING epoch`,
    [pipeline],
  );
  return Number(result.rows[0]?.epoch);
}

/** First statement of every batch transaction: holds the owner row until COMMIT and checks it is still ours. */
export async function assertOwner(client: PoolClient, pipeline: string, epoch: number): Promise<void> {
  const result = await client.query<{ epoch: string }>('SELECT epoch FROM public.cdc_owner WHERE pipeline = $1 FOR UPDATE', [pipeline]);
  const current = result.rows[0] === undefined ? undefined : Number(result.rows[0].epoch);
  if (current !== epoch) throw new FencedError(pipeline, epoch, current);
}

/** Where each partition starts: its stored checkpoint, or the stream's beginning. */
export async function readCheckpoints(client: PoolClient, pipeline: string, partitions: number): Promise<LaneStart[]> {
  const result = await client.query<CheckpointRow>(
    'SELECT partition, resume_seq, last_key, lamport::text AS lamport, positions FROM public.cdc_checkpoint WHERE pipeline = $1',
    [pipeline],
  );
  const stored = new Map(result.rows.map((row) => [row.partition, row]));
  const starts: LaneStart[] = [];
  for (let partition = 0; partition < partitions; partition++) {
    const row = stored.get(partition);
    starts.push(
      row === undefined
        ? { partition, resumeSeq: 1 }
        : {
            partition,
            resumeSeq: Number(row.resume_seq),
            lastKey: row.last_key === null ? undefined : parseOrderKey(row.last_key),
            watermark: row.lamport === null ? undefined : { lamport: BigInt(row.lamport), positions: row.positions ?? {} },
          },
    );
  }
  return starts;
}

function rowValues(checkpoint: LaneCheckpoint): [number, number, string | null, string | null, string] {
  return [
    checkpoint.partition,
    checkpoint.resumeSeq,
    checkpoint.lastKey === undefined ? null : formatOrderKey(checkpoint.lastKey),
    checkpoint.watermark === undefined ? null : checkpoint.watermark.lamport.toString(),
    JSON.stringify(checkpoint.watermark?.positions ?? {}),
  ];
}

export async function writeCheckpoints(
  client: PoolClient,
  pipeline: string,
  epoch: number,
  checkpoints: readonly LaneCheckpoint[],
): Promise<void> {
  if (checkpoints.length === 0) return;
  const values: (string | number | null)[] = [pipeline, epoch];
  const tuples = checkpoints.map((checkpoint) => {
    const start = values.length;
    values.push(...rowValues(checkpoint));
    return `($1, $${start + 1}::integer, $${start + 2}::bigint, $${start + 3}::text, $${start + 4}::numeric, $${start + 5}::jsonb, $2::bigint, now())`;
  });
  await client.query(
    `INSERT INTO public.cdc_checkpoint (pipeline, partition, resume_seq, last_key, lamport, positions, epoch, updated_at)
     VALUES ${tuples.join(', ')}
     ON CONFLICT (pipeline, partition) DO UPDATE SET
       resume_seq = EXCLUDED.resume_seq, last_key = EXCLUDED.last_key, lamport = EXCLUDED.lamport,
       positions = EXCLUDED.positions, epoch = EXCLUDED.epoch, updated_at = EXCLUDED.updated_at`,
    values,
  );
}

/**
 * After an error whose outcome is unknown (the connection broke during COMMIT), a retry
 * first asks whether the batch is already in: its checkpoints are stored exactly.
 * A batch always moves at least one partition, so "stored == target" cannot be the state before it.
 */
export async function alreadyCommitted(client: PoolClient, pipeline: string, checkpoints: readonly LaneCheckpoint[]): Promise<boolean> {
  if (checkpoints.length === 0) return false;
  const result = await client.query<CheckpointRow>(
    `SELECT partition, resume_seq, last_key, lamport::text AS lamport, positions FROM public.cdc_checkpoint
      WHERE pipeline = $1 AND partition = ANY($2::integer[])`,
    [pipeline, checkpoints.map((checkpoint) => checkpoint.partition)],
  );
  const stored = new Map(result.rows.map((row) => [row.partition, row]));
  return checkpoints.every((checkpoint) => {
    const row = stored.get(checkpoint.partition);
    const [, resumeSeq, lastKey, lamport] = rowValues(checkpoint);
    return row !== undefined && Number(row.resume_seq) === resumeSeq && row.last_key === lastKey && row.lamport === lamport;
  });
}
