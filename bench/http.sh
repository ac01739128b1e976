#!/usr/bin/env bash
# agentidp-httpd under wrk, beside two Express token endpoints written for
# this benchmark (bench/baselines/), all measured in one invocation:
#
#   agentidp token   POST /t/bench-http/oauth/token of agentidp-httpd,
#                    client_credentials with client_secret_basic: the
#                    tenant's ES256 key, one audit row per token
#   agentidp jwks    GET /t/bench-http/.well-known/jwks.json
#   express-good     the same grant in Node/Express done well: SHA-256
#                    secret hash compared in constant time, ES256 with
#                    node:crypto KeyObjects, one audit INSERT (pg pool,
#                    prepared statements)
#   express-naive    the same grant as seed systems build it: bcrypt cost
#                    10, RS256 with jsonwebtoken, one audit INSERT
#
# All commit synchronously (synchronous_commit on): a token is answered
# once its audit row is durable.
#
# Targets: agentidp's tokens/s >= 1.5 x express-good's and >= 100 x
# express-naive's; agentidp's token p99 <= 10 ms; jwks >= 20000 req/s; the
# daemon's RSS <= 20 MiB during the token and jwks runs.  A missed target is
# printed as MISSED and does not change the exit status; a response other
# than 200, or a socket error, in any run makes the script exit 1.
#
#   bench/http.sh [seconds per run, default 30] [connections, default 16]
#
# Needs make run's cluster and its agentidp-httpd on 127.0.0.1:8499 (make
# run starts both), node and npm, and wrk (installed with apt-get when
# missing and run as root).  The baselines run on this machine, one Node
# process each (no cluster module: the database and wrk share the cores),
# on ports the system picks, each started only for the benchmark and
# stopped when the script ends, however it ends; their npm packages are
# installed from the lock files (npm ci) when missing.
#
# wrk -t2 -c<connections> --latency --timeout 10s, after a 3 s warm-up of
# the same target and a CHECKPOINT: each run `seconds` long, express-naive's at most 10 s
# (it serves about 40 tokens/s).  bench/http/token.lua sends the grant,
# bench/http/status.lua the GET; both count every response that is not a
# 200 and print one summary line (requests/s, p50 and p99 from wrk's
# latency histogram).  The daemon's RSS is sampled every second during
# its two runs (ps -o rss=); the table shows the largest sample.
#
# Leaves in the database: tenant bench-http with its key and agent bench
# (reused by later runs), and the audit row of every token issued, warm-up
# included: the audit chain is append-only, its rows cannot be deleted.
# The run's client secret is revoked and the schema bench_baselines (the
# baselines' clients and audit rows) dropped when the script ends.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

secs=${1:-30}
conns=${2:-16}
[[ $secs =~ ^[1-9][0-9]*$ && $conns =~ ^[1-9][0-9]*$ ]] ||
	die "usage: bench/http.sh [seconds per run, default 30] [connections, default 16]"
naive_secs=$((secs < 10 ? secs : 10))
warm=3
threads=$((conns < 2 ? 1 : 2))
dir=bench/http
http="http://127.0.0.1:$AGENTIDP_HTTP_PORT"
tenant=bench-http

psql -X -q -tAc 'SELECT 1' >/dev/null 2>&1 ||
	die "no PostgreSQL at $PGHOST:$PGPORT (database $PGDATABASE): run make run first"
[ "$(psql -X -tAc "SELECT to_regprocedure('agentidp.token_endpoint(jsonb)') IS NOT NULL
					 AND to_regprocedure('agentidp.http_jwks(text)') IS NOT NULL")" = t ] ||
	die "agentidp.token_endpoint() or http_jwks() missing: install the current build (make run)"
[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$http/healthz" || true)" = 200 ] ||
	die "agentidp-httpd does not answer on $http/healthz: start it (make run starts it next to the cluster)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	die "node and npm are needed for the baselines in bench/baselines/"
fi
if ! command -v wrk >/dev/null; then
	[ "$(id -u)" -eq 0 ] || die "wrk is missing: install it (apt-get install wrk, as root)"
	say "installing wrk"
	apt-get install -y wrk >/dev/null 2>&1 ||
		{ apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } ||
		die "apt-get install wrk failed"
fi

# The daemon, for its RSS: the PID file that make run's daemon writes,
# else the process listening on the port, else the only agentidp-httpd.
daemon_pid() {
	local pid
	pid=$(cat "$CLUSTER_DIR/httpd.pid" 2>/dev/null || true)
	if [ -z "$pid" ] || [ "$(ps -o comm= -p "$pid" 2>/dev/null)" != agentidp-httpd ]; then
		pid=$(ss -ltnpH "sport = :$AGENTIDP_HTTP_PORT" 2>/dev/null |
			sed -n 's/.*"agentidp-httpd",pid=\([0-9]*\),.*/\1/p' | head -n 1)
	fi
	if [ -z "$pid" ]; then
		pid=$(pidof agentidp-httpd 2>/dev/null || true)
		[[ $pid =~ ^[0-9]+$ ]] || pid=
	fi
	echo "$pid"
}
httpd_pid=$(daemon_pid)
[ -n "$httpd_pid" ] || echo "warning: agentidp-httpd's process not found: its RSS is not measured" >&2

