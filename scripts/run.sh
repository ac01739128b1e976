#!/usr/bin/env bash
# make run: install what is missing, build, install, start the private
# cluster and Redis, set up the database, and show how to go on.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$ROOT"

scripts/deps.sh
say "building"
make -s -j2 >/dev/null
make -s install >/dev/null
scripts/cluster.sh start
scripts/setup-db.sh

creds="$CLUSTER_DIR/demo-credentials"
get() { awk -v k="$1" '$1 == k { print $2 }' "$creds"; }

cat <<MSG

agentidp is running.
  PostgreSQL  127.0.0.1:$AGENTIDP_PGPORT (database $AGENTIDP_DB, data in .cluster/)
  Redis       127.0.0.1:$AGENTIDP_REDIS_PORT

Connect:
  scripts/psql
  (or: PGPASSFILE=.cluster/pgpass psql -h 127.0.0.1 -p $AGENTIDP_PGPORT -U postgres $AGENTIDP_DB)

The demo tenant "demo" has an agent "demo-agent" (credentials kept in
.cluster/demo-credentials, readable by you alone):
  client_id      $(get client_id)
  client_secret  $(get client_secret)

Try, in scripts/psql:
  SELECT agentidp.check_client_secret('$(get client_id)', '$(get client_secret)');
  SELECT name, client_id, status, allowed_scopes FROM agentidp.agents;
  SELECT agentidp.jwks(tenant_id) FROM agentidp.tenants WHERE name = 'demo';
  -- then the quick start of README.md

Stop everything with: make stop
MSG
