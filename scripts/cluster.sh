#!/usr/bin/env bash
# Start, stop or report on the private PostgreSQL cluster and Redis in
# .cluster/.  Processes are found by their PID files, never by name.
#   cluster.sh start | stop | status | wipe | httpd-start | httpd-stop
# httpd-start (re)starts agentidp-httpd, the HTTP front; it needs the login
# role that scripts/setup-db.sh creates, so make run and make test call it
# after the setup.
set -euo pipefail
. "$(dirname "$0")/env.sh"

# The cluster's user must reach .cluster/ through every parent folder; a
# checkout under a private folder (mode 0700) gets an ACL entry that lets
# that user alone pass through it, nothing more.
grant_traversal() {
	[ "$(id -u)" -eq 0 ] || return 0
	local d=$ROOT
	while [ "$d" != / ]; do
		if ! runuser -u "$AGENTIDP_OS_USER" -- test -x "$d" 2>/dev/null; then
			setfacl -m "u:$AGENTIDP_OS_USER:x" "$d" 2>/dev/null || chmod o+x "$d"
		fi
		d=$(dirname "$d")
	done
}

pg_running() {
	[ -f "$PGDATA_DIR/postmaster.pid" ] && as_pg_user pg_ctl -D "$PGDATA_DIR" status >/dev/null 2>&1
}

