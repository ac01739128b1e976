#!/usr/bin/env bash
# make test: the setup of make run from nothing, then every test suite:
# pg_regress (sql/, expected/), isolation specs (test/isolation) and TAP
# (test/t).  Prints a summary, stops every server it started, and exits
# non-zero when anything failed.
set -uo pipefail
export AGENTIDP_TEST=1
. "$(dirname "$0")/env.sh"
cd "$ROOT"

trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT

set -e
scripts/deps.sh
scripts/cluster.sh wipe >/dev/null
say "building from clean"
make -s clean >/dev/null
make -s -j2 >/dev/null
make -s install >/dev/null
scripts/cluster.sh start
scripts/setup-db.sh
# the suites below ask the demo client for hundreds of tokens a minute, and
# test other things than its rate limit (sql/limits.sql, the HTTP front's
# RateLimits case and test/t/011_rate_limits.pl test that)
psql -X -q -v ON_ERROR_STOP=1 -c "SELECT agentidp.set_token_rate_limit(agent_id, 'unlimited')
	FROM agentidp.agents WHERE name = 'demo-agent' AND status = 'active'" >/dev/null
scripts/cluster.sh httpd-start
set +e

passed=0
failed=0
summary=()

# pg_regress and pg_isolation_regress end with "All N tests passed." or
# "M of N tests failed."
count_regress() {
	local log=$1 name=$2 line n m
	line=$(grep -E 'tests? passed|tests? failed' "$log" | tail -n 1)
	if [[ $line =~ All\ ([0-9]+)\ tests?\ passed ]]; then
		n=${BASH_REMATCH[1]}; passed=$((passed + n))
		summary+=("$name: $n passed")
	elif [[ $line =~ ([0-9]+)\ of\ ([0-9]+)\ tests?\ failed ]]; then
		m=${BASH_REMATCH[1]}; n=${BASH_REMATCH[2]}
		failed=$((failed + m)); passed=$((passed + n - m))
		summary+=("$name: $m of $n FAILED")
	else
		failed=$((failed + 1))
		summary+=("$name: did not run (see $log)")
	fi
}

mkdir -p "$CLUSTER_DIR/logs"

say "pg_regress"
make -s installcheck 2>&1 | tee "$CLUSTER_DIR/logs/regress.log"
count_regress "$CLUSTER_DIR/logs/regress.log" "pg_regress"
[ -f regression.diffs ] && cat regression.diffs

say "isolation"
make -s isolationcheck 2>&1 | tee "$CLUSTER_DIR/logs/isolation.log"
count_regress "$CLUSTER_DIR/logs/isolation.log" "isolation"
[ -f output_iso/regression.diffs ] && cat output_iso/regression.diffs

# the independent audit-chain verifier's own unit tests (Debian's python3)
say "audit verifier"
if /usr/bin/python3 test/audit/test_verify_chain.py >"$CLUSTER_DIR/logs/verifier.log" 2>&1; then
	passed=$((passed + 1))
	summary+=("audit verifier: $(grep -Eo 'Ran [0-9]+ tests?' "$CLUSTER_DIR/logs/verifier.log") passed")
else
	failed=$((failed + 1))
	summary+=("audit verifier: FAILED")
	cat "$CLUSTER_DIR/logs/verifier.log"
fi

# tokens against an independent JOSE implementation (npm jose), and as
# database identity through a real client pool (npm pg)
say "node clients"
if PGDATABASE="$AGENTIDP_DB" test/node/run.sh >"$CLUSTER_DIR/logs/node.log" 2>&1; then
	n=$(sed -nE 's/^# pass ([0-9]+)/\1/p' "$CLUSTER_DIR/logs/node.log" | tail -n 1)
	passed=$((passed + 1))
	summary+=("node clients (jose, pg, oauth4webapi): ${n:-?} tests passed")
else
	failed=$((failed + 1))
	summary+=("node clients (jose, pg, oauth4webapi): FAILED")
	tail -n 60 "$CLUSTER_DIR/logs/node.log"
fi

# one suite over HTTP against the test daemon (Python unittest, or a shell
# script printing TAP lines): name, log, script
http_suite() {
	local name=$1 log="$CLUSTER_DIR/logs/$2.log" script=$3 run
	case $script in
		*.py) run=(/usr/bin/python3 -B "$script") ;;
		*) run=("$script") ;;
	esac
	say "$name"
	if AGENTIDP_HTTP_URL="http://127.0.0.1:$AGENTIDP_HTTP_PORT" \
		AGENTIDP_CREDENTIALS="$CLUSTER_DIR/demo-credentials" \
		AGENTIDP_HTTPD_LOG="$CLUSTER_DIR/httpd.log" PGDATABASE="$AGENTIDP_DB" \
		timeout 300 "${run[@]}" >"$log" 2>&1; then
		passed=$((passed + 1))
		summary+=("$name: $(grep -Eo 'Ran [0-9]+ tests?' "$log" ||
			sed -nE 's/^1\.\.([0-9]+)$/\1 cases/p' "$log") passed")
	else
		failed=$((failed + 1))
		summary+=("$name: FAILED")
		tail -n 60 "$log"
		tail -n 20 "$CLUSTER_DIR/httpd.log" "$CLUSTER_DIR/httpd.out" 2>/dev/null
	fi
}

# agentidp-httpd over HTTP: the OAuth endpoints and their errors, the
# documents, health, metrics, limits, TLS, routing by host, and no secret
# in its access log
http_suite "http front" http test/http/test_http.py

# the admin REST API over HTTP: an admin agent's token, agents, secrets,
# keys, roles, the audit log, every problem response, tenants kept apart
http_suite "admin api" admin test/http/test_admin.py

# each OAuth error as curl shows it (the commands of docs/http.md)
http_suite "curl errors" curl test/http/curl_errors.sh

say "TAP"
scripts/tap.sh 2>&1 | tee "$CLUSTER_DIR/logs/tap.log"
tap_rc=${PIPESTATUS[0]}
files=$(sed -nE 's/^Files=([0-9]+),.*/\1/p' "$CLUSTER_DIR/logs/tap.log" | tail -n 1)
# prove's summary lists each failed file once, with its wait status
bad=$(grep -cE '^test/t/[^ ]+ +\(Wstat: ' "$CLUSTER_DIR/logs/tap.log")
files=${files:-0}
bad=${bad:-0}
if [ "$tap_rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=$((files > 0 ? files : 1)); fi
passed=$((passed + files - bad))
failed=$((failed + bad))
summary+=("TAP: $((files - bad)) of $files test files passed")
for f in "$CLUSTER_DIR"/tap/tmp_check/log/regress_log_*; do
	[ "$tap_rc" -ne 0 ] && [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }
done

# an instrumented build reports what the sanitizers found
if ls "$CLUSTER_DIR"/asan.* "$CLUSTER_DIR"/ubsan.* >/dev/null 2>&1; then
	cat "$CLUSTER_DIR"/asan.* "$CLUSTER_DIR"/ubsan.* 2>/dev/null
	failed=$((failed + 1))
	summary+=("sanitizers: reports found")
fi

echo
echo "==================== summary ===================="
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
