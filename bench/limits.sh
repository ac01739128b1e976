#!/usr/bin/env bash
# What token rate limits cost issuance: agentidp.issue_token() under pgbench
# at 2 clients, in five set-ups side by side in one invocation:
#
#   none             agent bench and tenant bench-tokens "unlimited": no check
#   shared memory    the client limited to 1000000/s, which no run comes near,
#                    its tenant unlimited (the defaults' shape): every grant
#                    checks the client's bucket in the shared-memory table,
#                    and none is refused
#   redis            the same limit kept in make run's Redis over TCP
#                    (agentidp.redis_url = redis://127.0.0.1:6499/0 for the
#                    run's sessions, by PGOPTIONS): one EVALSHA per grant
#   redis unix       the same Redis through its Unix socket
#                    (unix://<cluster>/redis/redis.sock), as a Redis on the
#                    database's own host is best reached
#   shared memory 2, the tenant limited to 1000000/s too: each check takes
#   redis 2,         two buckets at once
#   redis unix 2
#
# Targets: a limit in shared memory costs at most 5% of the tps without a
# limit, in Redis at most 20%; each is judged for one bucket and for two,
# and Redis's over each transport.
#
#   bench/limits.sh [seconds per pgbench run, default 15] [rounds, default 3]
#
# Runs against make run's cluster and its Redis, which must be running (make
# run first), as the cluster's superuser, synchronous_commit on.  Each round
# runs the seven set-ups in turn (pgbench -n -M prepared -T seconds -c 2
# -j 2), each run after a CHECKPOINT; a set-up's figure is the median of its
# rounds, so that the machine's drift during the invocation falls on all
# alike, and each round starts one set-up later than the one before.  About
# 7 x rounds x seconds: 5.5 minutes at the defaults.
#
# Every grant of the limited runs is checked, none refused: a refusal would
# fail pgbench, and the script stops with an error if a Redis run's grants
# were not each one EVALSHA (Redis's own command count), or if
# agentidp.rate_limit_status() counts a Redis failure during a run (a grant
# let through unchecked would flatter Redis).
#
# The client is tokens.sh's, made by its set-up (bench/tokens/setup.sql),
# and so is the grant's script (bench/tokens/issue_token.sql); between the
# runs bench/limits/limit.sql sets the two limits.  Leaves in the
# database: tenant bench-tokens, its key and agent bench (reused by later
# runs, their limits set back to "unlimited" at the end), and the audit row
# of every token issued.  The run's client secret is revoked and the schema
# bench_tokens dropped at the end, however the script ends.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

secs=${1:-15}
rounds=${2:-3}
[[ $secs =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ ]] ||
	die "usage: bench/limits.sh [seconds per run, default 15] [rounds, default 3]"
dir=bench/limits
tokens=bench/tokens
limit=1000000/s
redis_url="redis://127.0.0.1:$AGENTIDP_REDIS_PORT/0"
redis_socket="$CLUSTER_DIR/redis/redis.sock"
redis_unix_url="unix://$redis_socket"

# every session of the script, pgbench's included, commits synchronously
export PGOPTIONS="-c synchronous_commit=on"

psql -X -q -tAc 'SELECT 1' >/dev/null 2>&1 ||
	die "no PostgreSQL at $PGHOST:$PGPORT (database $PGDATABASE): run make run first"
[ "$(psql -X -tAc "SELECT count(DISTINCT proname) FROM pg_proc
					 WHERE pronamespace = to_regnamespace('agentidp')
					   AND proname IN ('issue_token', 'set_token_rate_limit', 'rate_limit_status')")" = 3 ] ||
	die "agentidp.set_token_rate_limit() or rate_limit_status() missing: install the current build (make run)"
[ "$(psql -X -tAc "SELECT backend FROM agentidp.rate_limit_status()")" = "shared memory" ] ||
	die "rate limits are not in shared memory: agentidp must be in shared_preload_libraries (make run)"
command -v redis-cli >/dev/null || die "redis-cli is missing (Debian package redis-tools)"
evalsha_calls() {
	redis-cli -h 127.0.0.1 -p "$AGENTIDP_REDIS_PORT" INFO commandstats 2>/dev/null |
		sed -nE 's/^cmdstat_(evalsha|eval):calls=([0-9]+),.*/\2/p' | awk '{ n += $1 } END { print n + 0 }'
}
[ "$(redis-cli -h 127.0.0.1 -p "$AGENTIDP_REDIS_PORT" PING 2>/dev/null)" = PONG ] ||
	die "no Redis at 127.0.0.1:$AGENTIDP_REDIS_PORT: run make run first"
[ "$(redis-cli -s "$redis_socket" PING 2>/dev/null)" = PONG ] ||
	die "make run's Redis has no socket $redis_socket: restart it (scripts/cluster.sh stop, then make run)"

tenant=
client_id=
set_limit() {	# client's tenant's
	psql -X -q -v ON_ERROR_STOP=1 -v lim="$1" -v tenant_lim="$2" -v t="$tenant" -f "$dir/limit.sql"
}
cleanup() {
	if [ -n "$client_id" ]; then
		set_limit unlimited unlimited >/dev/null 2>&1 || true
		psql -X -q -v ON_ERROR_STOP=1 -v cid="$client_id" >/dev/null 2>&1 <<'SQL' || true
SELECT agentidp.revoke_client_secret(:'cid');
SQL
	fi
	psql -X -q -c 'SET client_min_messages = warning' \
		-c 'DROP SCHEMA IF EXISTS bench_tokens CASCADE' >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "setting up tenant bench-tokens, agent bench (bench/tokens/setup.sql)"
read -r client_id client_secret < <(psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 -f "$tokens/setup.sql")
[ -n "${client_secret:-}" ] || die "setup.sql returned no client secret"
tenant=$(psql -X -tAc "SELECT tenant_id FROM agentidp.tenants WHERE name = 'bench-tokens'")

# the limit in force, as the token endpoint reports it; with fail-open off,
# so that an unreachable Redis stops the script here
limit_in_force() {	# [PGOPTIONS addition]
	PGOPTIONS="$PGOPTIONS -c agentidp.rate_limit_fail_open=off ${1:-}" psql -X -q -tA -v ON_ERROR_STOP=1 \
		-v cid="$client_id" -v secret="$client_secret" <<'SQL'
SELECT COALESCE(r #>> '{headers,RateLimit-Limit}', 'none')
FROM agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'cid', 'client_secret', :'secret')) AS r;
SQL
}

