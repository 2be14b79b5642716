/**
 * Helpers for the middle-stage tests (reorderer and dedup-gate): a throw-away pipeline
 * on the real NATS server, synthetic raw messages, and a collector for a stage's output.
 */
import { Bus, type BusMessage, type StreamReader } from '@cdc/bus';
import {
  Lsn,
  STAGES,
  sleep,
  compareOrderKeys,
  decodeMessage,
  orderKeyOf,
  stageSubject,
  streamName,
  type ChangeEvent,
  type RawMessage,
  type Stage,
} from '@cdc/core';
import { changeEvent, heartbeat, prng } from '@cdc/testkit';
import { pino, type Logger } from 'pino';
import type { TestContext } from '../harness/index.ts';

/** Silent unless CDC_TEST_LOG=debug|info|… */
export function testLogger(): Logger {
  return pino({ level: process.env.CDC_TEST_LOG ?? 'silent' });
}

/** Lamport stamps look like commit times in µs, as the reader makes them. */
export const T0 = 1_700_000_000_000_000n;

export function change(source: string, lamport: bigint, commit: number, seq = 0): ChangeEvent {
  const commitLsn = Lsn.format(Lsn.fromBigInt(BigInt(commit)));
  const key = [`${source}-${commit}-${seq}`];
  return changeEvent({
    source, key, after: { id: key[0] ?? null, note: 'x' }, columnTypes: { id: 25, note: 25 }, lsn: commitLsn, commitLsn, seq,
    xid: commit, commitTs: new Date(Number((lamport - T0) / 1000n)).toISOString(), lamport,
    traceId: `trace-${source}-${commit}-${seq}`,
  });
}

export { heartbeat };

export interface Workload {
  /** Each source's messages in its own commit order, heartbeats included. */
  readonly perSource: Readonly<Record<string, RawMessage[]>>;
  /** All events sorted by order key: what the ordered stream must hold. */
  readonly expected: readonly string[];
}

/**
 * `transactions` per source, 1-2 events each, a heartbeat every `heartbeatEvery`
 * transactions and a final one past everything. Sources interleave in Lamport time with
 * ties across sources (same stamp, different source).
 */
export function workload(sources: readonly string[], transactions: number, heartbeatEvery = 5, commitBase = 0): Workload {
  const perSource: Record<string, RawMessage[]> = {};
  const events: ChangeEvent[] = [];
  sources.forEach((source, s) => {
    const messages: RawMessage[] = [];
    // Distinct commit LSNs give distinct eventIds: Nats-Msg-Id dedup is stream-wide, across partitions.
    let commit = commitBase + 0x1000 * (s + 1);
    let lamport = T0;
    for (let tx = 0; tx < transactions; tx++) {
      lamport += BigInt(((tx * 7 + s * 3) % 5) + 1) * 10n; // uneven gaps, frequent cross-source ties
      commit += 0x40;
      const size = (tx + s) % 3 === 0 ? 2 : 1;
      for (let seq = 0; seq < size; seq++) {
        const e = change(source, lamport, commit, seq);
        messages.push(e);
        events.push(e);
      }
      if ((tx + 1) % heartbeatEvery === 0) messages.push(heartbeat(source, lamport, commit + 8));
    }
    messages.push(heartbeat(source, lamport + 1_000_000n, commit + 0x100));
    perSource[source] = messages;
  });
  const expected = events.sort((a, b) => compareOrderKeys(orderKeyOf(a), orderKeyOf(b))).map((e) => e.eventId);
  return { perSource, expected };
}

/** A deterministic interleaving that keeps each source's order. */
export function interleave(perSource: Readonly<Record<string, RawMessage[]>>, seed = 7): RawMessage[] {
  const queues = Object.values(perSource).map((messages) => [...messages]);
  const out: RawMessage[] = [];
  const random = prng(seed);
  // Whole 32-bit draws, as mulberry32 makes them (x / 2^32 * 2^32 is exact).
  const next = (): number => random() * 4294967296;
  while (queues.some((q) => q.length > 0)) {
    const open = queues.filter((q) => q.length > 0);
    const queue = open[next() % open.length] as RawMessage[];
    // Runs of a few messages from one source, like two readers publishing concurrently.
    for (let n = next() % 4; n >= 0 && queue.length > 0; n--) out.push(queue.shift() as RawMessage);
  }
  return out;
}

/** As the reader sets them; heartbeat ids name the partition (Nats-Msg-Id dedup is stream-wide). */
export function msgIdOf(message: RawMessage, partition: number): string {
  return message.kind === 'change' ? message.eventId : `hb:${message.source}:${message.lamport}:${partition}`;
}

