#!/usr/bin/env bash
# What row-level security through agentidp's helpers costs a query, beside
# a policy with the tenant written in as a constant and a table without
# RLS, all measured in one invocation.
#
# Three tables of the same 1,000,000 rows in schema bench_rls
# (tenant_id uuid, id bigint primary key, payload text), ten tenants, row id
# belonging to the tenant of slot id % 10, so that every page holds rows of
# every tenant; slot 0 is tenant bench-rls, whose agent's token the runs use
# (bench/rls/setup.sql):
#
#   helpers   agentidp.enable_tenant_isolation(..., 'tenant_id', 'docs:read'):
#             tenant_id = (SELECT agentidp.current_tenant())
#             AND (SELECT agentidp.has_scope('docs:read'))
#   constant  RLS enabled and forced, one policy tenant_id = '<bench-rls>'
#   plain     no RLS; the queries name the tenant themselves
#
# pgbench (-n -M prepared -r -T seconds -c 1 -j 1) runs seven scripts of
# bench/rls/, as the role bench_rls (PGOPTIONS=-c role=bench_rls: a member of
# agentidp_agent that owns nothing; the superuser bypasses RLS), each
# transaction BEGIN; SELECT agentidp.authenticate(token); <query>; END:
#
#   authenticate  SELECT 1 for the query: the floor of the others
#   full scan     count(*) of the table: bench-rls's 100,000 rows of the
#                 1,000,000 read (plain: WHERE tenant_id = the tenant)
#   point lookup  one of bench-rls's rows by id (plain: and its tenant)
#
# Two rounds, the second in the reverse order of the first, so that drift
# weighs alike on each run.  The query's own latency comes from pgbench -r
# (the average of each statement of the script), authenticate's too.
#
# Targets: the full scan's query takes at most 1.30 times as long on
# helpers as on constant; the point lookup's at most 1.10 times.  Both
# ratios are of the query statement's mean latency over the two rounds;
# the ratios of the whole transaction (constant tps / helpers tps) and to
# plain are printed beside them without target.
#
#   bench/rls.sh [seconds per pgbench run, default 20]
#
# Runs against make run's cluster, which must be running (make run first):
# the set-up as its superuser, the check, the plans and the runs as
# bench_rls.  Fourteen pgbench runs, so about 14 x seconds, plus the
# loading of the 3,000,000 rows on the first run (a few seconds; about
# 330 MB with their keys, kept for later runs).  Before the runs it checks
# the identity as bench_rls (bench/rls/check.sql) and exits 1 if helpers
# does not show exactly bench-rls's rows with the token and none without;
# then it prints the plans of the queries (bench/rls/plans.sql) and whether
# helpers and constant have one plan shape.
#
# Each run gets a fresh token (bench/rls/token.sql), valid for the tenant's
# access_token_lifetime (600 s by default); the script stops with an error
# if that is shorter than seconds + 60.
#
# Leaves in the database: the schema bench_rls with its three tables, the
# role bench_rls, tenant bench-rls with its key and agent bench-rls (all
# reused by later runs), and the rows that the run's fifteen tokens add to
# agentidp.audit_events: the audit chain is append-only.  The run's client
# secret is revoked when the script ends, however it ends.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

secs=${1:-20}
[[ $secs =~ ^[1-9][0-9]*$ ]] || die "usage: bench/rls.sh [seconds per run, default 20]"
dir=bench/rls
rows=100000

psql -X -q -tAc 'SELECT 1' >/dev/null 2>&1 ||
	die "no PostgreSQL at $PGHOST:$PGPORT (database $PGDATABASE): run make run first"
[ "$(psql -X -tAc "SELECT to_regprocedure('agentidp.authenticate(text)') IS NOT NULL
					 AND to_regprocedure('agentidp.enable_tenant_isolation(regclass, name, text, text)') IS NOT NULL
					 AND to_regrole('agentidp_agent') IS NOT NULL")" = t ] ||
	die "agentidp.authenticate() or enable_tenant_isolation() missing: install the current build (make run)"

work=$(mktemp -d)
client_id=
cleanup() {
	if [ -n "$client_id" ]; then
		psql -X -q -v ON_ERROR_STOP=1 -v cid="$client_id" >/dev/null 2>&1 <<'SQL' || true
SELECT agentidp.revoke_client_secret(:'cid');
SQL
	fi
	rm -rf "$work"
}
trap cleanup EXIT

