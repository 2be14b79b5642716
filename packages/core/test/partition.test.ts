import { describe, expect, it } from 'vitest';
import { partitionOf } from '../src/index.ts';

/** The definition partitionOf must keep (moving a key to another partition breaks per-key order across an upgrade). */
function reference(table: string, key: readonly (string | null)[], partitions: number): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(`${table}\u0000${JSON.stringify(key)}`, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return (hash >>> 0) % partitions;
}

describe('partitionOf', () => {
  it('equals FNV-1a of `<table>\\0<key JSON>` for every kind of key value (escapes, non-ASCII, NULL, several columns)', () => {
    const values = ['', '0', '42', '-7', 'abc', 'a"b', 'a\\b', 'tab\there', 'line\nbreak', '\u0000', '\u007f', 'é', 'ü漢字', '😀', '\ud800', 'x'.repeat(300), '2026-12-03 12:00:00+00', '{"json":1}'];
    const tables = ['public.t', 'public.audit_events', 'sch.tâble', ''];
    let checked = 0;
    for (const table of tables) {
      for (const a of values) {
        for (const partitions of [1, 4, 7, 16]) {
          for (const key of [[a], [a, '1'], [null, a], [a, null, a]]) {
            expect(partitionOf(table, key, partitions), `${table} ${JSON.stringify(key)} / ${partitions}`).toBe(reference(table, key, partitions));
            checked += 1;
          }
        }
      }
      expect(partitionOf(table, [], 4)).toBe(reference(table, [], 4));
    }
    // Many ordinary keys spread over the partitions as before.
    for (let i = 0; i < 20_000; i++) {
      const key = [String(i * 7919)];
      expect(partitionOf('public.bench', key, 4)).toBe(reference('public.bench', key, 4));
    }
    expect(checked).toBe(tables.length * values.length * 4 * 4);
  });
});
