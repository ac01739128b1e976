# Shared settings of the scripts; sourced, not run.
# The private cluster, Redis and their logs live in .cluster/ (git-ignored).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_DIR="$ROOT/.cluster"
PGDATA_DIR="$CLUSTER_DIR/data"

# fixed, non-default loopback ports
AGENTIDP_PGPORT=${AGENTIDP_PGPORT:-5499}
AGENTIDP_REDIS_PORT=${AGENTIDP_REDIS_PORT:-6499}
AGENTIDP_HTTP_PORT=${AGENTIDP_HTTP_PORT:-8499}
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
