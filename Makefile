# agentidp: PGXS build, plus the two commands of the README.
#
#   make run     install what is missing, build, install, start a private
#                cluster (.cluster/) with Redis, create a demo tenant
#   make test    the same from nothing, then every test; stops everything
#   make stop    stop what make run started
#
# SANITIZE=1 builds with -fsanitize=address,undefined; scripts/cluster.sh
# then preloads the sanitizer runtimes into the server.

EXTENSION = agentidp
MODULE_big = agentidp
OBJS = \
	bgworker/launcher.o \
	bgworker/maintenance.o \
	src/agentidp.o \
	src/audit.o \
	src/audit_hash.o \
	src/audit_verify.o \
	src/authz.o \
	src/credentials.o \
	src/http.o \
	src/issuers.o \
	src/jose.o \
	src/jose_json.o \
	src/jwk.o \
	src/keys.o \
	src/policy.o \
	src/ratelimit.o \
	src/ratelimit_shmem.o \
	src/redis_limit.o \
	src/refusals.o \
	src/tenants.o \
	src/token_state.o \
	src/tokens.o \
	src/webhooks.o

DATA = agentidp--0.1.sql agentidp--0.1--0.2.sql agentidp--0.2--0.3.sql agentidp--0.3--0.4.sql \
	agentidp--0.4--0.5.sql agentidp--0.5--0.6.sql agentidp--0.6--0.7.sql agentidp--0.7--0.8.sql \
	agentidp--0.8--0.9.sql agentidp--0.9--0.10.sql agentidp--0.10--0.11.sql agentidp--0.11--0.12.sql \
	agentidp--0.12--0.13.sql agentidp--0.13--0.14.sql agentidp--0.14--0.15.sql
DOCS =

REGRESS = init tenants agents credentials roles cross_tenant jose jose_vectors keys audit tokens token_vectors authz maintenance issuers webhooks http admin_api limits quotas approvals policy
REGRESS_OPTS = --dbname=agentidp_regression

ISOLATION_SPECS = agent_name_race agent_delete_race secret_limit_race audit_chain_race refresh_race action_cap_race approval_consume_race \
	approval_expiry_race
ISOLATION_SPECS_OPTS = --inputdir=test/isolation --dbname=agentidp_isolation \
	--load-extension=agentidp

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src -I$(srcdir)/bgworker
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-clobbered -Werror
SHLIB_LINK = -lcrypto -lcurl -lhiredis

ifeq ($(SANITIZE),1)
PG_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
SHLIB_LINK += -fsanitize=address,undefined
endif

# rebuild everything when the flags change (SANITIZE=1 and back)
BUILD_FLAGS_STAMP = .build-flags
$(shell echo '$(PG_CFLAGS) $(SHLIB_LINK)' | cmp -s - $(BUILD_FLAGS_STAMP) || \
	echo '$(PG_CFLAGS) $(SHLIB_LINK)' > $(BUILD_FLAGS_STAMP))
EXTRA_CLEAN = $(BUILD_FLAGS_STAMP) agentidp-httpd $(HTTPD_OBJS)

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifeq ($(PGXS),)
# a fresh machine: make run and make test install PostgreSQL first
all install installcheck:
	@echo "pg_config not found: run 'make run' (as root it installs what is missing)" >&2; exit 1
else
include $(PGXS)
endif

# agentidp-httpd, the HTTP front: a client program beside the module, so
# explicit rules (PGXS builds one MODULE_big or one PROGRAM, not both)
HTTPD_OBJS = src/httpd/batch.o src/httpd/form.o src/httpd/log.o src/httpd/main.o \
	src/httpd/metrics.o src/httpd/pool.o src/httpd/server.o
HTTPD_CFLAGS = -O2 -g -std=gnu11 -pthread -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-sign-compare -Werror \
	-I$(shell $(PG_CONFIG) --includedir)
HTTPD_LIBS = -lmicrohttpd -L$(shell $(PG_CONFIG) --libdir) -lpq -pthread
ifeq ($(SANITIZE),1)
HTTPD_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
HTTPD_LIBS += -fsanitize=address,undefined
endif

ifneq ($(PGXS),)
all: agentidp-httpd
install: install-httpd
endif

src/httpd/%.o: src/httpd/%.c src/httpd/httpd.h $(BUILD_FLAGS_STAMP)
	$(CC) $(HTTPD_CFLAGS) -c -o $@ $<

agentidp-httpd: $(HTTPD_OBJS)
	$(CC) $(HTTPD_CFLAGS) -o $@ $(HTTPD_OBJS) $(HTTPD_LIBS)

install-httpd: agentidp-httpd
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) agentidp-httpd '$(DESTDIR)$(bindir)/'

$(OBJS): $(BUILD_FLAGS_STAMP) src/agentidp.h src/audit.h src/credentials.h src/jose.h src/jwk.h src/keys.h src/refusals.h src/token_state.h src/tokens.h src/issuers.h src/authz.h src/http.h src/webhooks.h src/policy.h src/ratelimit.h src/ratelimit_backend.h bgworker/worker.h

.PHONY: run test stop deps tap isolationcheck install-httpd

run:
	@scripts/run.sh

test:
	@scripts/test.sh

stop:
	@scripts/cluster.sh stop
	@AGENTIDP_TEST=1 scripts/cluster.sh stop

deps:
	@scripts/deps.sh

# isolation specs against the running cluster (scripts/test.sh sets PG*)
isolationcheck:
	$(pg_isolation_regress_installcheck) $(ISOLATION_SPECS_OPTS) $(ISOLATION_SPECS)

# TAP tests: their own throwaway clusters, run as the unprivileged OS user
tap:
	@scripts/tap.sh
