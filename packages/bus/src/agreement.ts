/**
 * The apps of a pipeline check at start that they agree on its shape: partitions, sources
 * and sinks. Each app writes its view to a NATS KV bucket under its
 * own key (`<pipeline>.reader.pg1`, `<pipeline>.committer.postgres`, …; one bucket, `cdc_apps`,
 * for every pipeline on the server) and compares it with every other view of its pipeline
 * there; a disagreement is a startup error naming both values and the app that holds the
 * other one. Keys live `ttlMs` (the bucket's max age) and a running app rewrites its own
 * every `ttlMs / 3`, so only live apps (or ones dead for less than `ttlMs`) are compared
 * with; a cleanly stopped app deletes its key at close().
 *
 * What each app knows of the shape: every app the partition count; the reorderer every
 * source (`SOURCES`), a reader its own (`SOURCE_ID`); a reader every sink (`SINKS`), a
 * committer its own (`SINK_NAME`).
 *
 *   const agreement = await PipelineAgreement.join(bus, { pipeline, view: { app: 'reader', instance: 'reader.pg1', partitions: 4, source: 'pg1', sinks: ['postgres'] }, logger });
 *   defer('agreement', () => agreement.close());
 */
import { CdcError } from '@cdc/core';
import { Kvm, type KV } from '@nats-io/kv';
import type { Logger } from '@cdc/runtime';
import type { Bus } from './bus.ts';

export interface PipelineView {
  /** The app's name: reader, lamport-reorderer, dedup-gate, committer. */
  readonly app: string;
  /** Its key in the bucket: one per role (`reader.<source>`, `committer.<sink>`, `<relay app>.<assignment>`). */
  readonly instance: string;
  readonly partitions: number;
  /** Every source of the pipeline (the reorderer's SOURCES). */
  readonly sources?: readonly string[];
  /** The one source this app reads (the reader's SOURCE_ID). */
  readonly source?: string;
  /** Every sink of the pipeline (the reader's SINKS). */
  readonly sinks?: readonly string[];
  /** The one sink this app writes (the committer's SINK_NAME). */
  readonly sink?: string;
}

export class PipelineMismatchError extends CdcError {
  constructor(
    readonly pipeline: string,
    readonly mismatches: readonly string[],
  ) {
    super(`pipeline ${pipeline}: the apps disagree: ${mismatches.join('; ')}`, { code: 'PIPELINE_MISMATCH', retriable: false, context: { pipeline } });
  }
}

const list = (items: readonly string[]): string => [...items].sort().join(',');

/** What `mine` and `other` disagree on, each naming both values; [] when they agree. */
export function compareViews(mine: PipelineView, other: PipelineView): string[] {
  const out: string[] = [];
  const me = `this ${mine.app} (${mine.instance})`;
  const them = `${other.app} (${other.instance})`;
  if (mine.partitions !== other.partitions) out.push(`PARTITIONS: ${me} has ${mine.partitions}, ${them} has ${other.partitions}`);
  if (mine.sources && other.sources && list(mine.sources) !== list(other.sources)) out.push(`SOURCES: ${me} has ${list(mine.sources)}, ${them} has ${list(other.sources)}`);
  if (mine.source !== undefined && other.sources && !other.sources.includes(mine.source)) out.push(`SOURCES: ${me} reads source ${mine.source}, which ${them} does not merge (its SOURCES: ${list(other.sources)})`);
  if (other.source !== undefined && mine.sources && !mine.sources.includes(other.source)) out.push(`SOURCES: ${me} merges ${list(mine.sources)}, but ${them} reads source ${other.source}`);
  if (mine.sinks && other.sinks && list(mine.sinks) !== list(other.sinks)) out.push(`SINKS: ${me} has ${list(mine.sinks)}, ${them} has ${list(other.sinks)}`);
  if (mine.sink !== undefined && other.sinks && !other.sinks.includes(mine.sink)) out.push(`SINKS: ${me} is sink ${mine.sink}, which ${them} does not wait for (its SINKS: ${list(other.sinks)})`);
  if (other.sink !== undefined && mine.sinks && !mine.sinks.includes(other.sink)) out.push(`SINKS: ${me} waits for ${list(mine.sinks)}, but ${them} is sink ${other.sink}`);
  return out;
}

/** A KV key for an instance name: [A-Za-z0-9_.-], other characters as '-'. */
export function instanceKey(app: string, role: string): string {
  return `${app}.${role}`.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 200);
}

export const AGREEMENT_DEFAULTS = { bucket: 'cdc_apps', ttlMs: 30_000 } as const;

export class PipelineAgreement {
  readonly #kv: KV;
  readonly #view: PipelineView;
  readonly #key: string;
  readonly #logger: Logger;
  readonly #timer: NodeJS.Timeout;
  #closing: Promise<void> | undefined;

  private constructor(kv: KV, key: string, view: PipelineView, logger: Logger, refreshMs: number) {
    this.#kv = kv;
    this.#key = key;
    this.#view = view;
    this.#logger = logger;
    this.#timer = setInterval(() => {
      this.#kv.put(this.#key, JSON.stringify(this.#view)).catch((error: unknown) => this.#logger.warn({ err: error }, 'pipeline view not refreshed'));
    }, refreshMs);
    this.#timer.unref();
  }

  /** Compares `view` with the live apps' views (throws PipelineMismatchError), then keeps it written. */
  static async join(bus: Bus, options: { pipeline: string; view: PipelineView; logger: Logger; ttlMs?: number }): Promise<PipelineAgreement> {
    const ttlMs = options.ttlMs ?? AGREEMENT_DEFAULTS.ttlMs;
    const kvm = new Kvm(bus.nc);
    // An existing bucket made with other settings is used as it is.
    const kv = await kvm.create(AGREEMENT_DEFAULTS.bucket, { ttl: ttlMs, history: 1 }).catch(() => kvm.open(AGREEMENT_DEFAULTS.bucket));
    const mine = `${options.pipeline}.${options.view.instance}`;
    const check = async (): Promise<void> => {
      const mismatches: string[] = [];
      for await (const key of await kv.keys(`${options.pipeline}.>`)) {
        if (key === mine) continue;
        const entry = await kv.get(key);
        if (!entry || entry.operation !== 'PUT') continue;
        mismatches.push(...compareViews(options.view, entry.json<PipelineView>()));
      }
      if (mismatches.length > 0) throw new PipelineMismatchError(options.pipeline, mismatches);
    };
    await check();
    await kv.put(mine, JSON.stringify(options.view));
    try {
      // Again, now that ours is written: of two apps starting together, the later sees the earlier.
      await check();
    } catch (error) {
      await kv.delete(mine).catch(() => undefined);
      throw error;
    }
    options.logger.info({ instance: options.view.instance, partitions: options.view.partitions }, 'pipeline view agreed');
    return new PipelineAgreement(kv, mine, options.view, options.logger, Math.max(1_000, Math.floor(ttlMs / 3)));
  }

  /** Stops refreshing and deletes this app's view; idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#timer);
      await this.#kv.delete(this.#key).catch((error: unknown) => this.#logger.warn({ err: error }, 'pipeline view not deleted'));
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
