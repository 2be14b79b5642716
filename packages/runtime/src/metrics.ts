/**
 * Prometheus metrics of one process: one prom-client Registry with the default process
 * metrics (CPU, RSS, heap, event-loop lag, GC), every series labelled with the app and
 * its pipeline, served by HealthServer on GET /metrics.
 *
 * Hot paths stay as they were: the stages keep plain number counters (per batch, `+= n`)
 * and the families here read them when Prometheus scrapes (`collect`), so nothing on the
 * event path touches prom-client or looks up a label set. Only the committer's per-batch
 * histograms are observed as they happen, through children cached at wiring time.
 *
 *   const metrics = Metrics.create({ app: 'dedup-gate', pipeline: 'orders' });
 *   metrics.counter('cdc_stage_events_in_total', 'Change events read', ['stage', 'partition'],
 *     () => relays.map((r) => [{ stage: 'dedup-gate', partition: r.partition }, r.relay.counters.eventsIn]));
 *   const health = await HealthServer.create({ port, host, metrics });
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type MetricLabels = Readonly<Record<string, string | number>>;
/** One series read at scrape time: its labels (without app/pipeline) and value. */
export type Sample = readonly [MetricLabels, number];

export interface MetricsOptions {
  readonly app: string;
  readonly pipeline: string;
  /** Default process metrics (prom-client's). Default true; tests creating many registries pass false. */
  readonly processMetrics?: boolean;
}

/** Fixed labels on every series, so one Prometheus job can scrape many pipelines. */
const BASE_LABELS = ['app', 'pipeline'] as const;

export class Metrics {
  readonly registry: Registry;
  readonly #readers: (() => void)[] = [];
  readonly #connections = new Map<string, () => boolean>();

  private constructor(options: MetricsOptions) {
    this.registry = new Registry();
    this.registry.setDefaultLabels({ app: options.app, pipeline: options.pipeline });
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  static create(options: MetricsOptions): Metrics {
    return new Metrics(options);
  }

  /**
   * A counter whose value is a component's own monotonic counter, read at scrape time.
   * The exported value only grows: when the component's counter falls (the component
   * was recreated) its new value is added as a fresh start, as Prometheus' rate() expects.
   */
  counter(name: string, help: string, labelNames: readonly string[], read: () => Iterable<Sample>): void {
    checkName(name, labelNames);
    const last = new Map<string, number>();
    const children = new Map<string, Counter.Internal>();
    new Counter({
      name,
      help,
      labelNames: [...labelNames],
      registers: [this.registry],
      collect(this: Counter<string>) {
        for (const [labels, value] of read()) {
          const key = labelKey(labels);
          const before = last.get(key) ?? 0;
          const delta = value >= before ? value - before : value;
          last.set(key, value);
          let child = children.get(key);
          if (!child) {
            child = this.labels(stringLabels(labels));
            children.set(key, child);
          }
          // inc(0) still creates the series, so a counter that never moved is exported as 0.
          child.inc(delta);
        }
      },
    });
  }

  /** A gauge read at scrape time; series not returned by `read` this time are dropped. */
  gauge(name: string, help: string, labelNames: readonly string[], read: () => Iterable<Sample>): void {
    checkName(name, labelNames);
    new Gauge({
      name,
      help,
      labelNames: [...labelNames],
      registers: [this.registry],
      collect(this: Gauge<string>) {
        this.reset();
        for (const [labels, value] of read()) {
          if (Number.isFinite(value)) this.set(stringLabels(labels), value);
        }
      },
    });
  }

  /** A histogram observed as things happen; take its children once (`.labels(...)`) and keep them. */
  histogram(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]): Histogram<string> {
    checkName(name, labelNames);
    return new Histogram({ name, help, labelNames: [...labelNames], buckets: [...buckets], registers: [this.registry] });
  }

  /** `cdc_connection_up{target}`: 1 while the named connection is up, read at scrape time; call again to add targets. */
  connections(targets: Readonly<Record<string, () => boolean>>): void {
    const first = this.#connections.size === 0;
    for (const [target, up] of Object.entries(targets)) this.#connections.set(target, up);
    if (!first) return;
    this.gauge('cdc_connection_up', 'Whether the connection to a server is up (1) or not (0)', ['target'], () =>
      [...this.#connections].map(([target, up]) => [{ target }, safe(up) ? 1 : 0] as const),
    );
  }

  /** Runs `fn` at every scrape before the families are read (e.g. to refresh a cached sample). */
  beforeScrape(fn: () => void): void {
    this.#readers.push(fn);
  }

  /** The text exposition format, and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    for (const fn of this.#readers) fn();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

function safe(up: () => boolean): boolean {
  try {
    return up();
  } catch {
    return false;
  }
}

function checkName(name: string, labelNames: readonly string[]): void {
  if (!/^cdc_[a-z0-9_]+$/.test(name)) throw new RangeError(`metric ${name}: names start with cdc_ and are snake_case`);
  for (const label of labelNames) {
    if ((BASE_LABELS as readonly string[]).includes(label)) throw new RangeError(`metric ${name}: label ${label} is set on every series already`);
  }
}

function labelKey(labels: MetricLabels): string {
  let key = '';
  for (const name in labels) key += `${name}=${labels[name]}\u0000`;
  return key;
}

function stringLabels(labels: MetricLabels): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name in labels) out[name] = String(labels[name]);
  return out;
}

/** Buckets for durations of a sink commit (seconds): 1 ms to 30 s. */
/** One sample per partition that has a value: index = partition, `labels` + `partition` on each. */
export function perPartition(values: readonly (number | undefined)[], labels: Readonly<Record<string, string>>): Sample[] {
  const out: Sample[] = [];
  for (let partition = 0; partition < values.length; partition++) {
    const value = values[partition];
    if (value !== undefined) out.push([{ ...labels, partition }, value]);
  }
  return out;
}

export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;
/** Buckets for events per batch. */
export const BATCH_SIZE_BUCKETS = [1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000] as const;