say "setting up schema bench_rls (1000000 rows per table, made once), tenant and agent bench-rls, role bench_rls"
read -r tenant client_id client_secret < <(psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 -f "$dir/setup.sql") || true
[ -n "${client_secret:-}" ] || die "setup.sql returned no client secret"

token=
issue() {	# a fresh access token into $token, valid for one more run
	local lifetime
	read -r token lifetime < <(psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 \
		-v client_id="$client_id" -v client_secret="$client_secret" -f "$dir/token.sql") || true
	[ -n "${lifetime:-}" ] || die "token.sql returned no token"
	if ! [[ $lifetime =~ ^[0-9]+$ ]] || [ "$lifetime" -lt $((secs + 60)) ]; then
		die "tokens of tenant bench-rls stay valid ${lifetime}s, a run needs $((secs + 60))s: use fewer seconds per run"
	fi
}

# the sessions of the check, the plans and the runs take the role; the
# others (set-up, tokens) stay the superuser's
app="-c role=bench_rls"

say "checking the identity as bench_rls"
issue
read -r anonymous helpers other constant plain mine role < <(PGOPTIONS="$app" psql -X -q -tA -F ' ' \
	-v ON_ERROR_STOP=1 -v token="$token" -v t="$tenant" -f "$dir/check.sql") || true
echo "role ${role:-?}; helpers without identity: ${anonymous:-?} rows; with the token: helpers ${helpers:-?}" \
	"(${other:-?} of other tenants), constant ${constant:-?}, plain of bench-rls ${plain:-?};" \
	"current_tenant() is bench-rls: ${mine:-?}"
[ "${role:-}" = bench_rls ] || die "the check did not run as bench_rls (bench/rls/check.sql)"
[ "${anonymous:-}" = 0 ] || die "bench_rls.helpers shows ${anonymous:-?} rows without authenticate(), not 0"
if [ "${mine:-}" != t ] || [ "${helpers:-}" != "$rows" ] || [ "${other:-}" != 0 ]; then
	die "with the token, bench_rls.helpers shows ${helpers:-?} rows (${other:-?} of other tenants), not bench-rls's $rows"
fi
if [ "${constant:-}" != "$rows" ] || [ "${plain:-}" != "$rows" ]; then
	die "the baselines do not count bench-rls's $rows rows: constant ${constant:-?}, plain ${plain:-?}"
fi

