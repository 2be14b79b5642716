/**
 * `cdc verify <file>`: equal tables verify (several key-range chunks, a composite key, an
 * empty table); a difference planted in the sink — a changed value, a deleted row, an extra
 * row past the source's last key — makes it exit 1 naming those rows.
 */
import { WATCHED_TABLES } from '@cdc/testkit';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSourceAndSink, withClient } from '../e2e/databases.ts';
import { describe, expect, test } from '../harness/index.ts';
import { cdc } from './support.ts';

const ROWS = `
INSERT INTO accounts (id, owner, balance, note, version) SELECT i, 'owner ' || i, i * 10, repeat('n', i), 1 FROM generate_series(1, 95) i;
INSERT INTO order_lines (order_id, line_no, sku, qty, version) SELECT o, l, 'sku-' || o || '-' || l, l, 1 FROM generate_series(1, 8) o, generate_series(1, 5) l;
`;

describe('cdc verify', () => {
  test('equal tables verify; a changed, a missing and an extra sink row are found and named, exit 1', async ({ ctx }) => {
    const dbs = await createSourceAndSink(ctx, 'verify');
    await withClient(dbs.sourceUrl, (client) => client.query(ROWS));
    await withClient(dbs.sinkUrl, (client) => client.query(ROWS));
    const dir = mkdtempSync(join(tmpdir(), 'cdc-verify-'));
    const file = join(dir, 'pipeline.yaml');
    writeFileSync(
      file,
      [
        'pipeline: verify',
        'partitions: 2',
        `nats: { url: "${ctx.servers.nats}" }`,
        `etcd: { url: "${ctx.servers.etcd}" }`,
        `redis: { url: "${ctx.servers.redis}" }`,
        `sources: [{ id: src1, connection: "${dbs.sourceUrl}", tables: [${WATCHED_TABLES.join(', ')}] }]`,
        'sinks: [{ kind: postgres, connection: "${VERIFY_SINK_URL}" }]',
        '',
      ].join('\n'),
    );
    const env = { VERIFY_SINK_URL: dbs.sinkUrl };

    const equal = await cdc(['verify', file, '--chunk-rows', '10', '--recheck', '0'], env);
    expect(equal.stdout).toContain('VERIFIED: source == sink: 3 table(s), 135 rows compared by hash in 16 chunks');
    expect(equal.code).toBe(0);

    await withClient(dbs.sinkUrl, (client) =>
      client.query(`UPDATE accounts SET balance = balance + 1 WHERE id = 42;
                    DELETE FROM order_lines WHERE order_id = 3 AND line_no = 2;
                    INSERT INTO accounts (id, owner, balance, note, version) VALUES (1000, 'ghost', 0, NULL, 1);`),
    );
    const differs = await cdc(['verify', file, '--chunk-rows', '10', '--recheck', '0'], env);
    expect(differs.code).toBe(1);
    expect(differs.stdout).toContain('DIFFERENT postgres: public.accounts (id)=(42) (values differ)');
    expect(differs.stdout).toContain('EXTRA postgres: public.accounts (id)=(1000) (in the sink, not the source)');
    expect(differs.stdout).toContain('MISSING postgres: public.order_lines (order_id, line_no)=(3, 2) (in the source, not the sink)');
    expect(differs.stdout).toMatch(/MISMATCH: 2 table\(s\) differ: postgres:public\.accounts, postgres:public\.order_lines; first: DIFFERENT postgres: public\.accounts \(id\)=\(42\)/);

    const json = await cdc(['verify', file, '--json', '--recheck', '0'], env);
    expect(json.code).toBe(1);
    const result = JSON.parse(json.stdout) as { ok: boolean; tables: { table: string; sourceRows: number; sinkRows: number; differences: { kind: string; key: Record<string, string> }[] }[] };
    expect(result.ok).toBe(false);
    const accounts = result.tables.find((t) => t.table === 'public.accounts')!;
    expect({ source: accounts.sourceRows, sink: accounts.sinkRows }).toEqual({ source: 95, sink: 96 });
    expect(accounts.differences).toEqual([
      { table: 'public.accounts', key: { id: '42' }, kind: 'different' },
      { table: 'public.accounts', key: { id: '1000' }, kind: 'extra' },
    ]);
    // The sink URL's password (none here) and the variable's value are never printed in errors either.
    const unreachable = await cdc(['verify', file], { VERIFY_SINK_URL: 'postgres://cdc:hunter2@127.0.0.1:1/none' });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stdout).toContain('cannot reach the sink postgres at');
    expect(unreachable.stdout).not.toContain('hunter2');
  });
});
