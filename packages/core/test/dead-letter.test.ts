import { describe, expect, test } from 'vitest';
import { deadLetterId } from '../src/index.ts';

describe('deadLetterId', () => {
  test('names stage, sink and event: two sinks refusing one event get two ids', () => {
    const pg = deadLetterId({ stage: 'committer', sink: 'postgres', eventId: 'e1' });
    const kafka = deadLetterId({ stage: 'committer', sink: 'kafka', eventId: 'e1' });
    expect(pg).toBe('dlq:committer:postgres:e1');
    expect(kafka).toBe('dlq:committer:kafka:e1');
    expect(deadLetterId({ stage: 'committer', sink: 'kafka', eventId: 'e1' })).toBe(kafka);
  });

  test('stages without a sink keep stage and event; no event id, no dedupe id', () => {
    expect(deadLetterId({ stage: 'reader', eventId: 'e1' })).toBe('dlq:reader:e1');
    expect(deadLetterId({ stage: 'reader', eventId: 'e1' })).not.toBe(deadLetterId({ stage: 'gate', eventId: 'e1' }));
    expect(deadLetterId({ stage: 'reader' })).toBeUndefined();
  });
});
