/**
 * The pipeline file: one YAML file that describes a whole pipeline (sources, partitions,
 * relay stages, sinks, dedup window, the servers), read by every app and by `cdc`.
 *
 * Least touch: the file is turned into the very variables each app's schema already reads
 * (`pipelineFileEnv`), merged UNDER the process environment — so the apps' zod schemas stay
 * the single validation of a value, and an environment variable still overrides one value.
 * The file itself is checked first, with one problem per bad field, named by its path in the
 * file (`sinks[1].connection`), never echoing a value (a URL may hold a password).
 *
 * Secrets: any string may reference an environment variable as `${NAME}` (passwords); it is
 * substituted as is (URL-encode it yourself if it holds `@`, `:` or `/`). `$${` is a literal `${`.
 *
 *   PIPELINE_FILE=pipeline.yaml SOURCE_ID=pg1 node apps/reader/dist/main.js
 *   const env = withPipelineFile('reader');   // process.env over the file's reader variables
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '@cdc/core';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { env as fields, MAX_PARTITIONS, type Env } from './config.ts';

/** The apps the file configures, by the name they log under. */
export const PIPELINE_APPS = ['reader', 'lamport-reorderer', 'dedup-gate', 'committer'] as const;
export type PipelineApp = (typeof PIPELINE_APPS)[number];

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const name = () => z.string({ required_error: 'required' }).regex(NAME, 'letters, digits, _ and - only (1-64)');
const TABLE = /^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$/;
const table = () => z.string().regex(TABLE, 'schema.table, for example public.orders');
const BROKER = /^[A-Za-z0-9.-]+:\d{1,5}$/;

/** `250ms`, `30s`, `10m`, `2h` or a number of milliseconds. */
const duration = () =>
  z.union([z.number().int().positive(), z.string().regex(/^\d+(ms|s|m|h)$/, 'a duration: 250ms, 30s, 10m, 2h or milliseconds')]).transform((value) => {
    if (typeof value === 'number') return value;
    const match = /^(\d+)(ms|s|m|h)$/.exec(value)!;
    return Number(match[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
  });

/** Extra variables for one app (anything the sections below do not name: KAFKA_SASL_*, …). */
const extraEnv = () =>
  z.record(z.string().regex(/^[A-Z][A-Z0-9_]*$/, 'variable names in capitals'), z.union([z.string(), z.number(), z.boolean()]).transform(String)).optional();

const batch = () =>
  z
    .object({ maxEvents: z.number().int().positive().optional(), linger: duration().optional() })
    .strict()
    .optional();

const sourceSchema = z
  .object({
    id: name(),
    connection: fields.url(['postgres', 'postgresql'], 'postgres://cdc:${SOURCE_PASSWORD}@host:5432/app'),
    tables: z.array(table()).min(1, 'at least one table, for example [public.orders]'),
    slot: z.string().regex(/^[a-z0-9_]{1,63}$/, 'lowercase letters, digits and _ only (1-63)').optional(),
    publication: z.string().regex(/^[A-Za-z0-9_]{1,63}$/, 'letters, digits and _ only (1-63)').optional(),
    snapshot: z.enum(['initial', 'initial_only', 'never'], { message: "'initial', 'initial_only' or 'never'" }).optional(),
    env: extraEnv(),
  })
  .strict();

const postgresSink = z
  .object({
    kind: z.literal('postgres'),
    name: name().optional(),
    connection: fields.url(['postgres', 'postgresql'], 'postgres://cdc:${SINK_PASSWORD}@host:5432/warehouse'),
    /** Routing: source table → sink table. */
    tables: z.record(table(), table()).optional(),
    schemaChanges: z.enum(['evolve', 'fail'], { message: "'evolve' or 'fail'" }).optional(),
    batch: batch(),
    env: extraEnv(),
  })
  .strict();

const kafkaSink = z
  .object({
    kind: z.literal('kafka'),
    name: name().optional(),
    /** The brokers: `host:port` list (or one comma-separated string). */
    connection: z
      .union([z.array(z.string()), z.string().transform((value) => value.split(',').map((b) => b.trim()))])
      .refine((brokers) => brokers.length > 0 && brokers.every((broker) => BROKER.test(broker)), 'host:port brokers, for example [127.0.0.1:9092]'),
    topicPrefix: z.string().regex(/^[A-Za-z0-9._-]{1,200}$/, 'letters, digits, ., _ and - only').optional(),
    /** Routing: `schema.table` or `schema.*` → topic; first match wins. */
    routes: z.record(z.string().regex(/^[A-Za-z0-9_$]+\.(\*|[A-Za-z0-9_$]+)$/, 'schema.table or schema.*'), z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, 'a Kafka topic name')).optional(),
    tombstones: z.boolean().optional(),
    transactionMetadata: z.boolean().optional(),
    checkpointTopic: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, 'a Kafka topic name').optional(),
    compression: z.enum(['none', 'gzip', 'snappy', 'lz4', 'zstd'], { message: "'none', 'gzip', 'snappy', 'lz4' or 'zstd'" }).optional(),
    batch: batch(),
    env: extraEnv(),
  })
  .strict();

