#!/usr/bin/env bash
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d).
# The image's POSTGRES_HOST_AUTH_METHOD=trust adds `host all all all trust`, which
# covers logical replication connections (they name a database) but not physical
# ones (pg_basebackup, pg_receivewal, IDENTIFY_SYSTEM without a database); allow
# those too, like infra/local/servers.sh does. The entrypoint restarts the server
# after these scripts, so no reload is needed.
set -euo pipefail
cat >>"$PGDATA/pg_hba.conf" <<'HBA'
# added by infra/compose/postgres-init/10-replication-hba.sh
host    replication  all   all   trust
HBA
