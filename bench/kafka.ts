/**
 * The Kafka sink's side of a bench run: what a downstream consumer sees. The topics are
 * created before the pipeline starts (so a named read_committed consumer can follow them
 * from the first record), and this consumer counts change records as they become
 * visible, which is the "sink" column of the samples for a Kafka run.
 *
 * Times: a record's timestamp is its CreateTime, set by the committer when it builds the
 * record, a few milliseconds before the Kafka transaction commits — so the end of the
 * run and the latency are measured to just before the commit (off by the commit's own
 * duration, a few ms), not to the moment a consumer could read it.
 */
import { Admin } from '@platformatic/kafka';
import { closeNow } from '@cdc/sink-kafka';
import { consumeTopics, type TopicReader } from '../tests/kafka/topics.ts';
import { compareHistories, kafkaHistory, sourceHistory, type KafkaVerification } from '../tests/kafka/verify.ts';

export interface KafkaLatency {
  readonly rows: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export class KafkaSinkProbe {
  readonly #brokers: readonly string[];
  readonly #reader: TopicReader;

  readonly #topics: readonly string[];

  private constructor(brokers: readonly string[], reader: TopicReader, topics: readonly string[]) {
    this.#brokers = brokers;
    this.#reader = reader;
    this.#topics = topics;
  }

  static async start(brokers: readonly string[], topics: readonly string[]): Promise<KafkaSinkProbe> {
    const admin = new Admin({ clientId: 'cdc-bench', bootstrapBrokers: [...brokers] });
    try {
      await admin.createTopics({ topics: [...topics], partitions: 1, replicas: 1 });
    } finally {
      await closeNow(admin);
    }
    return new KafkaSinkProbe(brokers, await consumeTopics(brokers, topics), topics);
  }

  /** Change records (not tombstones) read so far. */
  count(): number {
    let n = 0;
    for (const record of this.#reader.records) if (record.value !== null) n += 1;
    return n;
  }

  /** CreateTime of the newest record, ms since the epoch. */
  lastTimestampMs(): number | null {
    let last: number | null = null;
    for (const record of this.#reader.records) if (record.timestamp !== undefined && (last === null || record.timestamp > last)) last = record.timestamp;
    return last;
  }

  /** record CreateTime − the row's written_at (the source write), for rows written since `fromMs`. */
  latency(fromMs: number): KafkaLatency {
    const samples: number[] = [];
    for (const record of this.#reader.records) {
      if (record.value === null || record.timestamp === undefined) continue;
      const after = (JSON.parse(record.value) as { after: { written_at?: unknown } | null }).after;
      const written = typeof after?.written_at === 'string' ? Date.parse(after.written_at) : Number.NaN;
      if (!Number.isFinite(written) || written < fromMs) continue;
      samples.push(record.timestamp - written);
    }
    samples.sort((a, b) => a - b);
    const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? Number.NaN;
    return { rows: samples.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: samples.at(-1) ?? Number.NaN };
  }

  /** Exactly once and per-key order against the source's change_history. */
  async verify(sourceUrl: string): Promise<KafkaVerification> {
    return compareHistories(await sourceHistory(sourceUrl), kafkaHistory(this.#reader.records), { tombstones: true });
  }

  /** Stops reading and deletes the run's topics (the broker is shared). */
  async close(): Promise<void> {
    await this.#reader.close();
    const admin = new Admin({ clientId: 'cdc-bench', bootstrapBrokers: [...this.#brokers] });
    try {
      await admin.deleteTopics({ topics: [...this.#topics] }).catch(() => undefined);
    } finally {
      await closeNow(admin);
    }
  }
}
