/**
 * PostgreSQL formats every value as text with the session's settings, and pgoutput does
 * so with the walsender's (PITFALLS 23): a database or role with `DateStyle = 'German, DMY'`
 * sends `04.03.2024`, which a sink session with other settings reads as 3 April or refuses.
 * Every connection the pipeline opens to a source or a sink pins the settings value text
 * depends on, in its startup packet (client options beat ALTER DATABASE/ROLE … SET), and the
 * reader checks on its replication connection that the server honoured them.
 *
 * Pure: no connection here, so both PostgreSQL adapters and the test tools share it.
 */

/** The settings and the values the ChangeEvent's text form is defined by. */
export const VALUE_TEXT_SETTINGS: Readonly<Record<string, string>> = {
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  bytea_output: 'hex',
  // ≥ 1 on PostgreSQL 12+: the shortest text that reads back to the same float.
  extra_float_digits: '3',
  TimeZone: 'UTC',
  client_encoding: 'UTF8',
  // money's text follows lc_monetary; C is the one locale every server has.
  lc_monetary: 'C',
};

/** `-c name=value …` for the startup packet's `options`, spaces escaped as libpq wants. */
export function valueTextOptions(settings: Readonly<Record<string, string>> = VALUE_TEXT_SETTINGS): string {
  return Object.entries(settings)
    .map(([name, value]) => `-c ${name}=${value.replace(/\\/g, '\\\\').replace(/ /g, '\\ ')}`)
    .join(' ');
}

/**
 * A connection string's own `options` (kept, ours after them so ours win) and the string
 * without them: node-postgres lets the URL's `options` override the config's.
 */
export function pinValueText(connectionString: string): { readonly connectionString: string; readonly options: string } {
  const ours = valueTextOptions();
  let url: URL;
  try {
    url = new URL(connectionString);
  } catch {
    return { connectionString, options: ours };
  }
  const theirs = url.searchParams.get('options');
  if (theirs === null) return { connectionString, options: ours };
  url.searchParams.delete('options');
  return { connectionString: url.toString(), options: `${theirs} ${ours}` };
}

export interface SettingMismatch {
  readonly name: string;
  readonly expected: string;
  readonly actual: string | undefined;
}

/** Settings as the server reports them (`SHOW`) that differ from what value text needs. */
export function valueTextMismatches(actual: Readonly<Record<string, string | undefined>>): SettingMismatch[] {
  const mismatches: SettingMismatch[] = [];
  for (const [name, expected] of Object.entries(VALUE_TEXT_SETTINGS)) {
    const found = actual[name] ?? actual[name.toLowerCase()];
    if (!sameSetting(name, expected, found)) mismatches.push({ name, expected, actual: found });
  }
  return mismatches;
}

function sameSetting(name: string, expected: string, actual: string | undefined): boolean {
  if (actual === undefined) return false;
  const norm = (text: string): string => text.replace(/\s+/g, '').toLowerCase();
  // The output format is what matters for DateStyle; the field order only affects input of
  // ambiguous dates, which ISO text never is.
  if (name === 'DateStyle') return norm(actual).split(',')[0] === 'iso';
  if (name === 'TimeZone') return ['utc', 'etc/utc', 'zulu', 'etc/zulu', 'universal', 'etc/universal', 'gmt', 'etc/gmt'].includes(norm(actual));
  if (name === 'client_encoding') return ['utf8', 'unicode'].includes(norm(actual));
  if (name === 'extra_float_digits') return Number(actual) >= 1;
  if (name === 'lc_monetary') return ['c', 'posix'].includes(norm(actual));
  return norm(actual) === norm(expected);
}
