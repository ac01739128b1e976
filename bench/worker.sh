#!/usr/bin/env bash
# The maintenance's costs.
#
# Webhook delivery: a receiver on 127.0.0.1 that answers at once
# (bench/worker/receiver.py), a tenant subscribed to agent.created, and
# as many events as agents registered; then one timed
# agentidp.deliver_webhooks() call delivers them all, at the default batch
# size (20) and at 100.  Target: 500 events/s or more.
#
# Incremental audit verification: a tenant with a chain of base rows (an
# audited table, agentidp.enable_audit()), verified once; then, in turn,
# batches of new rows of growing size, each followed by one timed
# agentidp.verify_audit_increment().  Its time per new row should stay
# flat whatever the chain's length, and the fixed cost of a run with no
# new rows is one index probe per tenant.  Beside it, the full
# verify_audit_chain() of the same tenant, whose cost follows the chain.
#
#   bench/worker.sh [base rows, default 1000000] [events, default 5000]
#
# Runs against make run's cluster, which must be running (make run first),
# as its superuser.  Leaves the tenants bench-worker-<time> and
# bench-webhooks-<time>-<batch> with their audit rows (append-only) and
# agents behind; the table goes.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

base=${1:-1000000}
events=${2:-5000}
[[ $base =~ ^[1-9][0-9]*$ && $events =~ ^[1-9][0-9]*$ ]] ||
	die "usage: bench/worker.sh [base rows, default 1000000] [events, default 5000]"

psql -X -q -tAc 'SELECT 1' >/dev/null 2>&1 ||
	die "no PostgreSQL at $PGHOST:$PGPORT (database $PGDATABASE): run make run first"
[ "$(psql -X -tAc "SELECT to_regprocedure('agentidp.verify_audit_increment(integer)') IS NOT NULL
					 AND to_regprocedure('agentidp.deliver_webhooks(bigint, interval)') IS NOT NULL")" = t ] ||
	die "agentidp.verify_audit_increment() or deliver_webhooks() missing: install the current build (make run)"

receiver_pid=
portfile=$(mktemp)
cleanup() {
	[ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
	rm -f "$portfile"
	psql -X -q -c 'SET client_min_messages = warning' \
		-c 'DROP SCHEMA IF EXISTS bench_worker CASCADE' >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "webhooks: $events events to a receiver on 127.0.0.1 that answers at once"
python3 bench/worker/receiver.py "$portfile" &
receiver_pid=$!
for _ in $(seq 50); do [ -s "$portfile" ] && break; sleep 0.1; done
[ -s "$portfile" ] || die "the receiver did not start"
url="http://127.0.0.1:$(cat "$portfile")/hook"
printf '%-12s %10s %10s %12s\n' "batch size" delivered ms "events/s"
for batch in 20 100; do
	pending=$(psql -X -q -tA -v ON_ERROR_STOP=1 -v name="bench-webhooks-$(date +%s)-$batch" \
		-v url="$url" -v n="$events" -f bench/worker/events.sql | tail -n 1)
	[ "$pending" = "$events" ] || die "expected $events pending deliveries, found $pending"
	read -r delivered ms < <(psql -X -q -tA -v ON_ERROR_STOP=1 -v batch="$batch" \
		-f bench/worker/deliver.sql | tail -n 1)
	printf '%-12s %10s %10s %12s\n' "$batch" "$delivered" "$ms" \
		"$(awk -v n="$delivered" -v ms="$ms" 'BEGIN { printf "%.0f", n * 1000 / ms }')"
done
echo

tenant_name="bench-worker-$(date +%s)"
say "a chain of $base rows for tenant $tenant_name"
tenant=$(psql -X -q -tA -v ON_ERROR_STOP=1 -v name="$tenant_name" -v base="$base" -f bench/worker/setup.sql | tail -n 1)

# one timed statement in a session of its own: milliseconds
timed() {
	psql -X -q -tA -v ON_ERROR_STOP=1 -v tenant="$tenant" -v n="${2:-0}" \
		-c 'SET client_min_messages = warning' -f "bench/worker/$1.sql" | tail -n 1
}

say "first incremental run: every tenant's chain not yet verified is walked once"
first=$(timed verify_increment)
tenants=$(psql -X -tAc 'SELECT count(*) FROM agentidp.tenants')
printf '  %s ms (%s tenants)\n' "$first" "$tenants"

printf '\n%-28s %12s %14s\n' "new rows since the last run" "ms per run" "us per new row"
for n in 0 1000 10000 100000; do
	[ "$n" -gt 0 ] && timed add_rows "$n" >/dev/null
	ms=$(timed verify_increment)
	if [ "$n" -gt 0 ]; then
		per=$(awk -v ms="$ms" -v n="$n" 'BEGIN { printf "%.2f", ms * 1000 / n }')
	else
		per=-
	fi
	printf '%-28s %12s %14s\n' "$n" "$ms" "$per"
done

full=$(timed verify_full)
rows=$(psql -X -tAc "SELECT count(*) FROM agentidp.audit_events WHERE tenant_id = '$tenant'")
printf '\nfull verify_audit_chain of the tenant: %s ms for %s rows (%s us per row)\n' "$full" "$rows" \
	"$(awk -v ms="$full" -v n="$rows" 'BEGIN { printf "%.2f", ms * 1000 / n }')"
