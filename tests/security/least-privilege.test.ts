/**
 * Least privilege on PostgreSQL, end to end: the reader runs as a role with REPLICATION
 * and SELECT on the published tables only (the publication and the `_cdc` bookkeeping
 * schema made by an administrator), the committer as a role that owns nothing — DML on
 * the sink tables and its two bookkeeping tables, SCHEMA_CHANGES=fail. The workload
 * reaches the sink exactly once. A reader role that would have to create the publication
 * stops with one error naming the privilege and the statement to run.
 */
import { setupSource, SourcePrivilegeError } from '@cdc/pg-source';
import { createLogger } from '@cdc/runtime';
import { BOOKKEEPING_DDL, GUARD_LSN, GUARD_SEQ } from '@cdc/sink-pg';
import { runWorkload, verifySourceAgainstSink, WATCHED_TABLES } from '@cdc/testkit';
import { describe, expect, test, type TestContext } from '../harness/index.ts';
import { waitForSinkToCatchUp } from '../e2e/convergence.ts';
import { createSourceAndSink, withClient } from '../e2e/databases.ts';
import { PipelineProcesses } from '../e2e/pipeline.ts';

const PASSWORD = 'Least-Priv-Pw-5521';

/** A login role dropped after the test (after its databases: deferred first, so it runs last). */
async function role(ctx: TestContext, name: string, attributes: string): Promise<void> {
  ctx.defer(`drop role ${name}`, () => withClient(ctx.servers.postgres, (client) => client.query(`DROP ROLE IF EXISTS ${name}`)));
  await withClient(ctx.servers.postgres, (client) => client.query(`CREATE ROLE ${name} LOGIN ${attributes} PASSWORD '${PASSWORD}'`));
}

function asRole(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.username = name;
  parsed.password = PASSWORD;
  return parsed.toString();
}

/** The reader's grants (README: Security): SELECT on the published tables, its own `_cdc` schema. */
function readerGrants(reader: string, publication: string): string {
  const tables = WATCHED_TABLES.join(', ');
  return `
    GRANT USAGE ON SCHEMA public TO ${reader};
    GRANT SELECT ON ${tables} TO ${reader};
    CREATE PUBLICATION ${publication} FOR TABLE ${tables};
    CREATE SCHEMA IF NOT EXISTS _cdc AUTHORIZATION ${reader};`;
}

/** The committer's grants: DML on the (pre-made) sink tables and its bookkeeping, nothing owned. */
function committerGrants(committer: string): string {
  const tables = WATCHED_TABLES.join(', ');
  return `
    ${BOOKKEEPING_DDL}
    ${WATCHED_TABLES.map((table) => `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${GUARD_LSN} pg_lsn, ADD COLUMN IF NOT EXISTS ${GUARD_SEQ} integer;`).join('\n')}
    GRANT USAGE ON SCHEMA public TO ${committer};
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ${tables} TO ${committer};
    GRANT SELECT, INSERT, UPDATE ON public.cdc_checkpoint, public.cdc_owner TO ${committer};
    -- Only for this test's sink: its history triggers run as the writing role.
    GRANT INSERT ON change_history TO ${committer};
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${committer};`;
}

describe('least privilege', () => {
  test('the demo workload runs exactly once with a REPLICATION+SELECT reader role and a committer role that owns nothing', { timeout: 300_000 }, async ({ ctx }) => {
    const pipelineName = ctx.uniqueName('lpriv').toLowerCase();
    const reader = `${pipelineName}_reader`;
    const committer = `${pipelineName}_committer`;
    await role(ctx, reader, 'REPLICATION');
    await role(ctx, committer, '');
    const dbs = await createSourceAndSink(ctx, 'lpriv');
    const publication = `cdc_${pipelineName}_src1`;
    await withClient(dbs.sourceUrl, (client) => client.query(readerGrants(reader, publication)));
    await withClient(dbs.sinkUrl, (client) => client.query(committerGrants(committer)));
    // Neither role owns a table it reads or writes.
    const owners = await withClient(dbs.sourceUrl, async (client) => (await client.query<{ owner: string }>(`SELECT DISTINCT tableowner AS owner FROM pg_tables WHERE schemaname = 'public'`)).rows.map((row) => row.owner));
    expect(owners).not.toContain(reader);

    const pipeline = await PipelineProcesses.start({
      pipeline: pipelineName,
      partitions: 2,
      sources: [{ id: 'src1', databaseUrl: asRole(dbs.sourceUrl, reader), tables: WATCHED_TABLES }],
      sinkUrl: asRole(dbs.sinkUrl, committer),
      servers: ctx.servers,
      reorderers: 1,
      extraEnv: { SCHEMA_CHANGES: 'fail' },
    });
    ctx.defer('stop pipeline', () => pipeline.stop());
    await runWorkload({ databaseUrl: dbs.sourceUrl, totalChanges: 1_500, clients: 2, seed: 16 });
    const caughtUp = await waitForSinkToCatchUp({ sourceUrls: [dbs.sourceUrl], sinkUrl: dbs.sinkUrl, timeoutMs: 120_000 });
    expect(caughtUp.caughtUp).toBe(true);
    await pipeline.stop();
    const report = await verifySourceAgainstSink(dbs.sourceUrl, dbs.sinkUrl);
    expect(report.ok, report.summary).toBe(true);
    expect(caughtUp.applied).toBe(caughtUp.committed);
  });

  test('a REPLICATION+SELECT role without a publication gets one error naming the missing privilege and the CREATE PUBLICATION to run', async ({ ctx }) => {
    const name = ctx.uniqueName('lpriv').toLowerCase();
    const reader = `${name}_reader`;
    await role(ctx, reader, 'REPLICATION');
    const dbs = await createSourceAndSink(ctx, 'lpriv');
    await withClient(dbs.sourceUrl, (client) => client.query(`GRANT SELECT ON ${WATCHED_TABLES.join(', ')} TO ${reader}; CREATE SCHEMA IF NOT EXISTS _cdc AUTHORIZATION ${reader};`));
    const error = await setupSource({
      connectionString: asRole(dbs.sourceUrl, reader),
      tables: WATCHED_TABLES,
      publicationName: `cdc_${name}`,
      slotName: `cdc_${name}`,
      logger: createLogger({ app: 'test', level: 'silent' }),
    }).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(SourcePrivilegeError);
    expect((error as Error).message).toContain(`may not create publication cdc_${name}`);
    expect((error as Error).message).toContain(`CREATE PUBLICATION "cdc_${name}" FOR TABLE "public"."accounts", "public"."order_lines", "public"."audit_events";`);
    expect((error as Error).message).not.toContain(PASSWORD);
  });
});
