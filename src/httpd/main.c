/*-------------------------------------------------------------------------
 *
 * main.c
 *	  agentidp-httpd: configuration (a key = value file and --key value
 *	  flags, flags winning), start-up, and signals.  Every signal is blocked
 *	  in every thread and taken by sigwait() in the main thread, so that no
 *	  handler runs inside libpq or libmicrohttpd: SIGTERM and SIGINT drain
 *	  and exit 0, SIGHUP reopens the log file.
 *
 * IDENTIFICATION
 *	  src/httpd/main.c
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "httpd.h"

HttpdConfig httpd_config;

typedef enum OptType
{
	OPT_STRING,
	OPT_INT,
	OPT_SIZE
} OptType;

typedef struct Option
{
	const char *name;
	OptType		type;
	void	   *var;
	long		min;
	long		max;
	const char *help;
} Option;

static Option options[] = {
	{"listen", OPT_STRING, &httpd_config.listen, 0, 0,
	"IP address to listen on (127.0.0.1)"},
	{"port", OPT_INT, &httpd_config.port, 1, 65535, "TCP port (8499)"},
	{"conninfo", OPT_STRING, &httpd_config.conninfo, 0, 0,
	"libpq connection string of a role in agentidp_service"},
	{"pool_size", OPT_INT, &httpd_config.pool_size, 1, 1000,
	"database connections (8)"},
	{"pool_wait_ms", OPT_INT, &httpd_config.pool_wait_ms, 1, 60000,
	"how long a request waits for a connection before 503 (2000)"},
	{"statement_timeout_ms", OPT_INT, &httpd_config.statement_timeout_ms, 0, 3600000,
	"statement_timeout of the pool's sessions (5000)"},
	{"public_url", OPT_STRING, &httpd_config.public_url, 0, 0,
	"public base URL, equal to agentidp.issuer_base (http://127.0.0.1:8499)"},
	{"tls_cert", OPT_STRING, &httpd_config.tls_cert, 0, 0,
	"PEM certificate chain file: serve HTTPS"},
	{"tls_key", OPT_STRING, &httpd_config.tls_key, 0, 0, "PEM private key file"},
	{"trusted_proxy_header", OPT_STRING, &httpd_config.trusted_proxy_header, 0, 0,
	"header whose left-most address is the client, e.g. X-Forwarded-For (off)"},
	{"log_file", OPT_STRING, &httpd_config.log_file, 0, 0,
	"access and error log (standard error)"},
	{"pid_file", OPT_STRING, &httpd_config.pid_file, 0, 0,
	"file to write the process id to (none)"},
	{"max_connections", OPT_INT, &httpd_config.max_connections, 1, 100000,
	"concurrent HTTP connections (1024)"},
	{"connection_timeout", OPT_INT, &httpd_config.connection_timeout, 1, 3600,
	"seconds an idle or slow connection may last (10)"},
	{"body_limit", OPT_SIZE, &httpd_config.body_limit, 1024, 16 * 1024 * 1024,
	"request body limit in bytes (65536)"},
	{"threads", OPT_INT, &httpd_config.threads, 1, 1024,
	"server threads (4 x pool_size)"},
	{"cache_seconds", OPT_INT, &httpd_config.cache_seconds, 0, 300,
	"seconds the daemon keeps a JWK Set or metadata document (5)"},
	{"tenant_host_suffix", OPT_STRING, &httpd_config.tenant_host_suffix, 0, 0,
	"route by host: <tenant><suffix> names the tenant, e.g. .idp.example.com (off)"},
	{"token_batch_max", OPT_INT, &httpd_config.token_batch_max, 1, 1000,
	"token requests issued in one transaction at most; 1: one each (32)"},
	{"token_batch_concurrency", OPT_INT, &httpd_config.token_batch_concurrency, 1, 1000,
	"token batches running at once (2)"},
	{NULL}
};

static void
usage(FILE *out)
{
	fprintf(out,
			"agentidp-httpd %s: the OAuth2 HTTP front of the agentidp extension\n\n"
			"Usage: agentidp-httpd [--config FILE] [--KEY VALUE ...]\n\n"
			"Settings (in the file as \"key = value\", or as flags):\n",
			HTTPD_VERSION);
	for (Option *o = options; o->name; o++)
		fprintf(out, "  --%-22s %s\n", o->name, o->help);
	fprintf(out, "\n  --config FILE            read settings from FILE first\n"
			"  --check                  check the settings and exit\n"
			"  --help, --version\n");
}

static bool
set_option(const char *name, const char *value, const char *where)
{
	for (Option *o = options; o->name; o++)
	{
		char	   *end;
		long		v;

		if (strcmp(o->name, name) != 0)
			continue;
		if (o->type == OPT_STRING)
		{
			char	  **var = o->var;

			free(*var);
			*var = value[0] ? strdup(value) : NULL;
			return true;
		}
		errno = 0;
		v = strtol(value, &end, 10);
		if (errno || end == value || *end != '\0' || v < o->min || v > o->max)
		{
			fprintf(stderr, "agentidp-httpd: %s: %s must be an integer from %ld to %ld\n",
					where, name, o->min, o->max);
			return false;
		}
		if (o->type == OPT_INT)
			*(int *) o->var = (int) v;
		else
			*(size_t *) o->var = (size_t) v;
		return true;
	}
	fprintf(stderr, "agentidp-httpd: %s: unknown setting \"%s\"\n", where, name);
	return false;
}

static char *
trim(char *s)
{
	char	   *e;

	while (isspace((unsigned char) *s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char) e[-1]))
		*--e = '\0';
	return s;
}

/* key = value lines; '#' starts a comment; values may be single-quoted */
static bool
read_config(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[4096];
	int			lineno = 0;
	bool		ok = true;

	if (f == NULL)
	{
		fprintf(stderr, "agentidp-httpd: could not open %s: %s\n", path,
				strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), f))
	{
		char	   *s = trim(line);
		char	   *eq;
		char	   *key;
		char	   *val;
		char		where[64];
		size_t		n;

		lineno++;
		if (*s == '\0' || *s == '#')
			continue;
		snprintf(where, sizeof(where), "line %d", lineno);
		eq = strchr(s, '=');
		if (eq == NULL)
		{
			fprintf(stderr, "agentidp-httpd: %s: %s: expected key = value\n", path, where);
			ok = false;
			continue;
		}
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		n = strlen(val);
		if (n >= 2 && val[0] == '\'' && val[n - 1] == '\'')
		{
			val[n - 1] = '\0';
			val++;
		}
		if (!set_option(key, val, where))
			ok = false;
	}
	fclose(f);
	return ok;
}

