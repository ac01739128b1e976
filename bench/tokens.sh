#!/usr/bin/env bash
# Token issuance and verification under pgbench, beside the floors they
# cannot beat, all measured in one invocation at 1 and 2 clients:
#
#   SELECT 1        a round trip, the floor of a read
#   INSERT one row  one row in bench_tokens.ins, one commit: the floor of a
#                   write (synchronous_commit on)
#   issue_token     agentidp.issue_token(client_id, client_secret, 'read'),
#                   the client-credentials grant, signed with the ES256 key
#                   of tenant bench-tokens
#   token lookup    one of 20000 stored tokens, picked at random, read by
#                   its key: the floor of verify_token
#   verify_token    agentidp.verify_token() of that token
#
# Targets, at 2 clients: issue_token >= 0.55 of the INSERT's tps, and
# >= 4000 tokens/s; verify_token >= 15000 tps.  `openssl speed ecdsap256`
# gives ES256 signs and verifies per second on one core for reference.
#
#   bench/tokens.sh [seconds per pgbench run, default 30]
#
# Runs against make run's cluster, which must be running (make run first),
# as its superuser, synchronous_commit on.  Ten pgbench runs of `seconds`
# each (pgbench -n -M prepared -T seconds -c N -j N), so about 10 x seconds,
# plus 6 s of openssl and the issuance of the 20000 tokens.
#
# Latency: each run writes pgbench's per-transaction log (--log, into a
# temporary directory); p50 and p99 are the nearest-rank percentiles of its
# latency column (the third, in microseconds), over every transaction of the
# run.  pgbench -r gives only averages, --aggregate-interval only min, max,
# mean and deviation per interval.  Writing the log costs a little on every
# transaction, the same for every benchmark, and takes about 40 bytes per
# transaction in the temporary directory until the run's percentiles are
# read.
#
# The tokens verified expire, and verify_token refuses an expired one.
# setup.sql gives tenant bench-tokens the longest lifetime issue_token
# allows (its setting access_token_lifetime = agentidp.max_token_lifetime,
# 900 s by default); the script reads the tokens' exp claim and issues a
# new set before the lookup and verify_token runs whenever fewer than
# 2 x seconds + 60 s remain.  It stops with an error if even a fresh set
# would not last that long (above about 420 seconds per run by default).
#
# Leaves in the database: tenant bench-tokens, its key and agent bench
# (reused by later runs), and the rows that every issued token adds to
# agentidp.audit_events: the audit chain is append-only, its rows cannot be
# deleted, so each run adds one per token it issues (hundreds of thousands
# at the default).  The schema bench_tokens goes at the end, however the script
# ends, and the run's client secret is revoked.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

secs=${1:-30}
[[ $secs =~ ^[1-9][0-9]*$ ]] || die "usage: bench/tokens.sh [seconds per run, default 30]"
dir=bench/tokens
ntokens=20000

# every session of the script, pgbench's included, commits synchronously
export PGOPTIONS="-c synchronous_commit=on"

psql -X -q -tAc 'SELECT 1' >/dev/null 2>&1 ||
	die "no PostgreSQL at $PGHOST:$PGPORT (database $PGDATABASE): run make run first"
[ "$(psql -X -tAc "SELECT count(DISTINCT proname) FROM pg_proc
					 WHERE pronamespace = to_regnamespace('agentidp')
					   AND proname IN ('issue_token', 'verify_token')")" = 2 ] ||
	die "agentidp.issue_token() or verify_token() missing: install the current build (make run)"

