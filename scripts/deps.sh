#!/usr/bin/env bash
# Install what the build, the cluster and the tests need, from Debian's
# packages, when something is missing.  Fast when nothing is.
set -euo pipefail
. "$(dirname "$0")/env.sh"

PACKAGES=(
	build-essential
	postgresql-15 postgresql-server-dev-15 postgresql-15-cron
	libssl-dev libcurl4-openssl-dev libhiredis-dev libmicrohttpd-dev
	redis-server
	libipc-run-perl
	acl
	python3-minimal
)

# Node.js runs the interoperability test with npm's jose; a machine that
# has node and npm already (of any origin) keeps them
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})"
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# Debian's postgresql-common would create and start a cluster of its own
	mkdir -p /etc/postgresql-common/createcluster.d
	echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/agentidp.conf
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

# the unprivileged user that owns and runs the private clusters
if [ "$(id -u)" -eq 0 ] && ! id "$AGENTIDP_OS_USER" >/dev/null 2>&1; then
	say "creating system user $AGENTIDP_OS_USER"
	useradd --system --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin "$AGENTIDP_OS_USER"
fi