export interface DeadLetterRecord {
  readonly reason: string;
  readonly code: string;
  readonly eventId?: string;
  readonly payload: string;
}

export interface Collector {
  readonly messages: BusMessage[];
  events(): ChangeEvent[];
  eventIds(): string[];
  watermarks(): { lamport: string; positions: Record<string, string> }[];
}

export interface TestPipeline {
  readonly name: string;
  readonly bus: Bus;
  readonly logger: Logger;
  /** Publishes and waits for the PubAck; returns the stream sequence. */
  publish(stage: Stage, partition: number, payload: unknown, msgId?: string): Promise<number>;
  /** One at a time, each with its reader-style msgId: a heartbeat is stored after the events it covers. */
  publishAll(stage: Stage, partition: number, messages: readonly RawMessage[]): Promise<number[]>;
  /** Collects a subject from sequence 1 in the background (stopped after the test). */
  collect(stage: Stage, partition: number): Collector;
  /** Dead letters of a stage, parsed. */
  deadLetters(stage: string): Promise<DeadLetterRecord[]>;
}

export async function createPipeline(ctx: TestContext, prefix: string): Promise<TestPipeline> {
  const name = ctx.uniqueName(prefix);
  const logger = testLogger();
  const bus = await Bus.create({ url: ctx.servers.nats, name: `test:${name}`, logger });
  ctx.defer('test bus close', () => bus.close());
  await bus.ensurePipelineStreams(name);
  ctx.defer(`delete streams of ${name}`, async () => {
    for (const stage of [...STAGES, 'dlq'] as const) await bus.jsm.streams.delete(streamName(name, stage)).catch(() => undefined);
  });
  const encoder = new TextEncoder();

  const publish = async (stage: Stage, partition: number, payload: unknown, msgId?: string): Promise<number> => {
    const data = encoder.encode(typeof payload === 'string' ? payload : JSON.stringify(payload));
    const ack = await bus.js.publish(stageSubject(name, stage, partition), data, msgId ? { msgID: msgId } : {});
    return ack.seq;
  };

  const readAll = async (stream: string, subject: string, lingerMs: number): Promise<BusMessage[]> => {
    const reader = await bus.openReader({ stream, subject, startSeq: 1 });
    try {
      const all: BusMessage[] = [];
      for (;;) {
        const batch = await reader.nextBatch(500, lingerMs);
        if (batch.length === 0) return all;
        all.push(...batch);
      }
    } finally {
      await Promise.race([bus.closeReader(reader), sleep(200)]);
    }
  };

  return {
    name,
    bus,
    logger,
    publish,
    async publishAll(stage, partition, messages) {
      const seqs: number[] = [];
      for (const message of messages) seqs.push(await publish(stage, partition, message, msgIdOf(message, partition)));
      return seqs;
    },
    collect(stage, partition) {
      const messages: BusMessage[] = [];
      let reader: StreamReader | undefined;
      let stopped = false;
      const loop = (async () => {
        reader = await bus.openReader({ stream: streamName(name, stage), subject: stageSubject(name, stage, partition), startSeq: 1 });
        while (!stopped) messages.push(...(await reader.nextBatch(500, 50)));
      })();
      ctx.defer(`stop collector ${stage}.${partition}`, async () => {
        stopped = true;
        await loop.catch(() => undefined);
        // Bounded: nats.js resolves close() only once buffered messages are iterated.
        if (reader) await Promise.race([bus.closeReader(reader), sleep(200)]);
      });
      // One entry per item: a message carries one or many (@cdc/core wire.ts).
      const parsed = () =>
        messages.flatMap((m) =>
          decodeMessage(m.data, ['change', 'heartbeat', 'progress', 'watermark']).map((item) => {
            if (item.kind === 'poison') throw new Error(`message ${m.seq} of ${m.subject} holds an undecodable item: ${item.reason}`);
            return item.value as unknown as { kind: string } & Record<string, unknown>;
          }),
        );
      const events = () => parsed().filter((m) => m.kind === 'change') as unknown as ChangeEvent[];
      return {
        messages,
        events,
        eventIds: () => events().map((e) => e.eventId),
        watermarks: () => parsed().filter((m) => m.kind === 'watermark') as unknown as { lamport: string; positions: Record<string, string> }[],
      };
    },
    async deadLetters(stage) {
      const letters = await readAll(streamName(name, 'dlq'), `cdc.${name}.dlq.${stage}`, 200);
      return letters.map((m) => m.json<DeadLetterRecord>());
    },
  };
}
