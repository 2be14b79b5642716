/**
 * Ordinary (non-replication) connections to the source, with failures turned into our
 * errors at the boundary: an unreachable server is retriable and says where it looked
 * (password redacted); a refusal (authentication, missing database) is not.
 */
import { UnreachableError, VALUE_TEXT_SETTINGS, pinValueText, postgresAuthError, valueTextMismatches } from '@cdc/core';
import { redactUrl } from '@cdc/runtime';
import pg from 'pg';
import { SourceRefusedError, SourceSettingsError } from './errors.ts';

export const CONNECT_TIMEOUT_MS = 5_000;

/** SQLSTATEs that mean "try again later" rather than "you are not welcome". */
const TRANSIENT_SQLSTATES = new Set(['57P03', '53300', '57P01', '57P02', '08006', '08001', '08004']);

export function sqlStateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export function toConnectError(connectionString: string, error: unknown): Error {
  const target = redactUrl(connectionString);
  const state = sqlStateOf(error);
  const detail = error instanceof Error ? error.message : String(error);
  const refused = postgresAuthError('PostgreSQL', target, error, 'check the user and password (or client certificate) of SOURCE_DATABASE_URL');
  if (refused) return refused;
  if (state !== undefined && !TRANSIENT_SQLSTATES.has(state)) {
    return new SourceRefusedError(target, `${detail} (SQLSTATE ${state})`, state, error);
  }
  return new UnreachableError(
    'PostgreSQL',
    target,
    `${detail || 'no answer'}; start PostgreSQL or fix SOURCE_DATABASE_URL`,
    error,
  );
}

/**
 * Every connection to the source, the replication one included, pins the settings value
 * text depends on (DateStyle, IntervalStyle, bytea_output, …: @cdc/core VALUE_TEXT_SETTINGS).
 */
export function clientConfig(connectionString: string, applicationName: string): pg.ClientConfig {
  const pinned = pinValueText(connectionString);
  return {
    connectionString: pinned.connectionString,
    options: pinned.options,
    application_name: applicationName,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    keepAlive: true,
  };
}

/** A connected client; an idle client's 'error' is reported through its next query instead of crashing. */
export async function connectSource(connectionString: string, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(connectionString, applicationName));
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => undefined);
    throw toConnectError(connectionString, error);
  }
  return client;
}

/** Runs `work` on a short-lived connection. */
export async function withSource<T>(connectionString: string, applicationName: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connectSource(connectionString, applicationName);
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** `"schema"."table"` with embedded quotes doubled. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Checks on `client` (a plain or a replication connection: SHOW is a replication command
 * too) that the server formats values as pinned; SourceSettingsError if it does not.
 */
export async function assertValueTextSettings(client: Pick<pg.Client, 'query'>, connectionString: string, where: string): Promise<void> {
  const actual: Record<string, string | undefined> = {};
  for (const name of Object.keys(VALUE_TEXT_SETTINGS)) {
    const result = await client.query<Record<string, string>>(`SHOW ${name}`);
    const row = result.rows[0];
    actual[name] = row === undefined ? undefined : Object.values(row)[0];
  }
  const mismatches = valueTextMismatches(actual);
  if (mismatches.length > 0) throw new SourceSettingsError(redactUrl(connectionString), mismatches, where);
}
