#!/usr/bin/env bash
# The OAuth errors of agentidp-httpd as curl shows them: one curl command
# per error (RFC 6749 section 5.2, RFC 9449, RFC 7009, RFC 7662 and the
# daemon's own), its status, its "error" member, and the headers that go
# with it.  The commands are the ones docs/http.md shows.
#
# Environment, as for the Python suites:
#   AGENTIDP_HTTP_URL      base URL of the daemon (http://127.0.0.1:8498)
#   AGENTIDP_CREDENTIALS   the demo credentials file ("name value" lines)
# Prints one "ok" or "not ok" line per case; exits 1 if any failed.
set -u

base=${AGENTIDP_HTTP_URL:-http://127.0.0.1:8498}
creds=${AGENTIDP_CREDENTIALS:?set AGENTIDP_CREDENTIALS to the demo credentials file}
cid=$(awk '$1 == "client_id" { print $2 }' "$creds")
secret=$(awk '$1 == "client_secret" { print $2 }' "$creds")
[ -n "$cid" ] && [ -n "$secret" ] || { echo "no client_id or client_secret in $creds" >&2; exit 2; }
token="$base/t/demo/oauth/token"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
failed=0

# case "what" status error header-or-empty curl-arguments...
case_() {
	local what=$1 want_status=$2 want_error=$3 want_header=$4 status error why=''
	shift 4
	n=$((n + 1))
	status=$(curl -s -m 10 -o "$work/body" -D "$work/headers" -w '%{http_code}' "$@")
	error=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("error", ""))' \
		"$work/body" 2>/dev/null)
	[ "$status" = "$want_status" ] || why="status $status, not $want_status"
	[ -z "$why" ] && [ "$error" != "$want_error" ] && why="error \"$error\", not \"$want_error\""
	if [ -z "$why" ] && [ -n "$want_header" ] &&
		! tr -d '\r' <"$work/headers" | grep -qi "^$want_header"; then
		why="no header $want_header"
	fi
	if [ -z "$why" ] && ! tr -d '\r' <"$work/headers" | grep -qi '^Content-Type: application/json'; then
		why="not application/json"
	fi
	if [ -n "$why" ]; then
		failed=$((failed + 1))
		echo "not ok $n - $what: $why"
		sed 's/^/#   /' "$work/body"
		echo
	else
		echo "ok $n - $what: $status $want_error"
	fi
}

case_ "grant_type missing" 400 invalid_request '' \
	-u "$cid:$secret" -d scope=read "$token"
case_ "grant_type not supported" 400 unsupported_grant_type '' \
	-u "$cid:$secret" -d grant_type=password -d username=a -d password=b "$token"
case_ "wrong secret" 401 invalid_client 'WWW-Authenticate: Basic' \
	-u "$cid:wrong-secret" -d grant_type=client_credentials "$token"
case_ "unknown client (client_secret_post)" 401 invalid_client 'WWW-Authenticate' \
	-d grant_type=client_credentials -d client_id=nobody -d client_secret=nothing "$token"
case_ "two client authentication methods" 400 invalid_request '' \
	-u "$cid:$secret" -d grant_type=client_credentials -d client_secret="$secret" "$token"
case_ "scope not allowed" 400 invalid_scope '' \
	-u "$cid:$secret" -d grant_type=client_credentials -d scope=agentidp:admin "$token"
case_ "malformed refresh token" 400 invalid_grant '' \
	-u "$cid:$secret" -d grant_type=refresh_token -d refresh_token=garbage "$token"
case_ "token exchange without an actor token" 400 invalid_request '' \
	-u "$cid:$secret" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
	-d subject_token=x "$token"
case_ "malformed DPoP proof" 400 invalid_dpop_proof '' \
	-u "$cid:$secret" -d grant_type=client_credentials -H 'DPoP: not-a-proof' "$token"
case_ "two DPoP proofs" 400 invalid_dpop_proof '' \
	-u "$cid:$secret" -d grant_type=client_credentials -H 'DPoP: a.b.c' -H 'DPoP: d.e.f' "$token"
case_ "repeated parameter" 400 invalid_request '' \
	-u "$cid:$secret" -d grant_type=client_credentials -d scope=read -d scope=write "$token"
case_ "JSON instead of a form" 400 invalid_request '' \
	-u "$cid:$secret" -H 'Content-Type: application/json' \
	--data '{"grant_type": "client_credentials"}' "$token"
case_ "body over the limit" 413 invalid_request '' \
	-u "$cid:$secret" --data-binary "grant_type=client_credentials&x=$(head -c 70000 /dev/zero | tr '\0' a)" "$token"
case_ "GET on the token endpoint" 405 invalid_request 'Allow: POST' \
	"$token"
case_ "unknown tenant" 404 not_found '' \
	-u "$cid:$secret" -d grant_type=client_credentials "$base/t/no-such-tenant/oauth/token"
case_ "revocation without client authentication" 401 invalid_client 'WWW-Authenticate' \
	-d token=x "$base/t/demo/oauth/revoke"
case_ "introspection without a token" 400 invalid_request '' \
	-u "$cid:$secret" -X POST -H 'Content-Type: application/x-www-form-urlencoded' \
	"$base/t/demo/oauth/introspect"

echo "1..$n"
[ "$failed" -eq 0 ] || { echo "# $failed of $n failed"; exit 1; }
