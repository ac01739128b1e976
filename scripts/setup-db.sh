#!/usr/bin/env bash
# Create the database, install or update the extension, and create the demo
# tenant and agent once.  The demo agent's secret is shown by the API only
# once, so it is kept in .cluster/demo-credentials (mode 0600) for make run to
# print again.
set -euo pipefail
. "$(dirname "$0")/env.sh"

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

if ! psql_q -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$AGENTIDP_DB'" | grep -q 1; then
	say "creating database $AGENTIDP_DB"
	psql_q -d postgres -c "CREATE DATABASE $AGENTIDP_DB"
fi

psql_q -d "$AGENTIDP_DB" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS agentidp;
ALTER EXTENSION agentidp UPDATE;
SQL

creds="$CLUSTER_DIR/demo-credentials"
if [ ! -s "$creds" ]; then
	say "creating demo tenant and agent"
	umask 077
	psql_q -d "$AGENTIDP_DB" -tA -F ' ' > "$creds.tmp" <<'SQL'
SELECT agentidp.create_tenant('demo') AS tenant_id \gset
SELECT agentidp.register_agent(:'tenant_id', 'demo-agent', '{read,write}',
                               '{"purpose": "make run demo"}') AS agent_id \gset
SELECT agentidp.rotate_signing_key(:'tenant_id') AS kid \gset
SELECT 'tenant_id', :'tenant_id';
SELECT 'signing_kid', :'kid';
SELECT 'agent_id', :'agent_id';
SELECT 'client_id', client_id, 'client_secret', client_secret
  FROM agentidp.create_client_secret(:'agent_id');
SQL
	# one "name value" pair per line
	awk '{ for (i = 1; i < NF; i += 2) print $i, $(i + 1) }' "$creds.tmp" > "$creds"
	rm -f "$creds.tmp"
fi
