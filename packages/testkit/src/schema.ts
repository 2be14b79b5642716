/**
 * The demo/test schema: three watched tables chosen to hit the hard cases —
 *   accounts      single-column key, a large `note` (out-of-line TOAST, sent as
 *                 "unchanged" when an UPDATE does not touch it), key changes;
 *   order_lines   composite primary key;
 *   audit_events  REPLICA IDENTITY FULL (full before-images);
 * plus `noise`, an unwatched table that writes WAL while the watched ones are idle.
 *
 * `change_history` is filled by triggers on BOTH sides (source: every change the
 * workload commits; sink: every change the committer applies), so exactly-once is
 * checked by comparing two multisets of (table, key, version, kind) — not by trusting
 * the pipeline's own counters. A key change is logged as delete(old) + upsert(new),
 * which is how the pipeline carries it.
 */
export const WATCHED_TABLES = ['public.accounts', 'public.order_lines', 'public.audit_events'] as const;

export const TABLES_SQL = `
CREATE TABLE IF NOT EXISTS accounts (
  id bigint PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, note text, version int NOT NULL);
ALTER TABLE accounts ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS order_lines (
  order_id bigint, line_no int, sku text NOT NULL, qty int NOT NULL, version int NOT NULL,
  PRIMARY KEY (order_id, line_no));
CREATE TABLE IF NOT EXISTS audit_events (
  id bigint PRIMARY KEY, kind text NOT NULL, payload text, version int NOT NULL);
ALTER TABLE audit_events REPLICA IDENTITY FULL;
`;

const HISTORY_SQL = `
CREATE TABLE IF NOT EXISTS change_history (
  id bigserial PRIMARY KEY, tbl text NOT NULL, key text NOT NULL, version int NOT NULL, kind text NOT NULL);
CREATE OR REPLACE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_key text; new_key text;
BEGIN
  IF TG_TABLE_NAME = 'order_lines' THEN
    IF TG_OP <> 'INSERT' THEN old_key := OLD.order_id || '/' || OLD.line_no; END IF;
    IF TG_OP <> 'DELETE' THEN new_key := NEW.order_id || '/' || NEW.line_no; END IF;
  ELSE
    IF TG_OP <> 'INSERT' THEN old_key := OLD.id::text; END IF;
    IF TG_OP <> 'DELETE' THEN new_key := NEW.id::text; END IF;
  END IF;
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_key IS DISTINCT FROM new_key) THEN
    INSERT INTO change_history (tbl, key, version, kind) VALUES (TG_TABLE_NAME, old_key, OLD.version, 'delete');
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO change_history (tbl, key, version, kind) VALUES (TG_TABLE_NAME, new_key, NEW.version, 'upsert');
  END IF;
  RETURN NULL;
END $$;
`;

function triggersSql(): string {
  return ['accounts', 'order_lines', 'audit_events']
    .map(
      (table) => `
DROP TRIGGER IF EXISTS ${table}_history ON ${table};
CREATE TRIGGER ${table}_history AFTER INSERT OR UPDATE OR DELETE ON ${table}
  FOR EACH ROW EXECUTE FUNCTION log_change();`,
    )
    .join('\n');
}

/** Source: the watched tables, the noise table and the history triggers. */
export const SOURCE_SCHEMA_SQL = `${TABLES_SQL}
CREATE TABLE IF NOT EXISTS noise (id bigserial PRIMARY KEY, filler text);
${HISTORY_SQL}
${triggersSql()}`;

/** Sink: the same tables (the committer adds its guard columns) and the same history triggers. */
export const SINK_SCHEMA_SQL = `${TABLES_SQL}
${HISTORY_SQL}
${triggersSql()}`;