say "plans of the queries, as bench_rls with the identity (generic plans, as the runs use)"
plans=$(PGOPTIONS="$app" psql -X -q -v ON_ERROR_STOP=1 -v token="$token" -v t="$tenant" -f "$dir/plans.sql")
printf '%s\n' "$plans"
shape() {	# n: the node lines of the n-th plan of $plans, without init plans, names, figures
	awk -v n="$1" '
		/^-- / { k++; next }
		k != n || /QUERY PLAN|^-+$|^\([0-9]+ rows?\)$/ { next }
		/InitPlan/ { getline; next }
		/->|Workers Planned/ || !seen++ {
			sub(/^[ ]*(->)?[ ]*/, ""); sub(/ \(actual.*/, ""); sub(/ using [^ ]+/, ""); sub(/ on [^ ]+/, "")
			printf "%s%s", sep, $0; sep = " / "
		}' <<<"$plans"
}
for pair in "1 2 full scan" "4 5 point lookup"; do
	read -r a b what <<<"$pair"
	sa=$(shape "$a")
	sb=$(shape "$b")
	if [ "$sa" = "$sb" ]; then
		echo "$what: helpers and constant have one plan shape: $sa"
	else
		echo "$what: PLANS DIFFER: helpers $sa; constant $sb"
	fi
done

declare -A tps lat auth query
run() {	# name round: the pgbench run of $dir/name.sql, into tps, lat, auth, query [name,round]
	local name=$1 round=$2 out
	issue
	say "round $round: $name, ${secs}s"
	if ! out=$(PGOPTIONS="$app" pgbench -n -M prepared -r -T "$secs" -c 1 -j 1 -D token="$token" -D tenant="$tenant" \
			-f "$dir/$name.sql" 2>&1); then
		printf '%s\n' "$out" >&2
		die "pgbench failed on $dir/$name.sql"
	fi
	# figures as strings: awk formats them, whatever the locale
	read -r "tps[$name,$round]" "lat[$name,$round]" "auth[$name,$round]" "query[$name,$round]" < <(awk '
		/^tps/ { t = $3 }
		/^latency average/ { l = $4 }
		/^statement latencies/ { s = 1; next }
		s && /agentidp\.authenticate/ { a = $1 }
		s && (/bench_rls\./ || /SELECT 1;/) { q = $1 }
		END { if (t != "" && l != "" && a != "" && q != "") printf "%.2f %.3f %.3f %.3f\n", t, l, a, q }' <<<"$out") || true
	[ -n "${query[$name,$round]:-}" ] ||
		{ printf '%s\n' "$out" >&2; die "no tps, latency or statement latencies in pgbench's output"; }
}

names=(authenticate scan_helpers scan_constant scan_plain point_helpers point_constant point_plain)
for name in "${names[@]}"; do
	run "$name" 1
done
for ((i = ${#names[@]} - 1; i >= 0; i--)); do
	run "${names[i]}" 2
done

read -r workers jit buffers cache < <(psql -X -tA -c 'SHOW max_parallel_workers_per_gather' -c 'SHOW jit' \
	-c 'SHOW shared_buffers' -c 'SHOW agentidp.verified_token_cache' | paste -sd ' ')
echo
echo "pgbench, ${secs}s per run, 1 client, prepared statements, as role bench_rls, two rounds" \
	"(the second in reverse order)"
echo "max_parallel_workers_per_gather $workers, jit $jit, shared_buffers $buffers," \
	"agentidp.verified_token_cache $cache"
echo "latencies in ms, means of the two rounds: txn the transaction's, auth its authenticate()'s," \
	"query its query's (SELECT 1 for authenticate)"
printf '%-15s %9s %9s %8s %8s %8s\n' run 'tps r1' 'tps r2' 'txn ms' 'auth ms' 'query ms'
for name in "${names[@]}"; do
	awk -v n="$name" -v t1="${tps[$name,1]}" -v t2="${tps[$name,2]}" -v l1="${lat[$name,1]}" -v l2="${lat[$name,2]}" \
		-v a1="${auth[$name,1]}" -v a2="${auth[$name,2]}" -v q1="${query[$name,1]}" -v q2="${query[$name,2]}" 'BEGIN {
		printf "%-15s %9.1f %9.1f %8.3f %8.3f %8.3f\n", n, t1, t2, (l1 + l2) / 2, (a1 + a2) / 2, (q1 + q2) / 2 }'
done

echo
printf '%-48s %6s %8s %8s   %s\n' ratio mean 'round 1' 'round 2' target
for what in scan point; do
	for base in constant plain; do
		awk -v what="$what" -v base="$base" \
			-v h1="${query[${what}_helpers,1]}" -v h2="${query[${what}_helpers,2]}" \
			-v b1="${query[${what}_$base,1]}" -v b2="${query[${what}_$base,2]}" \
			-v th1="${tps[${what}_helpers,1]}" -v th2="${tps[${what}_helpers,2]}" \
			-v tb1="${tps[${what}_$base,1]}" -v tb2="${tps[${what}_$base,2]}" 'BEGIN {
			label = what == "scan" ? "full scan" : "point lookup"
			limit = what == "scan" ? 1.30 : 1.10
			r = (b1 + b2 > 0) ? (h1 + h2) / (b1 + b2) : 0
			r1 = (b1 > 0) ? h1 / b1 : 0
			r2 = (b2 > 0) ? h2 / b2 : 0
			printf "%-48s %6.3f %8.3f %8.3f", label ", query time helpers/" base, r, r1, r2
			if (base == "constant")
				printf "   <= %.2f: %s", limit, (r > 0 && r <= limit) ? "PASS" : "FAIL"
			printf "\n"
			# the whole transaction: its time is 1 / tps
			r = (th1 + th2 > 0) ? (tb1 + tb2) / (th1 + th2) : 0
			r1 = (th1 > 0) ? tb1 / th1 : 0
			r2 = (th2 > 0) ? tb2 / th2 : 0
			printf "%-48s %6.3f %8.3f %8.3f\n", label ", transaction time helpers/" base, r, r1, r2
		}'
	done
done
