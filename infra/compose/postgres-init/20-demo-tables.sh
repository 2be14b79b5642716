#!/usr/bin/env bash
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d), after
# 10-replication-hba.sh. The demo pipeline of docker-compose.yml reads public.orders and
# public.customers of the `postgres` database (the reader's TABLES) and its PostgreSQL
# committer writes them into the `sink` database on the same server (SINK_DATABASE_URL).
#
# The sink tables have the same columns and primary keys as the source ones: the committer
# upserts on the primary key. Everything else it needs it creates itself at start or at the
# first change of a table — its bookkeeping tables (cdc_checkpoint, cdc_owner) and the
# version-guard columns _cdc_lsn/_cdc_seq on each sink table (packages/sink-pg/src/schema.ts)
# — and the reader creates its publication and replication slot.
set -euo pipefail

psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --no-password)

"${psql[@]}" --dbname postgres -c 'CREATE DATABASE sink'

for database in postgres sink; do
  "${psql[@]}" --dbname "$database" <<'SQL'
CREATE TABLE public.customers (
  id         bigint      PRIMARY KEY,
  name       text        NOT NULL,
  email      text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.orders (
  id          bigint        PRIMARY KEY,
  customer_id bigint        NOT NULL,
  amount      numeric(12,2) NOT NULL,
  status      text          NOT NULL DEFAULT 'new',
  created_at  timestamptz   NOT NULL DEFAULT now()
);
SQL
done
