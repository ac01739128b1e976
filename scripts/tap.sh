#!/usr/bin/env bash
# Run the TAP tests under test/t with PostgreSQL::Test::Cluster.  Each test
# makes its own throwaway clusters, so they run as the unprivileged user.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$ROOT"

pgxs=$(dirname "$(dirname "$(dirname "$(pg_config --pgxs)")")")
tapdir="$CLUSTER_DIR/tap"
rm -rf "$tapdir"
mkdir -p "$tapdir"
[ "$(id -u)" -eq 0 ] && chown "$AGENTIDP_OS_USER" "$tapdir"

as_pg_user env AGENTIDP_SERVER_ENV="$(sanitizer_env)" PATH="$PG_BINDIR:$PATH" TESTDIR="$tapdir" \
	PG_REGRESS="$pgxs/src/test/regress/pg_regress" \
	PGHOST= PGPORT= PGUSER= PGPASSFILE= PGDATABASE= \
	prove -I "$pgxs/src/test/perl" -I test/t ${PROVE_FLAGS:-} test/t/*.pl
