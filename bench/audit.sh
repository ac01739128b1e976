#!/usr/bin/env bash
# The audit chain's cost on writes and the speed of its verification.
#
# Writes: pgbench, one INSERT per transaction, into three tables of one
# shape in schema bench_audit: plain (no trigger), audited (the C trigger of
# agentidp.enable_audit()) and plpgsql_chain (the PL/pgSQL + pgcrypto chain
# an application would write, bench/audit/plpgsql_chain.sql), at 1, 2 and 8
# clients on one tenant and 8 clients on 8 tenants.  For each setting the
# three tables run back to back, so that they are measured close in time.
# Targets: audited/plain >= 0.65 at 1 and 2 clients on one tenant and at 8
# clients on 8 tenants; audited >= plpgsql_chain at 8 clients on one tenant.
#
# Verification: a chain of 1,000,000 rows for a fresh tenant, then
# verify_audit_chain() beside a plain read of the same rows and a SQL
# recompute of their sha256 (bench/audit/verify.sql).  Target:
# verify_audit_chain >= 1,500,000 rows/s.
#
#   bench/audit.sh [seconds per pgbench run, default 30]
#
# Runs against make run's cluster, which must be running (make run first),
# as its superuser, synchronous_commit on.  Twelve pgbench runs, so about
# 12 x seconds, plus the 1M-row chain.  Exits 1 if a chain fails to verify.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

secs=${1:-30}
[[ $secs =~ ^[1-9][0-9]*$ ]] || die "usage: bench/audit.sh [seconds per run, default 30]"
dir=bench/audit

# every session of the script, pgbench's included, commits synchronously
export PGOPTIONS="-c synchronous_commit=on"

psql -X -q -tAc 'SELECT 1' >/dev/null 2>&1 ||
	die "no PostgreSQL at $PGHOST:$PGPORT (database $PGDATABASE): run make run first"
[ "$(psql -X -tAc "SELECT to_regprocedure('agentidp.enable_audit(regclass, name[])') IS NOT NULL
					 AND to_regprocedure('agentidp.verify_audit_chain(uuid)') IS NOT NULL")" = t ] ||
	die "agentidp.enable_audit() or verify_audit_chain() missing: install the current build (make run)"

# The schema goes at the end, however the script ends.  The tenants stay, and
# so do their rows in agentidp.audit_events: the audit chain is append-only,
# its rows cannot be deleted.  That is expected; each run adds to tenants
# bench-audit-1..8 and makes one more bench-audit-verify-* tenant.
cleanup() {
	psql -X -q -c 'SET client_min_messages = warning' \
		-c 'DROP SCHEMA IF EXISTS bench_audit CASCADE' >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "setting up schema bench_audit"
psql -X -q -v ON_ERROR_STOP=1 -f "$dir/setup.sql"

run() {	# table clients tenants: prints the tps
	local table=$1 clients=$2 tenants=$3 out
	# each run starts after a checkpoint, so none of them gets one more
	# than the others
	psql -X -q -c CHECKPOINT >/dev/null
	if ! out=$(pgbench -n -M prepared -T "$secs" -c "$clients" -j $((clients < 2 ? clients : 2)) \
			-D ntenants="$tenants" -f "$dir/insert_$table.sql" 2>&1); then
		printf '%s\n' "$out" >&2
		die "pgbench failed on bench_audit.$table, $clients clients, $tenants tenants"
	fi
	local tps
	tps=$(awk '/^tps/ { printf "%.0f", $3; exit }' <<<"$out")
	[ -n "$tps" ] || { printf '%s\n' "$out" >&2; die "no tps in pgbench's output"; }
	echo "$tps"
}

read -r sync fsync < <(psql -X -tA -c 'SHOW synchronous_commit' -c 'SHOW fsync' | paste -sd ' ')
say "pgbench runs"
echo "pgbench, ${secs}s per run, prepared statements, one INSERT per transaction," \
	"synchronous_commit $sync, fsync $fsync"
printf '%-22s %11s %11s %6s %11s %6s   %s\n' setting 'plain tps' 'audited tps' ratio 'plpgsql tps' ratio target
for setting in "1 1" "2 1" "8 1" "8 8"; do
	read -r clients tenants <<<"$setting"
	p=$(run plain "$clients" "$tenants")
	a=$(run audited "$clients" "$tenants")
	c=$(run plpgsql_chain "$clients" "$tenants")
	awk -v n="$clients" -v t="$tenants" -v p="$p" -v a="$a" -v c="$c" 'BEGIN {
		name = sprintf("%d client%s, %d tenant%s", n, n > 1 ? "s" : "", t, t > 1 ? "s" : "")
		ap = p > 0 ? a / p : 0
		cp = p > 0 ? c / p : 0
		if (n == 8 && t == 1)
			target = "audited >= plpgsql: " (a >= c ? "met" : "MISSED")
		else
			target = "audited/plain >= 0.65: " (ap >= 0.65 ? "met" : "MISSED")
		printf "%-22s %11d %11d %6.2f %11d %6.2f   %s\n", name, p, a, ap, c, cp, target }'
done

# the chains written under load must verify, or the figures mean nothing
broken=0
say "verifying the chains of tenants bench-audit-1..8"
bad=$(psql -X -tA -F ' ' -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'bench-audit-' || (s.slot + 1), v.rows_checked, v.first_bad_seq, v.reason
FROM bench_audit.tenant_slots s
CROSS JOIN LATERAL agentidp.verify_audit_chain(s.tenant_id) v
WHERE v.ok IS NOT TRUE
ORDER BY s.slot;
SQL
)
if [ -n "$bad" ]; then
	broken=1
	printf 'CHAIN NOT OK (tenant, rows checked, first bad seq, reason):\n%s\n' "$bad"
else
	echo "all ok"
fi

say "verification speed, a chain of 1000000 rows"
out=$(psql -X -q -tA -v ON_ERROR_STOP=1 -v n=1000000 -f "$dir/verify.sql")
printf '%s\n' "$out"
if grep -q 'CHAIN NOT OK' <<<"$out"; then
	broken=1
fi
exit "$broken"
