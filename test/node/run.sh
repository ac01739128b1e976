#!/usr/bin/env bash
# Interoperability tests against panva/jose (interop.test.mjs) and tokens
# as database identity through node-postgres (rls.test.mjs): every
# *.test.mjs file here.
# Needs node, npm and psql; the caller sets PGHOST, PGPORT, PGUSER,
# PGPASSFILE (and PGDATABASE, default agentidp) for a running cluster.
# Usable from anywhere, e.g. test/node/run.sh from the repository root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# npm writes node_modules/.package-lock.json when it installs: reinstall
# when that is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
	npm ci --no-audit --no-fund
fi

shopt -s nullglob
tests=(*.test.mjs)
[ ${#tests[@]} -gt 0 ] || { echo "no *.test.mjs files in $PWD" >&2; exit 1; }
exec node --test "${tests[@]}"
