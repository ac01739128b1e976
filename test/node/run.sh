#!/usr/bin/env bash
# Interoperability tests against panva/jose (see interop.test.mjs).
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

exec node --test interop.test.mjs
