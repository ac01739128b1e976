#!/usr/bin/env bash
# Throughput of agentidp.check_client_secret(), measured side by side with a
# baseline: the plain index lookup of the same client's row.  The ratio says
# what hashing, constant-time comparison and the function call cost over
# the lookup that any authentication needs.
#
#   bench/check_client_secret.sh [seconds per run, default 10] [clients, default 2]
#
# Runs against make run's cluster (started if needed), as the unprivileged
# service role, with prepared statements as a token endpoint would use.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

secs=${1:-10}
clients=${2:-2}
scripts/run.sh >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# a tenant with 1000 agents, one secret each, so lookups hit a real index
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
DO $$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_service') THEN
		CREATE ROLE bench_service LOGIN IN ROLE agentidp_service;
	END IF;
END $$;
SQL
if ! psql -X -tAc "SELECT 1 FROM agentidp.tenants WHERE name = 'bench'" | grep -q 1; then
	psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT agentidp.create_tenant('bench') AS t \gset
SELECT count(*) FROM (SELECT agentidp.register_agent(:'t', 'bench-' || i) FROM generate_series(1, 1000) i) s \g /dev/null
SQL
fi
# a fresh secret for one agent (earlier runs' are revoked first)
cred=$(psql -X -tA -F ' ' <<'SQL'
SELECT agentidp.revoke_client_secret(client_id) FROM agentidp.agents WHERE name = 'bench-500' \g /dev/null
SELECT client_id, client_secret FROM agentidp.create_client_secret(
	(SELECT agent_id FROM agentidp.agents WHERE name = 'bench-500'));
SQL
)
read -r client_id client_secret <<<"$cred"

cat > "$work/check.sql" <<SQL
SELECT agentidp.check_client_secret('$client_id', '$client_secret');
SQL
# the baseline runs as the superuser: the service role may not read tables
cat > "$work/lookup.sql" <<SQL
SELECT agent_id FROM agentidp.agents WHERE client_id = '$client_id' AND status = 'active';
SQL

run() {
	local user=$1 file=$2
	PGUSER=$user pgbench -n -M prepared -T "$secs" -c "$clients" -j "$clients" -f "$file" 2>&1 |
		awk '/^tps/ { printf "%.0f", $3 }'
}

# the service role logs in over the socket: peer auth would need an OS user,
# so give it the superuser's password file entry under its own name
pw=$(cut -d: -f5 "$PGPASSFILE")
psql -X -q -c "ALTER ROLE bench_service PASSWORD '$pw'"
printf '127.0.0.1:%s:*:bench_service:%s\n' "$AGENTIDP_PGPORT" "$pw" >> "$work/pgpass"
cat "$PGPASSFILE" >> "$work/pgpass"
chmod 600 "$work/pgpass"
export PGPASSFILE="$work/pgpass"

echo "pgbench, $clients clients, ${secs}s per run, prepared statements"
# alternate the two, twice, so that noise hits both alike
for round in 1 2; do
	b=$(run postgres "$work/lookup.sql")
	c=$(run bench_service "$work/check.sql")
	awk -v r="$round" -v b="$b" -v c="$c" 'BEGIN {
		printf "round %d: index lookup %8d tps   check_client_secret %8d tps   ratio %.2f\n", r, b, c, c / b }'
done