const relayStage = () =>
  z
    .object({ batchMax: z.number().int().positive().optional(), batchLinger: duration().optional(), env: extraEnv() })
    .strict()
    .optional();

export const pipelineFileSchema = z
  .object({
    pipeline: name(),
    partitions: z.number({ required_error: 'required: the number of partitions, for example 4' }).int().min(1).max(MAX_PARTITIONS),
    nats: z.object({ url: fields.natsUrl() }).strict(),
    etcd: z
      .object({
        url: z.string().refine((value) => value.split(',').every((url) => /^https?:\/\/[^\s/]+/.test(url.trim())), 'http(s) URLs, for example http://127.0.0.1:2379'),
      })
      .strict(),
    redis: z.object({ url: fields.url(['redis', 'rediss'], 'redis://127.0.0.1:6379') }).strict(),
    sources: z.array(sourceSchema).min(1, 'at least one source'),
    relay: z
      .object({
        reorderer: z
          .object({
            /** Processes `cdc run` starts; the partitions are dealt round-robin. */
            processes: z.number().int().positive().optional(),
            bufferMaxEvents: z.number().int().positive().optional(),
            batchMax: z.number().int().positive().optional(),
            batchLinger: duration().optional(),
            env: extraEnv(),
          })
          .strict()
          .optional(),
        dedupGate: relayStage(),
      })
      .strict()
      .optional(),
    dedup: z.object({ window: duration() }).strict().optional(),
    sinks: z.array(z.discriminatedUnion('kind', [postgresSink, kafkaSink], { errorMap: () => ({ message: "kind: 'postgres' or 'kafka'" }) })).min(1, 'at least one sink'),
    health: z
      .object({
        host: z.string().min(1).optional(),
        /** `cdc run` gives the apps consecutive health ports from this one (order: `cdc status`). */
        firstPort: z.number().int().min(1).max(65_000).optional(),
      })
      .strict()
      .optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  })
  .strict()
  .superRefine((file, context) => {
    const ids = new Set<string>();
    file.sources.forEach((source, index) => {
      if (ids.has(source.id)) context.addIssue({ code: z.ZodIssueCode.custom, path: ['sources', index, 'id'], message: `a second source with id ${source.id}` });
      ids.add(source.id);
    });
    const names = new Set<string>();
    file.sinks.forEach((sink, index) => {
      const sinkName = sink.name ?? sink.kind;
      if (names.has(sinkName)) context.addIssue({ code: z.ZodIssueCode.custom, path: ['sinks', index, 'name'], message: `a second sink named ${sinkName}: give each sink its own name` });
      names.add(sinkName);
    });
  })
  .transform((file) => ({ ...file, sinks: file.sinks.map((sink) => ({ ...sink, name: sink.name ?? sink.kind })) }));

export type PipelineFile = z.output<typeof pipelineFileSchema>;
export type PipelineSource = PipelineFile['sources'][number];
export type PipelineSink = PipelineFile['sinks'][number];

/** `sinks[1].connection` from zod's ['sinks', 1, 'connection']. */
export function fieldPath(path: readonly (string | number)[]): string {
  return path.reduce<string>((out, part) => (typeof part === 'number' ? `${out}[${part}]` : out === '' ? part : `${out}.${part}`), '') || '(file)';
}

/** Replaces `${NAME}` in every string of the tree; an unset variable is a problem at that field. */
function interpolate(value: unknown, environment: Env, path: (string | number)[], problems: { path: (string | number)[]; problem: string }[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$(\$?)\{([^}]*)\}/g, (whole, escaped: string, variable: string) => {
      if (escaped) return whole.slice(1);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(variable)) {
        problems.push({ path, problem: `\${${variable}} is not a variable name` });
        return '';
      }
      const found = environment[variable];
      if (found === undefined) problems.push({ path, problem: `references \${${variable}}, which is not set in the environment` });
      return found ?? '';
    });
  }
  if (Array.isArray(value)) return value.map((item, index) => interpolate(item, environment, [...path, index], problems));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, interpolate(item, environment, [...path, key], problems)]));
  }
  return value;
}

