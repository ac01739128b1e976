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

# The login role of agentidp-httpd: a member of agentidp_service, with a
# random password kept in .cluster/httpd.pgpass (mode 0600, libpq's passfile
# format) and set again on every run, so that file and role always agree.
pgpass="$CLUSTER_DIR/httpd.pgpass"
if [ ! -s "$pgpass" ]; then
	umask 077
	printf '127.0.0.1:%s:%s:agentidp_httpd:%s\n' "$AGENTIDP_PGPORT" "$AGENTIDP_DB" \
		"$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40)" > "$pgpass"
	umask 022
fi
httpd_pw=$(cut -d: -f5 "$pgpass")
psql_q -d "$AGENTIDP_DB" -v pw="$httpd_pw" <<'SQL'
SET client_min_messages = warning;
SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'agentidp_httpd') AS create_role \gset
\if :create_role
CREATE ROLE agentidp_httpd LOGIN IN ROLE agentidp_service;
\endif
ALTER ROLE agentidp_httpd LOGIN PASSWORD :'pw';
SQL