work=$(mktemp -d)
client_id=
baseline_pids=()
cleanup() {
	local pid
	for pid in "${baseline_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${baseline_pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [ -n "$client_id" ]; then
		psql -X -q -v ON_ERROR_STOP=1 -v cid="$client_id" >/dev/null 2>&1 <<'SQL' || true
SELECT agentidp.revoke_client_secret(:'cid');
SQL
	fi
	psql -X -q -c 'SET client_min_messages = warning' \
		-c 'DROP SCHEMA IF EXISTS bench_baselines CASCADE' >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# npm writes node_modules/.package-lock.json when it installs: install
# again when that is missing or older than the lock file
for app in express-naive express-good; do
	d=bench/baselines/$app
	if [ ! -f "$d/node_modules/.package-lock.json" ] || [ "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]; then
		say "npm ci in $d"
		(cd "$d" && npm ci --no-audit --no-fund >/dev/null) || die "npm ci failed in $d"
	fi
done

say "setting up tenant $tenant, agent bench, and schema bench_baselines"
# the baselines' client: a random secret of 256 bits, stored as each
# baseline checks it
base_secret=$(openssl rand -hex 32)
naive_hash=$(cd bench/baselines/express-naive && node hash-secret.js <<<"$base_secret")
good_hash=$(printf '%s' "$base_secret" | sha256sum | cut -d ' ' -f 1)
read -r client_id client_secret < <(psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 \
	-v client_id=bench -v naive_hash="$naive_hash" -v good_hash="$good_hash" -f "$dir/setup.sql") || true
[ -n "${client_secret:-}" ] || die "setup.sql returned no client secret"

declare -A url auth
start_baseline() {	# app: started on a port of the system's choosing, its URL into url[app]
	local app=$1 log="$work/$1.log" port=
	(cd "bench/baselines/$app" && PORT=0 exec node server.js) >"$log" 2>&1 &
	baseline_pids+=($!)
	for _ in $(seq 100); do
		port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$log")
		[ -n "$port" ] && break
		kill -0 "${baseline_pids[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$port" ] || { cat "$log" >&2; die "baseline $app did not start"; }
	url[$app]="http://127.0.0.1:$port/oauth/token"
}
say "starting the baselines"
start_baseline express-good
start_baseline express-naive
url[token]="$http/t/$tenant/oauth/token"
url[jwks]="$http/t/$tenant/.well-known/jwks.json"
# the ids and secrets are hex and base64url: nothing to form-encode
auth[token]="Basic $(printf '%s:%s' "$client_id" "$client_secret" | base64 -w 0)"
auth[express-good]="Basic $(printf 'bench:%s' "$base_secret" | base64 -w 0)"
auth[express-naive]=${auth[express-good]}

# one request to each before the runs, so that a refusal shows at once
for name in token express-good express-naive; do
	code=$(curl -s -m 10 -o "$work/probe" -w '%{http_code}' -H "Authorization: ${auth[$name]}" \
		-d grant_type=client_credentials "${url[$name]}" || true)
	if [ "$code" != 200 ] || ! grep -q '"access_token"' "$work/probe"; then
		cat "$work/probe" >&2 2>/dev/null; echo >&2
		die "POST ${url[$name]} answered ${code:-nothing}, not a token"
	fi
done
code=$(curl -s -m 10 -o "$work/probe" -w '%{http_code}' "${url[jwks]}" || true)
if [ "$code" != 200 ] || ! grep -q '"keys"' "$work/probe"; then
	die "GET ${url[jwks]} answered ${code:-nothing}, not a key set"
fi

# the daemon's RSS in kB, every second, into a file, until killed
sample_rss() {
	while ps -o rss= -p "$1" >>"$2" 2>/dev/null; do sleep 1; done
}

declare -A rps p50 p99 requests bad errors rss ran
failed=0
run() {	# name seconds: the wrk run of url[name], after a warm-up
	local name=$1 seconds=$2 script=status.lua sampler='' out line
	[ -n "${auth[$name]:-}" ] && script=token.lua
	say "$name: wrk -t$threads -c$conns -d${seconds}s ${url[$name]}"
	BENCH_AUTHORIZATION=${auth[$name]:-} wrk -t"$threads" -c"$conns" -d"${warm}s" --timeout 10s \
		-s "$dir/$script" "${url[$name]}" >/dev/null 2>&1 || true
	# each run starts after a checkpoint, so none of them gets one more
	# than the others
	psql -X -q -c CHECKPOINT >/dev/null
	rss[$name]=-
	if [ -n "$httpd_pid" ] && [[ $name == token || $name == jwks ]]; then
		: >"$work/rss"
		sample_rss "$httpd_pid" "$work/rss" &
		sampler=$!
	fi
	if ! out=$(BENCH_AUTHORIZATION=${auth[$name]:-} wrk --latency -t"$threads" -c"$conns" -d"${seconds}s" \
			--timeout 10s -s "$dir/$script" "${url[$name]}" 2>&1); then
		[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
		printf '%s\n' "$out" >&2
		die "wrk failed on ${url[$name]}"
	fi
	if [ -n "$sampler" ]; then
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		rss[$name]=$(sort -n "$work/rss" | tail -n 1)
		[ -n "${rss[$name]}" ] || rss[$name]=-
	fi
	line=$(grep '^result ' <<<"$out" || true)
	[ -n "$line" ] || { printf '%s\n' "$out" >&2; die "no result line in wrk's output ($dir/$script)"; }
	# result requests=N seconds=S rps=R p50_ms=A p99_ms=B non200=N socket_errors=N
	read -r "requests[$name]" "rps[$name]" "p50[$name]" "p99[$name]" "bad[$name]" "errors[$name]" < <(
		awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			   printf "%s %.0f %s %s %s %s\n", v["requests"], v["rps"], v["p50_ms"], v["p99_ms"],
					  v["non200"], v["socket_errors"] }' <<<"$line")
	ran[$name]=$seconds
	if [ "${bad[$name]}" != 0 ] || [ "${errors[$name]}" != 0 ]; then
		grep -i -e '^first non-200' -e 'socket errors' <<<"$out" >&2 || true
		echo "error: $name: ${bad[$name]} responses other than 200, ${errors[$name]} socket errors" >&2
		failed=1
	fi
}

run token "$secs"
run jwks "$secs"
run express-good "$secs"
run express-naive "$naive_secs"

read -r sync fsync < <(psql -X -tA -c 'SHOW synchronous_commit' -c 'SHOW fsync' | paste -sd ' ')
# a role or database setting could turn synchronous_commit off for some
# sessions only
overrides=$(psql -X -tAc "SELECT count(*) FROM pg_db_role_setting
						  WHERE array_to_string(setconfig, ',') LIKE '%synchronous_commit%'")
echo
echo "wrk -t$threads -c$conns --latency, ${secs}s per run (express-naive ${naive_secs}s), after ${warm}s of" \
	"warm-up each; $(nproc) CPUs; synchronous_commit $sync, fsync $fsync"
[ "$overrides" = 0 ] || echo "warning: $overrides role or database settings of synchronous_commit (pg_db_role_setting)"
printf '%-28s %5s %9s %9s %8s %8s %8s %8s\n' benchmark seconds requests 'req/s' 'p50 ms' 'p99 ms' 'non-200' 'RSS MiB'
for row in "token:agentidp /oauth/token" "jwks:agentidp jwks.json" \
		"express-good:express-good /oauth/token" "express-naive:express-naive /oauth/token"; do
	name=${row%%:*}
	printf '%-28s %5s %9s %9s %8s %8s %8s %8s\n' "${row#*:}" "${ran[$name]}" "${requests[$name]}" \
		"${rps[$name]}" "${p50[$name]}" "${p99[$name]}" "$((bad[$name] + errors[$name]))" \
		"$(awk -v kb="${rss[$name]}" 'BEGIN { if (kb == "-") print "-"; else printf "%.1f", kb / 1024 }')"
done
echo

awk -v tok="${rps[token]}" -v good="${rps[express-good]}" -v naive="${rps[express-naive]}" \
	-v p99="${p99[token]}" -v jwks="${rps[jwks]}" -v rss_t="${rss[token]}" -v rss_j="${rss[jwks]}" '
	function target(what, value, ok) {
		printf "%-40s %-9s target %s\n", what, value, ok
	}
	BEGIN {
		r = good > 0 ? tok / good : 0
		target("agentidp / express-good, tokens/s", sprintf("%.2f", r), ">= 1.5: " (r >= 1.5 ? "met" : "MISSED"))
		r = naive > 0 ? tok / naive : 0
		target("agentidp / express-naive, tokens/s", sprintf("%.0f", r), ">= 100: " (r >= 100 ? "met" : "MISSED"))
		target("agentidp /oauth/token p99 ms", p99, "<= 10: " (p99 + 0 <= 10 ? "met" : "MISSED"))
		target("agentidp jwks.json req/s", jwks, ">= 20000: " (jwks >= 20000 ? "met" : "MISSED"))
		if (rss_t == "-" || rss_j == "-")
			target("agentidp-httpd RSS MiB, largest", "-", "<= 20: not measured")
		else {
			m = (rss_t > rss_j ? rss_t : rss_j) / 1024
			target("agentidp-httpd RSS MiB, largest", sprintf("%.1f", m), "<= 20: " (m <= 20 ? "met" : "MISSED"))
		}
	}'
[ "$failed" = 0 ] || die "some responses were not 200 (above)"