/** Which app reads the file: only the connections it uses need their `${VARIABLES}`. */
export interface PipelineFileReader {
  readonly app: PipelineApp;
  readonly sourceId?: string | undefined;
  readonly sinkName?: string | undefined;
}

const UNUSED_POSTGRES = 'postgres://unused.invalid/not-this-app';
const UNUSED_BROKERS = ['unused.invalid:9092'];

/**
 * An app is given only its own secrets (the reader its source's, a committer its sink's):
 * a `${VARIABLE}` it lacks in another source's or sink's `connection` or `env` is not its
 * problem. Such a field gets a placeholder this app never reads; the problem is dropped.
 * Returns false for a problem the app must hear of.
 */
function excuse(tree: unknown, path: readonly (string | number)[], reader: PipelineFileReader): boolean {
  const [section, index, field] = path;
  if ((section !== 'sources' && section !== 'sinks') || typeof index !== 'number' || (field !== 'connection' && field !== 'env')) return false;
  const items = (tree as Record<string, unknown> | null)?.[section];
  const item = Array.isArray(items) ? (items[index] as Record<string, unknown> | undefined) : undefined;
  if (!item || typeof item !== 'object') return false;
  const list = items as Record<string, unknown>[];
  const ownSource = section === 'sources' && reader.app === 'reader' && (reader.sourceId === undefined ? list.length === 1 : item['id'] === reader.sourceId);
  const ownSink = section === 'sinks' && reader.app === 'committer' && (reader.sinkName === undefined ? list.length === 1 : (item['name'] ?? item['kind']) === reader.sinkName);
  if (ownSource || ownSink) return false;
  if (field === 'env') {
    const env = item['env'] as Record<string, unknown> | undefined;
    if (env && typeof path[3] === 'string') env[path[3]] = '';
  } else item['connection'] = item['kind'] === 'kafka' ? UNUSED_BROKERS : UNUSED_POSTGRES;
  return true;
}

/**
 * Parses and checks a pipeline file's text; a ConfigError names every bad field by its path.
 * With `reader`, a `${VARIABLE}` missing from a connection that app does not use is no error.
 */
export function parsePipelineFile(text: string, environment: Env = process.env, origin = 'pipeline file', reader?: PipelineFileReader): PipelineFile {
  let tree: unknown;
  try {
    tree = parseYaml(text, { prettyErrors: true });
  } catch (error) {
    // The YAML error quotes the line, which may hold a literal password: say where only.
    const where = (error as { linePos?: { line: number; col: number }[] }).linePos?.[0];
    throw new ConfigError([{ variable: origin, problem: `not valid YAML${where ? ` (line ${where.line}, column ${where.col})` : ''}` }]);
  }
  const unresolved: { path: (string | number)[]; problem: string }[] = [];
  const resolved = interpolate(tree, environment, [], unresolved);
  const problems = unresolved.filter((p) => !reader || !excuse(resolved, p.path, reader)).map((p) => ({ variable: fieldPath(p.path), problem: p.problem }));
  const result = pipelineFileSchema.safeParse(resolved ?? {});
  if (!result.success) {
    const reported = new Set(problems.map((p) => p.variable));
    for (const issue of result.error.issues) {
      // A field whose ${VARIABLE} is missing is named once, for that.
      if (reported.has(fieldPath(issue.path))) continue;
      const message = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : issue.message;
      problems.push({ variable: fieldPath(issue.path), problem: message });
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems.map((p) => ({ variable: `${origin} ${p.variable}`, problem: p.problem })));
  return result.data;
}

export function loadPipelineFile(path: string, environment: Env = process.env, reader?: PipelineFileReader): PipelineFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError([{ variable: 'PIPELINE_FILE', problem: `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}` }]);
  }
  return parsePipelineFile(text, environment, path, reader);
}

const set = (out: Record<string, string>, variable: string, value: string | number | boolean | undefined): void => {
  if (value !== undefined) out[variable] = String(value);
};

/**
 * The variables `app` reads, from the file. The reader is one of the sources (`SOURCE_ID`,
 * needed only when there are several), a committer one of the sinks (`SINK_NAME`, likewise).
 */