work=$(mktemp -d)
client_id=
cleanup() {
	if [ -n "$client_id" ]; then
		psql -X -q -v ON_ERROR_STOP=1 -v cid="$client_id" >/dev/null 2>&1 <<'SQL' || true
SELECT agentidp.revoke_client_secret(:'cid');
SQL
	fi
	psql -X -q -c 'SET client_min_messages = warning' \
		-c 'DROP SCHEMA IF EXISTS bench_tokens CASCADE' >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# OpenSSL's own figures first, with the database idle: ES256 sign/s and
# verify/s on one core
say "openssl speed -seconds 3 ecdsap256"
read -r os_sign os_verify < <(openssl speed -seconds 3 ecdsap256 2>/dev/null |
	awk '/ecdsa .nistp256/ { print $(NF - 1), $NF; exit }')
[ -n "${os_verify:-}" ] || die "no ecdsa (nistp256) line in openssl speed's output"

say "setting up schema bench_tokens, tenant bench-tokens, agent bench"
read -r client_id client_secret < <(psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 -f "$dir/setup.sql")
[ -n "${client_secret:-}" ] || die "setup.sql returned no client secret"

# (re)issue the tokens unless they stay valid for $1 more seconds
tokens_ready=0
ensure_tokens() {
	local need=$1 left=0
	if [ "$tokens_ready" = 1 ]; then
		left=$(psql -X -tAc 'SELECT min(exp) - extract(epoch FROM now())::bigint FROM bench_tokens.tokens')
	fi
	[ "$left" -ge "$need" ] && return
	say "issuing $ntokens tokens into bench_tokens.tokens"
	psql -X -q -tA -v ON_ERROR_STOP=1 -v n="$ntokens" -v client_id="$client_id" \
		-v client_secret="$client_secret" -f "$dir/tokens.sql"
	tokens_ready=1
	left=$(psql -X -tAc 'SELECT min(exp) - extract(epoch FROM now())::bigint FROM bench_tokens.tokens')
	[ "$left" -ge "$need" ] ||
		die "fresh tokens stay valid ${left}s, the lookup and verify_token runs need ${need}s: use fewer seconds per run"
}

declare -A tps p50 p99
run() {	# name clients [script [options]]: the pgbench run of $dir/script.sql, into tps, p50, p99
	local name=$1 clients=$2 script=${3:-$1} options=${4:-} out prefix n
	prefix="$work/$name-$clients"
	say "$name, $clients client(s), ${secs}s"
	# each run starts after a checkpoint, so none of them gets one more
	# than the others
	psql -X -q -c CHECKPOINT >/dev/null
	if ! out=$(PGOPTIONS="$PGOPTIONS $options" pgbench -n -M prepared -T "$secs" -c "$clients" -j "$clients" \
			--log --log-prefix="$prefix" -D ntokens="$ntokens" \
			-D client_id="$client_id" -D client_secret="$client_secret" \
			-f "$dir/$script.sql" 2>&1); then
		printf '%s\n' "$out" >&2
		die "pgbench failed on $dir/$script.sql, $clients clients"
	fi
	tps[$name,$clients]=$(awk '/^tps/ { printf "%.0f", $3; exit }' <<<"$out")
	[ -n "${tps[$name,$clients]}" ] || { printf '%s\n' "$out" >&2; die "no tps in pgbench's output"; }

	# one log per thread, $prefix.<pid> and $prefix.<pid>.<thread>; a
	# failed or skipped transaction has a word in the latency column
	awk '$3 ~ /^[0-9]+$/ { print $3 }' "$prefix".* | LC_ALL=C sort -n >"$work/sorted"
	n=$(wc -l <"$work/sorted")
	[ "$n" -gt 0 ] || die "no transaction in pgbench's log of $dir/$name.sql"
	read -r "p50[$name,$clients]" "p99[$name,$clients]" < <(awk -v n="$n" '
		BEGIN { r50 = int((n * 50 + 99) / 100); r99 = int((n * 99 + 99) / 100) }
		NR == r50 { a = $1 }
		NR == r99 { b = $1; exit }
		END { printf "%.3f %.3f\n", a / 1000, b / 1000 }' "$work/sorted")
	rm -f "$prefix".* "$work/sorted"
}

# at each number of clients the five run back to back, so that each is
# measured close in time to its floor
for clients in 1 2; do
	run select1 "$clients"
	run insert "$clients"
	run issue_token "$clients"
	ensure_tokens $((2 * secs + 60))
	run lookup "$clients"
	# the session cache of verified signatures off, then at its default
	run verify_uncached "$clients" verify_token "-c agentidp.verified_token_cache=0"
	run verify_token "$clients"
done

read -r sync fsync < <(psql -X -tA -c 'SHOW synchronous_commit' -c 'SHOW fsync' | paste -sd ' ')
echo "pgbench, ${secs}s per run, prepared statements, -j = clients," \
	"synchronous_commit $sync, fsync $fsync; latency percentiles from the per-transaction logs"
printf '%-16s %7s %9s %9s %9s\n' benchmark clients tps 'p50 ms' 'p99 ms'
for clients in 1 2; do
	for row in "select1:SELECT 1" "insert:INSERT one row" "issue_token:issue_token" \
			"lookup:token lookup" "verify_uncached:verify, uncached" "verify_token:verify_token"; do
		name=${row%%:*}
		# figures as strings: awk formatted them, whatever the locale
		printf '%-16s %7s %9s %9s %9s\n' "${row#*:}" "$clients" "${tps[$name,$clients]}" \
			"${p50[$name,$clients]}" "${p99[$name,$clients]}"
	done
done

awk -v ins="${tps[insert,2]}" -v iss="${tps[issue_token,2]}" -v ver="${tps[verify_token,2]}" \
	-v veru="${tps[verify_uncached,2]}" \
	-v look="${tps[lookup,2]}" -v iss1="${tps[issue_token,1]}" -v ver1="${tps[verify_token,1]}" \
	-v os="$os_sign" -v ov="$os_verify" '
	function target(what, value, ok) {
		printf "%-48s %-8s target %s\n", what, value, ok
	}
	BEGIN {
		r = ins > 0 ? iss / ins : 0
		target("issue_token / INSERT one row, 2 clients", sprintf("%.2f", r),
			   ">= 0.55: " (r >= 0.55 ? "met" : "MISSED"))
		target("issue_token tokens/s, 2 clients", iss, ">= 4000: " (iss >= 4000 ? "met" : "MISSED"))
		target("verify_token tps, 2 clients", ver, ">= 15000: " (ver >= 15000 ? "met" : "MISSED"))
		target("verify_token tps uncached, 2 clients", veru, ">= 15000: " (veru >= 15000 ? "met" : "MISSED"))
		printf "verify_token / token lookup, 2 clients: %.2f\n", (look > 0 ? ver / look : 0)
		printf "openssl speed ecdsap256, one core: %d sign/s, %d verify/s\n", os, ov
		printf "1 client over one core of openssl: issue_token %.2f of sign/s, verify_token %.2f of verify/s\n",
			(os > 0 ? iss1 / os : 0), (ov > 0 ? ver1 / ov : 0)
	}'