static void
set_defaults(void)
{
	httpd_config.listen = strdup("127.0.0.1");
	httpd_config.port = 8499;
	httpd_config.conninfo = strdup("");
	httpd_config.pool_size = 8;
	httpd_config.pool_wait_ms = 2000;
	httpd_config.statement_timeout_ms = 5000;
	httpd_config.public_url = strdup("http://127.0.0.1:8499");
	httpd_config.max_connections = 1024;
	httpd_config.connection_timeout = 10;
	httpd_config.body_limit = 64 * 1024;
	httpd_config.threads = 0;
	httpd_config.cache_seconds = 5;
	httpd_config.token_batch_max = 32;
	httpd_config.token_batch_concurrency = 2;
}

static bool
write_pid_file(const char *path)
{
	FILE	   *f = fopen(path, "w");

	if (f == NULL)
		return false;
	fprintf(f, "%ld\n", (long) getpid());
	return fclose(f) == 0;
}

/*
 * Every connection holds a descriptor.  Past the open-file limit accept()
 * fails, and a libmicrohttpd 0.9 thread that holds no connection then
 * retries at once, for ever, logging each failure: a busy loop that fills
 * the disk.  So the soft limit is raised to what max_connections needs
 * (systemd's default is 1024), or else max_connections lowered to fit.
 */
static void
fit_open_files(void)
{
	struct rlimit rl;

	/* the listen socket, each thread's epoll and wake-up, the pool, the log */
	rlim_t		reserve = 32 + 4 * (rlim_t) httpd_config.threads +
		(rlim_t) httpd_config.pool_size;
	rlim_t		need = (rlim_t) httpd_config.max_connections + reserve;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) ?
		need : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur >= need)
		return;
	httpd_config.max_connections = rl.rlim_cur > reserve + 1 ?
		(int) (rl.rlim_cur - reserve) : 1;
	httpd_log("warning", "msg=\"max_connections lowered to fit the open-file limit\" "
			  "max_connections=%d open_files=%lu",
			  httpd_config.max_connections, (unsigned long) rl.rlim_cur);
}