export function pipelineFileEnv(file: PipelineFile, app: PipelineApp, selector: { sourceId?: string | undefined; sinkName?: string | undefined } = {}): Record<string, string> {
  const out: Record<string, string> = {};
  set(out, 'PIPELINE', file.pipeline);
  set(out, 'PARTITIONS', file.partitions);
  set(out, 'NATS_URL', file.nats.url);
  set(out, 'HEALTH_HOST', file.health?.host);
  set(out, 'LOG_LEVEL', file.logLevel);
  switch (app) {
    case 'reader': {
      const source = pick(file.sources, (s) => s.id, selector.sourceId, 'SOURCE_ID', 'sources');
      set(out, 'SOURCE_ID', source.id);
      set(out, 'SOURCE_DATABASE_URL', source.connection);
      set(out, 'TABLES', source.tables.join(','));
      set(out, 'SLOT_NAME', source.slot);
      set(out, 'PUBLICATION_NAME', source.publication);
      set(out, 'SNAPSHOT_MODE', source.snapshot);
      set(out, 'ETCD_URL', file.etcd.url);
      set(out, 'SINKS', file.sinks.map((s) => s.name).join(','));
      Object.assign(out, source.env);
      break;
    }
    case 'lamport-reorderer': {
      const stage = file.relay?.reorderer;
      set(out, 'SOURCES', file.sources.map((s) => s.id).join(','));
      set(out, 'BUFFER_MAX_EVENTS', stage?.bufferMaxEvents);
      set(out, 'BATCH_MAX', stage?.batchMax);
      set(out, 'BATCH_LINGER_MS', stage?.batchLinger);
      Object.assign(out, stage?.env);
      break;
    }
    case 'dedup-gate': {
      const stage = file.relay?.dedupGate;
      set(out, 'REDIS_URL', file.redis.url);
      set(out, 'DEDUP_WINDOW_MS', file.dedup?.window);
      set(out, 'BATCH_MAX', stage?.batchMax);
      set(out, 'BATCH_LINGER_MS', stage?.batchLinger);
      Object.assign(out, stage?.env);
      break;
    }
    case 'committer': {
      const sink = pick(file.sinks, (s) => s.name, selector.sinkName, 'SINK_NAME', 'sinks');
      set(out, 'SINK', sink.kind);
      set(out, 'SINK_NAME', sink.name);
      set(out, 'ETCD_URL', file.etcd.url);
      set(out, 'BATCH_MAX_EVENTS', sink.batch?.maxEvents);
      set(out, 'BATCH_LINGER_MS', sink.batch?.linger);
      if (sink.kind === 'postgres') {
        set(out, 'SINK_DATABASE_URL', sink.connection);
        if (sink.tables) set(out, 'TABLE_MAP', Object.entries(sink.tables).map(([from, to]) => `${from}=${to}`).join(','));
        set(out, 'SCHEMA_CHANGES', sink.schemaChanges);
      } else {
        set(out, 'KAFKA_BROKERS', sink.connection.join(','));
        set(out, 'KAFKA_TOPIC_PREFIX', sink.topicPrefix);
        if (sink.routes) set(out, 'KAFKA_TOPIC_ROUTES', Object.entries(sink.routes).map(([from, to]) => `${from}=${to}`).join(','));
        set(out, 'KAFKA_TOMBSTONES', sink.tombstones);
        set(out, 'KAFKA_TRANSACTION_METADATA', sink.transactionMetadata);
        set(out, 'KAFKA_CHECKPOINT_TOPIC', sink.checkpointTopic);
        set(out, 'KAFKA_COMPRESSION', sink.compression);
      }
      Object.assign(out, sink.env);
      break;
    }
  }
  return out;
}

function pick<T>(items: readonly T[], key: (item: T) => string, wanted: string | undefined, variable: string, section: string): T {
  if (wanted === undefined) {
    if (items.length === 1) return items[0]!;
    throw new ConfigError([{ variable, problem: `required: the file has ${items.length} ${section} (${items.map(key).join(', ')}); say which this process is` }]);
  }
  const found = items.find((item) => key(item) === wanted);
  if (!found) throw new ConfigError([{ variable, problem: `${wanted} is not one of the file's ${section} (${items.map(key).join(', ')})` }]);
  return found;
}

/**
 * The environment `app` should parse: with `PIPELINE_FILE` set, the file's variables for it
 * with every variable of `environment` over them; without, `environment` as is.
 */
export function withPipelineFile(app: PipelineApp, environment: Env = process.env): Env {
  const path = environment['PIPELINE_FILE'];
  if (path === undefined || path === '') return environment;
  const selector = { sourceId: environment['SOURCE_ID'], sinkName: environment['SINK_NAME'] };
  const file = loadPipelineFile(path, environment, { app, ...selector });
  const fromFile = pipelineFileEnv(file, app, selector);
  const merged: Record<string, string | undefined> = { ...fromFile };
  for (const [key, value] of Object.entries(environment)) if (value !== undefined) merged[key] = value;
  return merged;
}
