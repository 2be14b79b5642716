import { ConfigError } from '@cdc/core';
import { describe, expect, it } from 'vitest';
import {
  InvalidTopicNameError,
  MAX_TOPIC_NAME_LENGTH,
  assertTopicName,
  createTopicRouter,
  parseTopicRoutes,
  topicNameProblem,
} from '../src/routing.ts';

function configProblems(run: () => unknown): string[] {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems.map((p) => `${p.variable}: ${p.problem}`);
  }
  throw new Error('expected a ConfigError');
}

describe('default topics', () => {
  it('are <prefix>.<schema>.<table>, as Debezium names them', () => {
    const router = createTopicRouter({ topicPrefix: 'fulfillment' });
    expect(router.topicFor('inventory.products_on_hand')).toBe('fulfillment.inventory.products_on_hand');
    expect(router.topicFor('public.orders')).toBe('fulfillment.public.orders');
  });

  it('put transaction metadata on <prefix>.transaction unless told otherwise', () => {
    expect(createTopicRouter({ topicPrefix: 'fulfillment' }).transactionTopic).toBe('fulfillment.transaction');
    expect(createTopicRouter({ topicPrefix: 'fulfillment', transactionTopic: 'tx-meta' }).transactionTopic).toBe('tx-meta');
  });

  it('refuse a table whose name makes an illegal topic, naming the topic and the table', () => {
    const router = createTopicRouter({ topicPrefix: 'srv' });
    let caught: unknown;
    try {
      router.topicFor('public.Bestellungen für 2024');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(InvalidTopicNameError);
    const error = caught as InvalidTopicNameError;
    expect(error.topic).toBe('srv.public.Bestellungen für 2024');
    expect(error.message).toContain('"srv.public.Bestellungen für 2024"');
    expect(error.message).toContain('public.Bestellungen für 2024');
    expect(error.retriable).toBe(false);
  });

  it('refuse a bad prefix or transaction topic at creation, listing both', () => {
    const problems = configProblems(() => createTopicRouter({ topicPrefix: 'my server', transactionTopic: '..' }));
    expect(problems).toHaveLength(2);
    expect(problems[0]).toContain('topicPrefix');
    expect(problems[0]).toContain('"my server"');
    expect(problems[1]).toContain('transactionTopic');
  });
});

describe('parseTopicRoutes', () => {
  it('reads exact tables and schema wildcards', () => {
    expect(parseTopicRoutes(' public.orders=orders-cdc , public.*=cdc.all ')).toEqual([
      { kind: 'table', schema: 'public', table: 'orders', topic: 'orders-cdc' },
      { kind: 'schema', schema: 'public', topic: 'cdc.all' },
    ]);
  });

  it('reads an empty string as no routes', () => {
    expect(parseTopicRoutes('')).toEqual([]);
    expect(parseTopicRoutes('   ')).toEqual([]);
  });

  it('lists every bad entry by its text, under the variable name', () => {
    const problems = configProblems(() =>
      parseTopicRoutes('public.orders,*.x=t,public.ord*=t,orders=t,public.a=bad topic!,public.b=,public.c=ok,public.c=again', 'ROUTES'),
    );
    expect(problems).toHaveLength(7);
    expect(problems.every((p) => p.startsWith('ROUTES: '))).toBe(true);
    for (const entry of ['public.orders', '*.x=t', 'public.ord*=t', 'orders=t', 'public.a=bad topic!', 'public.b=', 'public.c=again']) {
      expect(problems.some((p) => p.includes(JSON.stringify(entry)))).toBe(true);
    }
    expect(problems.find((p) => p.includes('public.a=bad topic!'))).toContain('"bad topic!"');
  });

  it('refuses a topic one character over the limit and accepts one at it', () => {
    const atLimit = 'a'.repeat(MAX_TOPIC_NAME_LENGTH);
    expect(parseTopicRoutes(`public.t=${atLimit}`)[0]?.topic).toBe(atLimit);
    const problems = configProblems(() => parseTopicRoutes(`public.t=${atLimit}a`));
    expect(problems[0]).toContain('250 characters');
  });
});

describe('routing with routes', () => {
  it('prefers the exact table over its schema wildcard, whatever their order', () => {
    for (const config of ['public.orders=orders-cdc,public.*=cdc.all', 'public.*=cdc.all,public.orders=orders-cdc']) {
      const router = createTopicRouter({ topicPrefix: 'srv', routes: parseTopicRoutes(config) });
      expect(router.topicFor('public.orders')).toBe('orders-cdc');
      expect(router.topicFor('public.customers')).toBe('cdc.all');
      expect(router.topicFor('sales.orders')).toBe('srv.sales.orders');
    }
  });
});

describe('topic names', () => {
  it.each([
    ['', 'empty'],
    ['.', 'reserved'],
    ['..', 'reserved'],
    ['a/b', 'only ASCII'],
    ['naïve', 'only ASCII'],
  ])('%j is illegal (%s)', (topic, problem) => {
    expect(topicNameProblem(topic)).toContain(problem);
    expect(() => assertTopicName(topic)).toThrow(InvalidTopicNameError);
  });

  it.each(['a', 'srv.public.orders', 'A-Z_0.9', '...'])('%j is legal', (topic) => {
    expect(topicNameProblem(topic)).toBeUndefined();
    expect(assertTopicName(topic)).toBe(topic);
  });
});