redis_pid() {
	local f="$CLUSTER_DIR/redis.pid"
	[ -f "$f" ] || return 1
	local pid
	pid=$(cat "$f")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

httpd_pid() {
	local f="$CLUSTER_DIR/httpd.pid"
	[ -f "$f" ] || return 1
	local pid
	pid=$(cat "$f")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

httpd_stop() {
	local pid
	if pid=$(httpd_pid); then
		say "stopping agentidp-httpd"
		# SIGTERM drains the requests in flight, for up to 5 seconds
		kill -TERM "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -f "$CLUSTER_DIR/httpd.pid"
}

# The HTTP front on 127.0.0.1:$AGENTIDP_HTTP_PORT, as the cluster's user,
# connecting as agentidp_httpd with the password setup-db.sh keeps in
# httpd.pgpass.  Restarted every time: it keeps no state.
httpd_start() {
	local bin="$PG_BINDIR/agentidp-httpd" conf="$CLUSTER_DIR/httpd.conf"
	[ -x "$bin" ] || bin="$ROOT/agentidp-httpd"
	[ -x "$bin" ] || die "agentidp-httpd is not built (make && make install)"
	[ -f "$CLUSTER_DIR/httpd.pgpass" ] || die "no $CLUSTER_DIR/httpd.pgpass: run scripts/setup-db.sh first"
	httpd_stop
	cat > "$conf" <<CONF
# written by scripts/cluster.sh httpd-start
listen = 127.0.0.1
port = $AGENTIDP_HTTP_PORT
conninfo = host=127.0.0.1 port=$AGENTIDP_PGPORT dbname=$AGENTIDP_DB user=agentidp_httpd passfile='$CLUSTER_DIR/httpd.pgpass'
public_url = http://127.0.0.1:$AGENTIDP_HTTP_PORT
log_file = $CLUSTER_DIR/httpd.log
pid_file = $CLUSTER_DIR/httpd.pid
CONF
	if [ "$(id -u)" -eq 0 ]; then
		touch "$CLUSTER_DIR/httpd.log"
		chown "$AGENTIDP_OS_USER" "$CLUSTER_DIR/httpd.log" "$CLUSTER_DIR/httpd.pgpass"
	fi
	say "starting agentidp-httpd on 127.0.0.1:$AGENTIDP_HTTP_PORT"
	# shellcheck disable=SC2046
	as_pg_user env $(sanitizer_env) "$bin" --config "$conf" \
		</dev/null >>"$CLUSTER_DIR/httpd.out" 2>&1 &
	for _ in $(seq 50); do
		httpd_pid >/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$AGENTIDP_HTTP_PORT") 2>/dev/null && return 0
		sleep 0.1
	done
	tail -n 20 "$CLUSTER_DIR/httpd.out" "$CLUSTER_DIR/httpd.log" 2>/dev/null
	die "agentidp-httpd did not start"
}

init_cluster() {
	say "initdb $PGDATA_DIR"
	mkdir -p "$CLUSTER_DIR"
	# a random superuser password, readable by the invoking user only
	local pw
	pw=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40)
	umask 077
	printf '127.0.0.1:%s:*:postgres:%s\n' "$AGENTIDP_PGPORT" "$pw" > "$PGPASSFILE"
	printf '%s\n' "$pw" > "$CLUSTER_DIR/pwfile"
	umask 022
	if [ "$(id -u)" -eq 0 ]; then
		chown "$AGENTIDP_OS_USER" "$CLUSTER_DIR" "$CLUSTER_DIR/pwfile"
		chmod 0711 "$CLUSTER_DIR"
	fi
	as_pg_user initdb -D "$PGDATA_DIR" -U postgres --pwfile="$CLUSTER_DIR/pwfile" \
		--auth-host=scram-sha-256 --auth-local=peer --encoding=UTF8 --locale=C.UTF-8 \
		>"$CLUSTER_DIR/initdb.log" 2>&1 || { cat "$CLUSTER_DIR/initdb.log"; die "initdb failed"; }
	rm -f "$CLUSTER_DIR/pwfile"
	cat >> "$PGDATA_DIR/postgresql.conf" <<CONF

# agentidp private cluster (scripts/cluster.sh)
listen_addresses = '127.0.0.1'
port = $AGENTIDP_PGPORT
unix_socket_directories = '$CLUSTER_DIR'
shared_preload_libraries = 'agentidp,pg_cron'
cron.database_name = '$AGENTIDP_DB'
agentidp.issuer_base = 'http://127.0.0.1:$AGENTIDP_HTTP_PORT'
max_prepared_transactions = 10
log_line_prefix = '%m [%p] %q%u@%d '
CONF
	# the tests' cluster: the worker runs once when a database gets
	# agentidp, not in the middle of the regression tests (the TAP tests
	# test the worker on clusters of their own)
	if [ "${AGENTIDP_TEST:-0}" = 1 ]; then
		echo "agentidp.worker_naptime = '1h'" >> "$PGDATA_DIR/postgresql.conf"
	fi
}

# The key-encryption key: 32 random bytes, readable by the server alone,
# named in postgresql.conf.  Never in a table, never in git.
ensure_kek() {
	local kek="$CLUSTER_DIR/kek"
	if [ ! -f "$kek" ]; then
		say "creating the key-encryption key $kek"
		umask 077
		printf 'kek1 %s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" > "$kek"
		umask 022
		[ "$(id -u)" -eq 0 ] && chown "$AGENTIDP_OS_USER" "$kek"
	fi
	grep -q '^agentidp.kek_file' "$PGDATA_DIR/postgresql.conf" ||
		printf "agentidp.kek_file = '%s'\n" "$kek" >> "$PGDATA_DIR/postgresql.conf"
}

start() {
	grant_traversal
	[ -f "$PGDATA_DIR/PG_VERSION" ] || init_cluster
	ensure_kek
	# the library is preloaded: a server started before the last install of
	# a different build still runs the old one, so restart it
	local lib_sum
	lib_sum=$(sha256sum "$(pg_config --pkglibdir)/agentidp.so" 2>/dev/null | cut -d' ' -f1)
	if pg_running && [ "$lib_sum" != "$(cat "$CLUSTER_DIR/started-lib.sha256" 2>/dev/null)" ]; then
		say "restarting PostgreSQL for the newly installed agentidp library"
		as_pg_user pg_ctl -D "$PGDATA_DIR" -m fast -w stop >/dev/null
	fi
	if pg_running; then
		echo "PostgreSQL already running on 127.0.0.1:$AGENTIDP_PGPORT"
	else
		say "starting PostgreSQL on 127.0.0.1:$AGENTIDP_PGPORT"
		# shellcheck disable=SC2046
		as_pg_user env $(sanitizer_env) pg_ctl -D "$PGDATA_DIR" -l "$CLUSTER_DIR/postgresql.log" \
			-w -t 60 start >/dev/null || { tail -n 30 "$CLUSTER_DIR/postgresql.log"; die "PostgreSQL did not start"; }
		echo "$lib_sum" > "$CLUSTER_DIR/started-lib.sha256"
	fi
	if redis_pid >/dev/null; then
		echo "Redis already running on 127.0.0.1:$AGENTIDP_REDIS_PORT"
	else
		say "starting Redis on 127.0.0.1:$AGENTIDP_REDIS_PORT"
		mkdir -p "$CLUSTER_DIR/redis"
		redis-server --bind 127.0.0.1 --port "$AGENTIDP_REDIS_PORT" --protected-mode yes \
			--daemonize yes --pidfile "$CLUSTER_DIR/redis.pid" --dir "$CLUSTER_DIR/redis" \
			--logfile "$CLUSTER_DIR/redis.log" --save '' --appendonly no \
			--unixsocket "$CLUSTER_DIR/redis/redis.sock" --unixsocketperm 777
		for _ in $(seq 50); do redis_pid >/dev/null && break; sleep 0.1; done
		redis_pid >/dev/null || die "Redis did not start (see $CLUSTER_DIR/redis.log)"
	fi
}

stop() {
	httpd_stop
	if pg_running; then
		say "stopping PostgreSQL"
		as_pg_user pg_ctl -D "$PGDATA_DIR" -m fast -w stop >/dev/null
	fi
	local pid
	if pid=$(redis_pid); then
		say "stopping Redis"
		kill "$pid"
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$CLUSTER_DIR/redis.pid"
}

status() {
	pg_running && echo "PostgreSQL: running on 127.0.0.1:$AGENTIDP_PGPORT" || echo "PostgreSQL: stopped"
	redis_pid >/dev/null && echo "Redis: running on 127.0.0.1:$AGENTIDP_REDIS_PORT" || echo "Redis: stopped"
	httpd_pid >/dev/null && echo "agentidp-httpd: running on 127.0.0.1:$AGENTIDP_HTTP_PORT" || echo "agentidp-httpd: stopped"
}

case "${1:-}" in
	start) start ;;
	stop) stop ;;
	status) status ;;
	wipe) stop; rm -rf "$CLUSTER_DIR" ;;
	httpd-start) httpd_start ;;
	httpd-stop) httpd_stop ;;
	*) echo "usage: $0 start|stop|status|wipe|httpd-start|httpd-stop" >&2; exit 2 ;;
esac