int
main(int argc, char **argv)
{
	bool		check_only = false;
	sigset_t	sigs;
	int			sig;

	set_defaults();

	/* --config first, so that flags override the file wherever they stand */
	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
		{
			if (!read_config(argv[++i]))
				return 2;
		}
		else if (strncmp(argv[i], "--config=", 9) == 0)
		{
			if (!read_config(argv[i] + 9))
				return 2;
		}
	}
	for (int i = 1; i < argc; i++)
	{
		const char *arg = argv[i];
		char		name[64];
		const char *value;
		const char *eq;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
		{
			usage(stdout);
			return 0;
		}
		if (strcmp(arg, "--version") == 0)
		{
			printf("agentidp-httpd %s\n", HTTPD_VERSION);
			return 0;
		}
		if (strcmp(arg, "--check") == 0)
		{
			check_only = true;
			continue;
		}
		if (strncmp(arg, "--", 2) != 0)
		{
			usage(stderr);
			return 2;
		}
		arg += 2;
		eq = strchr(arg, '=');
		if (eq)
		{
			snprintf(name, sizeof(name), "%.*s", (int) (eq - arg), arg);
			value = eq + 1;
		}
		else
		{
			if (i + 1 >= argc)
			{
				fprintf(stderr, "agentidp-httpd: --%s needs a value\n", arg);
				return 2;
			}
			snprintf(name, sizeof(name), "%s", arg);
			value = argv[++i];
		}
		if (strcmp(name, "config") == 0)
			continue;
		/* dashes in flags as in the file's underscores */
		for (char *p = name; *p; p++)
			if (*p == '-')
				*p = '_';
		if (!set_option(name, value, "command line"))
			return 2;
	}

	/*
	 * A request holds its thread while its statement runs, and token
	 * requests wait in threads to be batched (batch.c): more threads than
	 * connections let the batches fill.
	 */
	if (httpd_config.threads == 0)
		httpd_config.threads = httpd_config.pool_size * 4 > 1024 ? 1024 :
			httpd_config.pool_size * 4;
	if (httpd_config.tenant_host_suffix && httpd_config.tenant_host_suffix[0] != '.')
	{
		fprintf(stderr, "agentidp-httpd: tenant_host_suffix must begin with a dot, e.g. .idp.example.com\n");
		return 2;
	}
	if (httpd_config.public_url == NULL)
	{
		fprintf(stderr, "agentidp-httpd: public_url must be set\n");
		return 2;
	}
	/* the issuer base has no trailing slash; paths are appended to it */
	{
		size_t		n = strlen(httpd_config.public_url);

		while (n > 0 && httpd_config.public_url[n - 1] == '/')
			httpd_config.public_url[--n] = '\0';
	}
	if (check_only)
	{
		printf("agentidp-httpd: settings are valid\n");
		return 0;
	}

	if (httpd_log_open(httpd_config.log_file) != 0)
	{
		fprintf(stderr, "agentidp-httpd: could not open log file %s: %s\n",
				httpd_config.log_file, strerror(errno));
		return 1;
	}

	/* block before any thread starts, so that all of them inherit it */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	/* a client that goes away must not kill the process */
	signal(SIGPIPE, SIG_IGN);

	fit_open_files();
	if (!httpd_pool_init(httpd_config.conninfo, httpd_config.pool_size,
						 httpd_config.pool_wait_ms, httpd_config.statement_timeout_ms))
	{
		httpd_log("error", "msg=\"out of memory\"");
		return 1;
	}
	if (!httpd_server_start())
	{
		httpd_log("error", "msg=\"could not start the HTTP server\" listen=%s port=%d",
				  httpd_config.listen, httpd_config.port);
		return 1;
	}
	if (httpd_config.pid_file && !write_pid_file(httpd_config.pid_file))
		httpd_log("warning", "msg=\"could not write the pid file\"");
	httpd_log("info", "msg=\"listening\" listen=%s port=%d tls=%s threads=%d pool_size=%d",
			  httpd_config.listen, httpd_config.port,
			  httpd_config.tls_cert ? "on" : "off", httpd_config.threads,
			  httpd_config.pool_size);

	for (;;)
	{
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP)
		{
			httpd_log_reopen();
			continue;
		}
		break;
	}

	httpd_log("info", "msg=\"shutting down\" signal=%d", sig);
	httpd_server_drain(5);
	httpd_server_stop();
	httpd_pool_shutdown();
	if (httpd_config.pid_file)
		unlink(httpd_config.pid_file);
	httpd_log("info", "msg=\"stopped\"");
	return 0;
}
