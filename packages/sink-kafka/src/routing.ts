/**
 * Which Kafka topic a table's change events go to.
 *
 * Default, as Debezium's PostgreSQL connector: `<prefix>.<schema>.<table>`, and transaction
 * metadata on `<prefix>.transaction`. Routes override the default per table or per schema:
 *
 *   routes := [ route { ',' route } ]             whitespace around items is ignored
 *   route  := schema '.' ( table | '*' ) '=' topic
 *
 * e.g. `public.orders=orders-cdc,public.*=cdc.all`. An exact table beats its schema's
 * wildcard whatever the order; naming the same pattern twice is an error. Table names are
 * split at the first '.' (a ChangeEvent's `table` is `schema.table`), so a schema whose
 * quoted name contains a dot cannot be routed by schema.
 *
 * Kafka accepts topic names of 1..249 characters from [a-zA-Z0-9._-], except '.' and '..'.
 * Unlike Debezium, which replaces illegal characters with '_' (and can so merge two tables
 * into one topic), we refuse the name and say which one.
 */
import { CdcError, ConfigError } from '@cdc/core';

const LEGAL_TOPIC = /^[a-zA-Z0-9._-]+$/;
export const MAX_TOPIC_NAME_LENGTH = 249;

/** A topic name Kafka would refuse. */
export class InvalidTopicNameError extends CdcError {
  constructor(
    readonly topic: string,
    readonly problem: string,
    readonly table?: string,
  ) {
    super(`invalid Kafka topic name ${JSON.stringify(topic)}${table ? ` for table ${table}` : ''}: ${problem}`, {
      code: 'INVALID_TOPIC_NAME',
      retriable: false,
      context: { topic, ...(table ? { table } : {}) },
    });
  }
}

/** Why Kafka would refuse `topic`, or undefined when it is legal. */
export function topicNameProblem(topic: string): string | undefined {
  if (topic === '') return 'empty';
  if (topic === '.' || topic === '..') return "'.' and '..' are reserved";
  if (topic.length > MAX_TOPIC_NAME_LENGTH) return `${topic.length} characters, at most ${MAX_TOPIC_NAME_LENGTH} allowed`;
  if (!LEGAL_TOPIC.test(topic)) return 'only ASCII letters, digits, ".", "_" and "-" are allowed';
  return undefined;
}

export function assertTopicName(topic: string, table?: string): string {
  const problem = topicNameProblem(topic);
  if (problem !== undefined) throw new InvalidTopicNameError(topic, problem, table);
  return topic;
}

export type TopicRoute =
  | { readonly kind: 'table'; readonly schema: string; readonly table: string; readonly topic: string }
  | { readonly kind: 'schema'; readonly schema: string; readonly topic: string };

/**
 * Parses a routes string. Every bad entry is reported at once, each named by its text,
 * in one ConfigError under `variable`.
 */
export function parseTopicRoutes(text: string, variable = 'KAFKA_TOPIC_ROUTES'): TopicRoute[] {
  const routes: TopicRoute[] = [];
  const problems: { variable: string; problem: string }[] = [];
  const seen = new Set<string>();
  const entries = text.trim() === '' ? [] : text.split(',');
  for (const raw of entries) {
    const entry = raw.trim();
    const bad = (problem: string): void => {
      problems.push({ variable, problem: `entry ${JSON.stringify(entry)}: ${problem}` });
    };
    const equals = entry.indexOf('=');
    if (equals < 0) {
      bad("expected '<schema>.<table>=<topic>' or '<schema>.*=<topic>'");
      continue;
    }
    const pattern = entry.slice(0, equals).trim();
    const topic = entry.slice(equals + 1).trim();
    const dot = pattern.indexOf('.');
    const schema = dot < 0 ? '' : pattern.slice(0, dot);
    const table = dot < 0 ? '' : pattern.slice(dot + 1);
    if (schema === '' || table === '') {
      bad("the pattern must be '<schema>.<table>' or '<schema>.*'");
      continue;
    }
    if (schema.includes('*') || (table.includes('*') && table !== '*')) {
      bad("'*' may only stand for the whole table name, as in 'public.*'");
      continue;
    }
    const topicProblem = topicNameProblem(topic);
    if (topicProblem !== undefined) {
      bad(`topic ${JSON.stringify(topic)} is invalid: ${topicProblem}`);
      continue;
    }
    if (seen.has(pattern)) {
      bad(`${pattern} is routed more than once`);
      continue;
    }
    seen.add(pattern);
    routes.push(table === '*' ? { kind: 'schema', schema, topic } : { kind: 'table', schema, table, topic });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return routes;
}

export interface TopicRouterOptions {
  /** Debezium's `topic.prefix`: the logical server name, first part of every default topic. */
  readonly topicPrefix: string;
  readonly routes?: readonly TopicRoute[];
  /** Full name of the transaction metadata topic; default `<prefix>.transaction`. */
  readonly transactionTopic?: string;
}

export interface TopicRouter {
  /** Topic for a `schema.table`; throws InvalidTopicNameError if the default name is illegal. */
  topicFor(table: string): string;
  readonly transactionTopic: string;
}

export function defaultTopic(topicPrefix: string, table: string): string {
  return `${topicPrefix}.${table}`;
}

/** Checks the prefix and transaction topic up front (ConfigError), then routes by lookup. */
export function createTopicRouter(options: TopicRouterOptions): TopicRouter {
  const problems: { variable: string; problem: string }[] = [];
  const prefixProblem = topicNameProblem(options.topicPrefix);
  if (prefixProblem !== undefined) problems.push({ variable: 'topicPrefix', problem: `${JSON.stringify(options.topicPrefix)}: ${prefixProblem}` });
  const transactionTopic = options.transactionTopic ?? `${options.topicPrefix}.transaction`;
  const transactionProblem = topicNameProblem(transactionTopic);
  if (transactionProblem !== undefined) {
    problems.push({ variable: 'transactionTopic', problem: `${JSON.stringify(transactionTopic)}: ${transactionProblem}` });
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const byTable = new Map<string, string>();
  const bySchema = new Map<string, string>();
  for (const route of options.routes ?? []) {
    if (route.kind === 'table') byTable.set(`${route.schema}.${route.table}`, route.topic);
    else bySchema.set(route.schema, route.topic);
  }

  // Every event asks: a table's topic is resolved (and its name checked) once. A name
  // Kafka refuses is not remembered, so each of its events is refused with the reason.
  const resolved = new Map<string, string>();
  return {
    transactionTopic,
    topicFor(table: string): string {
      const known = resolved.get(table);
      if (known !== undefined) return known;
      const routed = byTable.get(table);
      if (routed !== undefined) return routed;
      const dot = table.indexOf('.');
      const schemaRouted = dot < 0 ? undefined : bySchema.get(table.slice(0, dot));
      if (schemaRouted !== undefined) return schemaRouted;
      const topic = assertTopicName(defaultTopic(options.topicPrefix, table), table);
      if (resolved.size >= 10_000) resolved.clear();
      resolved.set(table, topic);
      return topic;
    },
  };
}
