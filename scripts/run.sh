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
scripts/cluster.sh httpd-start

creds="$CLUSTER_DIR/demo-credentials"
get() { awk -v k="$1" '$1 == k { print $2 }' "$creds"; }

cat <<MSG

agentidp is running.
  PostgreSQL  127.0.0.1:$AGENTIDP_PGPORT (database $AGENTIDP_DB, data in .cluster/)
  Redis       127.0.0.1:$AGENTIDP_REDIS_PORT
  HTTP        http://127.0.0.1:$AGENTIDP_HTTP_PORT (agentidp-httpd, log in .cluster/httpd.log)

Connect:
  scripts/psql
  (or: PGPASSFILE=.cluster/pgpass psql -h 127.0.0.1 -p $AGENTIDP_PGPORT -U postgres $AGENTIDP_DB)

The demo tenant "demo" has an agent "demo-agent" (credentials kept in
.cluster/demo-credentials, readable by you alone):
  client_id      $(get client_id)
  client_secret  $(get client_secret)

Get a token over HTTP (OAuth2 client credentials, client_secret_basic):
  curl -s -u '$(get client_id):$(get client_secret)' \\
    -d grant_type=client_credentials -d scope=read \\
    http://127.0.0.1:$AGENTIDP_HTTP_PORT/t/demo/oauth/token
The tenant's key set and metadata (docs/http.md):
  curl -s http://127.0.0.1:$AGENTIDP_HTTP_PORT/t/demo/.well-known/jwks.json
  curl -s http://127.0.0.1:$AGENTIDP_HTTP_PORT/.well-known/oauth-authorization-server/t/demo

Try, in scripts/psql:
  SELECT agentidp.check_client_secret('$(get client_id)', '$(get client_secret)');
  SELECT name, client_id, status, allowed_scopes FROM agentidp.agents;
  SELECT agentidp.jwks(tenant_id) FROM agentidp.tenants WHERE name = 'demo';
  -- then the quick start of README.md

Stop everything with: make stop
MSG
