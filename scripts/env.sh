# Shared settings of the scripts; sourced, not run.
# The private cluster, Redis and their logs live in .cluster/ (git-ignored).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# make run's cluster is .cluster/ on ports 5499 (PostgreSQL), 6499 (Redis)
# and 8499 (HTTP); make test sets AGENTIDP_TEST=1 and gets .cluster-test/
# on 5498, 6498, 8498, so tests never touch a developer's data.
if [ "${AGENTIDP_TEST:-0}" = 1 ]; then
	CLUSTER_DIR="$ROOT/.cluster-test"
	AGENTIDP_PGPORT=5498
	AGENTIDP_REDIS_PORT=6498
	AGENTIDP_HTTP_PORT=8498
else
	CLUSTER_DIR="$ROOT/.cluster"
	AGENTIDP_PGPORT=5499
	AGENTIDP_REDIS_PORT=6499
	AGENTIDP_HTTP_PORT=8499
fi
PGDATA_DIR="$CLUSTER_DIR/data"
AGENTIDP_DB=agentidp

# PostgreSQL refuses to run as root: the cluster runs as this system user
AGENTIDP_OS_USER=${AGENTIDP_OS_USER:-agentidp}

PG_BINDIR=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
export PATH="$PG_BINDIR:$PATH"

# every client of the scripts talks to the private cluster
export PGHOST=127.0.0.1
export PGPORT=$AGENTIDP_PGPORT
export PGUSER=postgres
export PGPASSFILE="$CLUSTER_DIR/pgpass"
export PGDATABASE=$AGENTIDP_DB

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# run a command as the cluster's OS user (or as ourselves when not root)
as_pg_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$AGENTIDP_OS_USER" -- "$@"
	else
		"$@"
	fi
}

sanitizer_env() {
	# an instrumented agentidp.so needs the sanitizer runtimes in the server
	if [ "${SANITIZE:-0}" = 1 ]; then
		local asan ubsan stub="$CLUSTER_DIR/nls_stub.so"
		asan=$(gcc -print-file-name=libasan.so)
		ubsan=$(gcc -print-file-name=libubsan.so)
		gcc -shared -fPIC -O2 -o "$stub" "$ROOT/test/sanitize/nls_stub.c"
		echo "LD_PRELOAD=$asan:$ubsan:$stub ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$CLUSTER_DIR/asan UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$CLUSTER_DIR/ubsan"
	fi
}
