/**
 * Every BENCH_SAMPLE_MS (default 250 ms), one sample of where each stage is:
 *   source   change_history_id_seq.last_value on the source — rows the generator wrote
 *            (sequences are not transactional: counts rows as they are written);
 *   raw, ordered, deduped   change events each stage published: the `Cdc-Count` header
 *            summed over its stream's messages (one event per message or a hundred — the
 *            bus carries batches), read by a headers-only ordered consumer per stream;
 *   sink     change_history_id_seq.last_value on the sink — rows the committer applied
 *            (written, possibly not yet committed; the history trigger adds one per change);
 *   rss      VmRSS and VmHWM of every app process (/proc/<pid>/status), in kB.
 * Samples never overlap: a slow one delays the next. Reading a sequence is O(1), unlike
 * count(*), so sampling does not load the servers being measured.
 */
import { readFileSync } from 'node:fs';
import { jetstream, jetstreamManager, type ConsumerMessages, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import pg from 'pg';
import { Headers, streamName, type Stage } from '@cdc/core';

export interface Sample {
  /** ms since the epoch */
  readonly t: number;
  readonly source: number;
  readonly raw: number;
  readonly ordered: number;
  readonly deduped: number;
  readonly sink: number;
  /** app name → [VmRSS kB, VmHWM kB] */
  readonly rss: Record<string, [number, number]>;
}

export function memoryKb(pid: number | undefined): [number, number] {
  if (pid === undefined) return [0, 0];
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return [Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0), Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0)];
  } catch {
    return [0, 0];
  }
}

async function sequenceValue(client: pg.Client): Promise<number> {
  const result = await client.query<{ last_value: string; is_called: boolean }>('SELECT last_value, is_called FROM change_history_id_seq');
  const row = result.rows[0];
  return row && row.is_called ? Number(row.last_value) : 0;
}

/** Change events a stage has published: Cdc-Count summed over its stream (headers only, no payloads). */
class EventCounter {
  count = 0;
  readonly #js: JetStreamClient;
  readonly #stream: string;
  #messages: ConsumerMessages | undefined;
  #starting: Promise<void> | undefined;
  #closed = false;

  constructor(js: JetStreamClient, stream: string) {
    this.#js = js;
    this.#stream = stream;
  }

  /** Starts reading once the stream exists (the apps create it); called at every sample. */
  poke(): void {
    if (this.#messages || this.#starting || this.#closed) return;
    this.#starting = this.#start()
      .catch(() => undefined)
      .finally(() => {
        this.#starting = undefined;
      });
  }

  async #start(): Promise<void> {
    const consumer = await this.#js.consumers.get(this.#stream, { headers_only: true });
    const messages = await consumer.consume({ max_messages: 1_000 });
    if (this.#closed) {
      await messages.close();
      return;
    }
    this.#messages = messages;
    void (async () => {
      for await (const message of messages) this.count += Number(message.headers?.get(Headers.Count) || 0) || 0;
    })().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#starting;
    await Promise.race([this.#messages?.close().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 200))]);
  }
}

export class Sampler {
  readonly samples: Sample[] = [];
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #counters: Record<Stage, EventCounter>;
  readonly #source: pg.Client;
  readonly #sink: pg.Client;
  readonly #pipeline: string;
  readonly #pids: () => Record<string, number | undefined>;
  readonly #periodMs: number;
  readonly #sinkCount: (() => number) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #errors = 0;

  private constructor(
    nc: NatsConnection,
    jsm: JetStreamManager,
    source: pg.Client,
    sink: pg.Client,
    options: { pipeline: string; pids: () => Record<string, number | undefined>; periodMs: number; sinkCount?: () => number },
  ) {
    this.#nc = nc;
    this.#jsm = jsm;
    const js = jetstream(nc);
    this.#counters = {
      raw: new EventCounter(js, streamName(options.pipeline, 'raw')),
      ordered: new EventCounter(js, streamName(options.pipeline, 'ordered')),
      deduped: new EventCounter(js, streamName(options.pipeline, 'deduped')),
    };
    this.#source = source;
    this.#sink = sink;
    this.#pipeline = options.pipeline;
    this.#pids = options.pids;
    this.#periodMs = options.periodMs;
    this.#sinkCount = options.sinkCount;
  }

  static async start(options: {
    natsUrl: string;
    sourceUrl: string;
    sinkUrl: string;
    pipeline: string;
    pids: () => Record<string, number | undefined>;
    periodMs: number;
    /** The sink's count of applied changes when it is not the PostgreSQL sink's history (Kafka). */
    sinkCount?: () => number;
  }): Promise<Sampler> {
    const nc = await connect({ servers: options.natsUrl.replace(/^nats:\/\//, ''), name: 'cdc-bench-sampler' });
    const source = new pg.Client({ connectionString: options.sourceUrl, application_name: 'cdc-bench-sampler' });
    const sink = new pg.Client({ connectionString: options.sinkUrl, application_name: 'cdc-bench-sampler' });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 5_000 });
      await source.connect();
      await sink.connect();
      const sampler = new Sampler(nc, jsm, source, sink, options);
      await sampler.#sampleOnce();
      sampler.#schedule();
      return sampler;
    } catch (error) {
      await Promise.allSettled([nc.close(), source.end(), sink.end()]);
      throw error;
    }
  }

  get latest(): Sample | undefined {
    return this.samples[this.samples.length - 1];
  }

  get errors(): number {
    return this.#errors;
  }

  /** Takes one sample now (outside the schedule), e.g. right before and after the workload. */
  async sampleNow(): Promise<Sample | undefined> {
    await this.#running;
    await this.#sampleOnce();
    return this.latest;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running;
    await Promise.allSettled(Object.values(this.#counters).map((counter) => counter.close()));
    await Promise.allSettled([this.#nc.close(), this.#source.end(), this.#sink.end()]);
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.#sampleOnce().finally(() => this.#schedule());
    }, this.#periodMs);
  }

  async #lastSeq(stage: Stage): Promise<number> {
    const counter = this.#counters[stage];
    counter.poke();
    return counter.count;
  }

  async #sampleOnce(): Promise<void> {
    try {
      const t = Date.now();
      const [source, sink, raw, ordered, deduped] = await Promise.all([
        sequenceValue(this.#source),
        this.#sinkCount ? this.#sinkCount() : sequenceValue(this.#sink),
        this.#lastSeq('raw'),
        this.#lastSeq('ordered'),
        this.#lastSeq('deduped'),
      ]);
      const rss: Record<string, [number, number]> = {};
      for (const [name, pid] of Object.entries(this.#pids())) rss[name] = memoryKb(pid);
      this.samples.push({ t, source, raw, ordered, deduped, sink, rss });
    } catch {
      this.#errors += 1;
    }
  }
}
