/**
 * Fresh source and sink databases for one end-to-end test, with the testkit schema,
 * dropped afterwards (slots first: a database with a replication slot cannot be dropped).
 */
import pg from 'pg';
import { SINK_SCHEMA_SQL, SOURCE_SCHEMA_SQL } from '@cdc/testkit';
import type { TestContext } from '../harness/context.ts';

export interface Databases {
  readonly sourceUrl: string;
  readonly sinkUrl: string;
  readonly sourceDb: string;
  readonly sinkDb: string;
}

export function databaseUrl(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

async function withClient<T>(url: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}

export async function createDatabase(ctx: TestContext, name: string, schemaSql: string): Promise<string> {
  const admin = ctx.servers.postgres;
  await withClient(admin, (client) => client.query(`CREATE DATABASE ${name}`));
  ctx.defer(`drop database ${name}`, () =>
    withClient(admin, async (client) => {
      // Slots outlive their reader for a moment after a kill (PITFALLS 9): terminate, then drop.
      await client.query(
        `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`,
        [name],
      );
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, [name]);
          break;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      }
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    }),
  );
  const url = databaseUrl(admin, name);
  await withClient(url, (client) => client.query(schemaSql));
  return url;
}

export async function createSourceAndSink(ctx: TestContext, prefix: string): Promise<Databases> {
  const sourceDb = ctx.uniqueName(`${prefix}_src`).toLowerCase();
  const sinkDb = ctx.uniqueName(`${prefix}_sink`).toLowerCase();
  const sourceUrl = await createDatabase(ctx, sourceDb, SOURCE_SCHEMA_SQL);
  const sinkUrl = await createDatabase(ctx, sinkDb, SINK_SCHEMA_SQL);
  return { sourceUrl, sinkUrl, sourceDb, sinkDb };
}

/** Drops (slots first) and creates a database with a fixed name, for the demo and the bench. */
export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withClient(adminUrl, async (client) => {
    await client.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, [name]);
    await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, [name]).catch(() => undefined);
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
}

export async function recreateDatabase(adminUrl: string, name: string, schemaSql: string): Promise<string> {
  await dropDatabase(adminUrl, name);
  await withClient(adminUrl, (client) => client.query(`CREATE DATABASE ${name}`));
  const url = databaseUrl(adminUrl, name);
  await withClient(url, (client) => client.query(schemaSql));
  return url;
}

export { withClient };