redis_failures() {
	psql -X -tAc 'SELECT redis_failures FROM agentidp.rate_limit_status()'
}

declare -A tps lat all
run() {	# name client-limit tenant-limit [PGOPTIONS addition]: one pgbench run into tps[name,round], lat[name,round]
	local name=$1 lim=$2 tenant_lim=$3 options=${4:-} out failures calls n want
	set_limit "$lim" "$tenant_lim"
	want=${lim%%/*}
	[ "$lim" = unlimited ] && want=none
	[ "$(limit_in_force "$options")" = "$want" ] || die "$name: the client's limit is not $lim"
	psql -X -q -c CHECKPOINT >/dev/null
	failures=$(redis_failures)
	calls=$(evalsha_calls)
	say "round $round: $name, 2 clients, ${secs}s"
	if ! out=$(PGOPTIONS="$PGOPTIONS $options" pgbench -n -M prepared -T "$secs" -c 2 -j 2 \
			-D client_id="$client_id" -D client_secret="$client_secret" \
			-f "$tokens/issue_token.sql" 2>&1); then
		printf '%s\n' "$out" >&2
		die "pgbench failed on $name"
	fi
	[ "$(redis_failures)" = "$failures" ] || die "$name: Redis did not answer some checks"
	n=$(awk '/^number of transactions actually processed/ { print $NF; exit }' <<<"$out")
	calls=$(( $(evalsha_calls) - calls ))
	if [[ $name == redis* || $name == unix* ]] && [ "$calls" -lt "$n" ]; then
		die "$name: $n grants but $calls script calls in Redis"
	fi
	tps[$name,$round]=$(awk '/^tps/ { printf "%.0f", $3; exit }' <<<"$out")
	lat[$name,$round]=$(awk '/^latency average/ { print $4; exit }' <<<"$out")
	[ -n "${tps[$name,$round]}" ] || { printf '%s\n' "$out" >&2; die "no tps in pgbench's output"; }
	all[$name]="${all[$name]:-}${all[$name]:+ }${tps[$name,$round]}"
}

median() {	# numbers as arguments
	printf '%s\n' "$@" | LC_ALL=C sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# each round starts one set-up later, so that a drift within a round (the
# audit table grows with every token) does not always fall on the same ones
setups=(
	"none unlimited unlimited"
	"shm $limit unlimited"
	"redis $limit unlimited -c agentidp.redis_url=$redis_url"
	"unix $limit unlimited -c agentidp.redis_url=$redis_unix_url"
	"shm2 $limit $limit"
	"redis2 $limit $limit -c agentidp.redis_url=$redis_url"
	"unix2 $limit $limit -c agentidp.redis_url=$redis_unix_url"
)
for round in $(seq "$rounds"); do
	for i in "${!setups[@]}"; do
		read -r name lim tenant_lim options <<<"${setups[(i + round - 1) % ${#setups[@]}]}"
		run "$name" "$lim" "$tenant_lim" "$options"
	done
done

read -r sync fsync < <(psql -X -tA -c 'SHOW synchronous_commit' -c 'SHOW fsync' | paste -sd ' ')
echo
echo "issue_token under pgbench, 2 clients, ${secs}s per run, $rounds rounds, prepared," \
	"synchronous_commit $sync, fsync $fsync; limits of $limit"
printf '%-16s %9s %11s   %s\n' limit 'tps' 'latency ms' 'tps of each round'
declare -A med
for row in "none:none" "shm:shared memory" "redis:redis" "unix:redis unix" "shm2:shared memory 2" \
		"redis2:redis 2" "unix2:redis unix 2"; do
	name=${row%%:*}
	lats=()
	for r in $(seq "$rounds"); do lats+=("${lat[$name,$r]}"); done
	# shellcheck disable=SC2086
	med[$name]=$(median ${all[$name]})
	printf '%-16s %9s %11s   %s\n' "${row#*:}" "${med[$name]}" "$(median "${lats[@]}")" "${all[$name]}"
done

awk -v none="${med[none]}" -v shm="${med[shm]}" -v redis="${med[redis]}" -v unix="${med[unix]}" \
	-v shm2="${med[shm2]}" -v redis2="${med[redis2]}" -v unix2="${med[unix2]}" '
	function target(what, value, max) {
		cost = none > 0 ? 1 - value / none : 1
		printf "%-40s %5.3f   cost %5.1f%%   target <= %d%%: %s\n", what, (none > 0 ? value / none : 0),
			100 * cost, max, (cost <= max / 100 ? "met" : "MISSED")
	}
	BEGIN {
		target("shared memory / no limit, the client", shm, 5)
		target("redis / no limit, the client", redis, 20)
		target("redis unix / no limit, the client", unix, 20)
		target("shared memory / no limit, client+tenant", shm2, 5)
		target("redis / no limit, client+tenant", redis2, 20)
		target("redis unix / no limit, client+tenant", unix2, 20)
	}'
