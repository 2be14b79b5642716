/**
 * Watches the invariant that makes `kill -9` of the reader safe: the slot's
 * confirmed_flush_lsn never passes a position the sink has committed for EVERY
 * partition (PITFALLS 2). Samples the slot first, then the sink: the sink only moves
 * forward, so a violation seen this way is real.
 */
import { Lsn } from '@cdc/core';
import pg from 'pg';

export interface SlotWatchReport {
  readonly samples: number;
  readonly violations: string[];
  readonly lastConfirmed: string | undefined;
}

export class SlotWatch {
  readonly #timer: NodeJS.Timeout;
  readonly #source: pg.Client;
  readonly #sink: pg.Client;
  readonly #violations: string[] = [];
  #initial: Lsn | undefined;
  #samples = 0;
  #last: string | undefined;
  #busy = false;

  private constructor(
    source: pg.Client,
    sink: pg.Client,
    readonly options: { slot: string; pipeline: string; source: string; partitions: number; intervalMs: number },
  ) {
    this.#source = source;
    this.#sink = sink;
    this.#timer = setInterval(() => void this.#sample(), options.intervalMs);
  }

  static async start(options: {
    sourceUrl: string;
    sinkUrl: string;
    slot: string;
    pipeline: string;
    source: string;
    partitions: number;
    intervalMs?: number;
  }): Promise<SlotWatch> {
    const source = new pg.Client({ connectionString: options.sourceUrl });
    const sink = new pg.Client({ connectionString: options.sinkUrl });
    await source.connect();
    await sink.connect();
    return new SlotWatch(source, sink, { ...options, intervalMs: options.intervalMs ?? 250 });
  }

  async #sample(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const slot = await this.#source.query<{ lsn: string | null }>(
        'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
        [this.options.slot],
      );
      const confirmedText = slot.rows[0]?.lsn;
      if (!confirmedText) return;
      const confirmed = Lsn.parse(confirmedText);
      this.#initial ??= confirmed;
      this.#last = confirmedText;
      const sink = await this.#sink
        .query<{ lsn: string | null }>(
          `SELECT positions->>$2 AS lsn FROM cdc_checkpoint WHERE pipeline = $1`,
          [this.options.pipeline, this.options.source],
        )
        .catch(() => ({ rows: [] as { lsn: string | null }[] }));
      this.#samples += 1;
      const positions = sink.rows.map((row) => row.lsn).filter((lsn): lsn is string => lsn !== null);
      if (positions.length < this.options.partitions) {
        if (confirmed > this.#initial) {
          this.#violations.push(`slot confirmed ${confirmedText} while the sink has positions for ${positions.length}/${this.options.partitions} partitions`);
        }
        return;
      }
      const committed = positions.map((text) => Lsn.parse(text)).reduce((a, b) => Lsn.min(a, b));
      if (confirmed > committed && confirmed > this.#initial) {
        this.#violations.push(`slot confirmed ${confirmedText} > sink committed ${Lsn.format(committed)}`);
      }
    } catch {
      // A sample can fail while servers are busy; the next one retries.
    } finally {
      this.#busy = false;
    }
  }

  async stop(): Promise<SlotWatchReport> {
    clearInterval(this.#timer);
    while (this.#busy) await new Promise((resolve) => setTimeout(resolve, 20));
    await Promise.all([this.#source.end(), this.#sink.end()]);
    return { samples: this.#samples, violations: this.#violations, lastConfirmed: this.#last };
  }
}
