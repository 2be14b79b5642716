/**
 * Positions shared through etcd.
 *
 *   /checkpoints/<pipeline>/<sink>/<partition> PartitionCheckpoint, written by the committer
 *                                              of that sink after each sink COMMIT, attached to
 *                                              its lease (a dead committer's keys vanish: the
 *                                              reader then confirms nothing, which is safe).
 *                                              The reader confirms only what EVERY sink it is
 *                                              told of (SINKS) has committed.
 *   /cdc/<pipeline>/sources/<source>/acks      the reader's last confirmed LSNs with the
 *                                              Lamport stamp at each (a short ring), written
 *                                              BEFORE the LSN is confirmed to PostgreSQL, so a
 *                                              restarted reader resumes its clock exactly.
 *
 * etcd is not the source of truth for the sink (the sink's own checkpoint table is): a
 * lost lease only delays slot feedback (PITFALLS 21, 22).
 */
import type { BasicSecurity, Logger } from '@cdc/runtime';
import { etcdConnectError, etcdTarget } from './connect.ts';
import { Etcd3, type Lease } from 'etcd3';

export interface PartitionCheckpoint {
  readonly partition: number;
  /** Per source: the commit end LSN through which this partition is committed in the sink. */
  readonly positions: Readonly<Record<string, string>>;
  /** Partition watermark (decimal Lamport) through which the sink is committed. */
  readonly lamport: string;
  readonly epoch: number;
  readonly updatedAt: string;
}

export interface SourceAck {
  readonly lsn: string;
  readonly lamport: string;
}

const ACK_RING = 32;

/** The sink name of a committer that was given none: the PostgreSQL sink. */
export const DEFAULT_SINK = 'postgres';

export class CheckpointStore {
  readonly #client: Etcd3;
  readonly #logger: Logger;
  readonly #leaseTtlSeconds: number;
  #lease: Lease | undefined;
  #closed = false;

  private constructor(client: Etcd3, logger: Logger, leaseTtlSeconds: number) {
    this.#client = client;
    this.#logger = logger;
    this.#leaseTtlSeconds = leaseTtlSeconds;
  }

  /**
   * Connects with the URL's userinfo or `security` (user/password; TLS CA and client
   * certificate: connect.ts) and reads once: refused credentials or a failed TLS check
   * throw AuthenticationError, no answer UnreachableError; neither shows a secret.
   */
  static async create(options: { url: string; logger: Logger; leaseTtlSeconds?: number; security?: BasicSecurity }): Promise<CheckpointStore> {
    const target = etcdTarget(options.url, options.security);
    const client = new Etcd3(target.options);
    try {
      await client.get('/cdc/ping').string();
    } catch (error) {
      client.close();
      throw etcdConnectError(target, error);
    }
    return new CheckpointStore(client, options.logger, options.leaseTtlSeconds ?? 10);
  }

  static partitionKey(pipeline: string, partition: number, sink: string = DEFAULT_SINK): string {
    return `/checkpoints/${pipeline}/${sink}/${partition}`;
  }

  /** Writes a sink's partition checkpoints under this process's lease (re-granted if it was lost). */
  async publishPartitions(pipeline: string, checkpoints: readonly PartitionCheckpoint[], sink: string = DEFAULT_SINK): Promise<void> {
    if (checkpoints.length === 0) return;
    const lease = this.#currentLease();
    try {
      for (const checkpoint of checkpoints) {
        await lease.put(CheckpointStore.partitionKey(pipeline, checkpoint.partition, sink)).value(JSON.stringify(checkpoint));
      }
    } catch (error) {
      // A lost lease (LeaseInvalid) is replaced on the next call; the sink keeps the truth.
      this.#logger.warn({ err: error }, 'publishing checkpoints to etcd failed; re-granting the lease');
      this.#dropLease();
      throw error;
    }
  }

  async readPartitions(pipeline: string, sink: string = DEFAULT_SINK): Promise<Map<number, PartitionCheckpoint>> {
    const entries = await this.#client.getAll().prefix(`/checkpoints/${pipeline}/${sink}/`).strings();
    const result = new Map<number, PartitionCheckpoint>();
    for (const value of Object.values(entries)) {
      const checkpoint = JSON.parse(value) as PartitionCheckpoint;
      result.set(checkpoint.partition, checkpoint);
    }
    return result;
  }

  async recordSourceAck(pipeline: string, source: string, ack: SourceAck): Promise<void> {
    const key = `/cdc/${pipeline}/sources/${source}/acks`;
    const previous = await this.readSourceAcks(pipeline, source);
    if (previous.at(-1)?.lsn === ack.lsn) return;
    const ring = [...previous, ack].slice(-ACK_RING);
    await this.#client.put(key).value(JSON.stringify(ring));
  }

  async readSourceAcks(pipeline: string, source: string): Promise<SourceAck[]> {
    const text = await this.#client.get(`/cdc/${pipeline}/sources/${source}/acks`).string();
    return text ? (JSON.parse(text) as SourceAck[]) : [];
  }

  /** Removes every key of a pipeline (tests, `reset` tooling). */
  async deletePipeline(pipeline: string): Promise<void> {
    await this.#client.delete().prefix(`/checkpoints/${pipeline}/`);
    await this.#client.delete().prefix(`/cdc/${pipeline}/`);
  }

  #currentLease(): Lease {
    if (!this.#lease || this.#lease.revoked()) {
      const lease = this.#client.lease(this.#leaseTtlSeconds);
      lease.on('lost', (error) => {
        this.#logger.warn({ err: error }, 'etcd lease lost');
        if (this.#lease === lease) this.#lease = undefined;
      });
      this.#lease = lease;
    }
    return this.#lease;
  }

  #dropLease(): void {
    const lease = this.#lease;
    this.#lease = undefined;
    void lease?.revoke().catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const lease = this.#lease;
    this.#lease = undefined;
    // Do not revoke: a restarting committer should not make the reader see no checkpoint.
    lease?.release();
    this.#client.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
