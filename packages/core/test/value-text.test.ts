import { describe, expect, test } from 'vitest';
import { pinValueText, valueTextMismatches, valueTextOptions } from '../src/index.ts';

describe('value text settings', () => {
  test('the startup options pin every setting, spaces escaped', () => {
    const options = valueTextOptions();
    expect(options).toContain('-c DateStyle=ISO,\\ MDY');
    for (const name of ['IntervalStyle=postgres', 'bytea_output=hex', 'extra_float_digits=3', 'TimeZone=UTC', 'client_encoding=UTF8']) {
      expect(options).toContain(`-c ${name}`);
    }
  });

  test("a URL's own options are kept before ours (ours win), and leave the URL", () => {
    const pinned = pinValueText('postgres://u:p@h:5432/db?sslmode=disable&options=-c%20statement_timeout%3D5s');
    expect(pinned.connectionString).toBe('postgres://u:p@h:5432/db?sslmode=disable');
    expect(pinned.options.startsWith('-c statement_timeout=5s -c DateStyle=')).toBe(true);
    expect(pinValueText('postgres://h/db').connectionString).toBe('postgres://h/db');
  });

  test('every setting that changes value text is checked', () => {
    const good = { DateStyle: 'ISO, DMY', IntervalStyle: 'postgres', bytea_output: 'hex', extra_float_digits: '3', TimeZone: 'Etc/UTC', client_encoding: 'UTF8', lc_monetary: 'C' };
    expect(valueTextMismatches(good)).toEqual([]);
    const cases: [string, string][] = [
      ['DateStyle', 'German, DMY'],
      ['DateStyle', 'SQL, MDY'],
      ['DateStyle', 'Postgres, YMD'],
      ['IntervalStyle', 'sql_standard'],
      ['IntervalStyle', 'iso_8601'],
      ['bytea_output', 'escape'],
      ['extra_float_digits', '0'],
      ['TimeZone', 'Europe/Berlin'],
      ['client_encoding', 'LATIN1'],
      ['lc_monetary', 'de_DE.UTF-8'],
    ];
    for (const [name, value] of cases) {
      expect(valueTextMismatches({ ...good, [name]: value }).map((m) => m.name), `${name}=${value}`).toEqual([name]);
    }
    expect(valueTextMismatches({}).length).toBe(7);
  });
});
