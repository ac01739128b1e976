/*-------------------------------------------------------------------------
 *
 * redis_limit.c
 *	  The Redis store of rate-limit buckets (hiredis), for servers that must
 *	  share their limits: agentidp.redis_url, agentidp.redis_timeout.  What
 *	  to do when Redis does not answer is ratelimit.c's decision.
 *
 *	  A check is one round trip: EVALSHA of a Lua script that runs GCRA
 *	  over the check's buckets at once, on Redis's clock, so that servers
 *	  whose clocks differ still agree (EVAL when Redis does not have the
 *	  script yet, which also caches it).  It is sent and received in two
 *	  calls, so that a grant can sign its token while Redis answers; an
 *	  answer left unread (an error came between) closes the connection at
 *	  the next send, lest it be taken for that one's.  Each backend keeps
 *	  one connection and reuses it; a connection that fails is closed, and the
 *	  backend tries a new one no sooner than a second later, so that a
 *	  Redis that is down costs every check nothing but a counter, and
 *	  its return brings one connection per backend, not a storm.
 *
 *	  hiredis is blocking: a check can hold the backend for the connect
 *	  timeout plus the command timeout, both agentidp.redis_timeout, and
 *	  interrupts wait until then.  hiredis allocates with malloc: every
 *	  reply is freed before anything that may raise an error.  The password
 *	  goes to Redis's AUTH and nowhere else: messages name the server by
 *	  agentidp_redis_target(), without credentials.  It can be in the URL,
 *	  but PostgreSQL logs a setting's new value when a reload changes it,
 *	  so agentidp.redis_password_file keeps it out of every setting.
 *
 * IDENTIFICATION
 *	  src/redis_limit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include "storage/fd.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "ratelimit_backend.h"

/*
 * GCRA over KEYS, all or nothing; ARGV holds each bucket's emission
 * interval and period in microseconds.  The same arithmetic as
 * agentidp_rate_decide() in ratelimit.c: keep them in step.  A stored
 * value is the bucket's theoretical arrival time; the key expires when
 * the bucket is full again, so Redis holds only buckets in use.
 * Returns {allowed, binding (1-based), remaining, reset, retry}.
 */
static const char gcra_script[] =
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
"local tat, ok, bind, wait = {}, 1, 1, 0\n"
"for i = 1, #KEYS do\n"
"  local v = tonumber(redis.call('GET', KEYS[i]) or now)\n"
"  if v < now then v = now end\n"
"  tat[i] = v + tonumber(ARGV[2 * i - 1])\n"
"  local w = tat[i] - tonumber(ARGV[2 * i]) - now\n"
"  if w > 0 then\n"
"    if ok == 1 or w > wait then bind, wait = i, w end\n"
"    ok = 0\n"
"  end\n"
"end\n"
"if ok == 0 then\n"
"  return {0, bind, 0, tat[bind] - tonumber(ARGV[2 * bind - 1]) - now, wait}\n"
"end\n"
"local least = -1\n"
"for i = 1, #KEYS do\n"
"  local r = math.floor((tonumber(ARGV[2 * i]) - (tat[i] - now)) / tonumber(ARGV[2 * i - 1]))\n"
"  if least < 0 or r < least then bind, least = i, r end\n"
"  redis.call('SET', KEYS[i], string.format('%d', tat[i]), 'PX', math.ceil((tat[i] - now) / 1000))\n"
"end\n"
"return {1, bind, least, tat[bind] - now, 0}\n";

/* a connection that failed is tried again no sooner than this */
#define RECONNECT_DELAY_MS	1000

/* the parsed agentidp.redis_url: a GUC "extra", one malloc'd block */
typedef struct RedisTarget
{
	bool		unix_socket;	/* unix://: host is the socket's path */
	bool		ipv6;			/* host is an IPv6 address (bracketed in URLs) */
	char		host[256];
	int			port;
	int			db;
	char		user[128];		/* empty: AUTH with the password alone */
	char		password[256];	/* empty: no AUTH */
	char		display[300];	/* redis://host:port/db, unix:///path?db=N */
} RedisTarget;

static char *agentidp_redis_url = NULL;
static char *agentidp_redis_password_file = NULL;
static int	agentidp_redis_timeout = 50;
static RedisTarget *target = NULL;

static redisContext *conn = NULL;
static TimestampTz next_attempt = 0;
static char last_error[160];
static char script_sha[2 * SHA_DIGEST_LENGTH + 1];

/*
 * s[0..len) percent-decoded into out, of size bytes; false when it does
 * not fit, or an escape is malformed or a NUL
 */
static bool
url_decode(const char *s, size_t len, char *out, size_t size)
{
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (c == '%')
		{
			char		hex[3];

			if (i + 2 >= len || !isxdigit((unsigned char) s[i + 1]) ||
				!isxdigit((unsigned char) s[i + 2]))
				return false;
			hex[0] = s[i + 1];
			hex[1] = s[i + 2];
			hex[2] = '\0';
			c = (char) strtol(hex, NULL, 16);
			if (c == '\0')
				return false;
			i += 2;
		}
		if (o + 1 >= size)
			return false;
		out[o++] = c;
	}
	out[o] = '\0';
	return true;
}

/* a decimal number of 1 to 9 digits within [min, max] */
static bool
parse_number(const char *s, size_t len, int min, int max, int *out)
{
	int			v = 0;

	if (len == 0 || len > 9)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (!isdigit((unsigned char) s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

/*
 * The "/db" or "?db=N" at the end of a URL, or nothing; false when it is
 * anything else
 */
static bool
parse_db(const char *p, const char *prefix, int *db)
{
	size_t		len = strlen(prefix);

	if (*p == '\0' || strcmp(p, prefix) == 0)
		return true;
	return strncmp(p, prefix, len) == 0 &&
		parse_number(p + len, strlen(p + len), 0, 999999, db);
}

/*
 * The parts of agentidp.redis_url after the scheme and the credentials.
 * Each returns NULL when p is well-formed, filling t, else the detail
 * of the error, which names no part of the value.
 */

/* /path/to/redis.sock[?db=N]: an absolute path that fits sockaddr_un */
static const char *
parse_unix_target(const char *p, RedisTarget *t)
{
	const char *end = p + strcspn(p, "?");

	if (*p != '/' || end - p < 2 || (size_t) (end - p) >= 108 ||
		!url_decode(p, end - p, t->host, sizeof(t->host)))
		return "The socket must be an absolute path of at most 107 bytes: unix:///path/to/redis.sock.";
	if (!parse_db(end, "?db=", &t->db))
		return "After the socket's path only \"?db=\" and a database number may follow.";
	t->unix_socket = true;
	snprintf(t->display, sizeof(t->display), "unix://%s?db=%d", t->host, t->db);
	return NULL;
}

/* host[:port][/db]: a name, an IPv4 address, or an IPv6 one in brackets */
static const char *
parse_tcp_target(const char *p, RedisTarget *t)
{
	const char *end;

	if (*p == '[')
	{
		/* RFC 3986's IP literal, as redis://[::1]:6379 */
		const char *rbracket = strchr(p, ']');
		struct in6_addr a6;

		if (rbracket == NULL || rbracket - p - 1 >= (ptrdiff_t) sizeof(t->host))
			return "An IPv6 address goes in brackets, as in redis://[::1]:6379/0.";
		memcpy(t->host, p + 1, rbracket - p - 1);
		end = rbracket + 1;
		if (inet_pton(AF_INET6, t->host, &a6) != 1 || (*end != '\0' && *end != ':' && *end != '/'))
			return "An IPv6 address goes in brackets, as in redis://[::1]:6379/0.";
		t->ipv6 = true;
	}
	else
	{
		end = p + strcspn(p, ":/");
		if (end == p || (size_t) (end - p) >= sizeof(t->host) ||
			strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") <
			(size_t) (end - p))
			return "The host must be a name, an IPv4 address or an IPv6 address in brackets.";
		memcpy(t->host, p, end - p);
	}
	p = end;
	if (*p == ':')
	{
		size_t		len = strcspn(p + 1, "/");

		if (!parse_number(p + 1, len, 1, 65535, &t->port))
			return "The port must be a number from 1 to 65535.";
		p += 1 + len;
	}
	/* here p is at "/db", "/" or the end */
	if (!parse_db(p, "/", &t->db))
		return "The database must be a number.";
	snprintf(t->display, sizeof(t->display), t->ipv6 ? "redis://[%s]:%d/%d" : "redis://%s:%d/%d",
			 t->host, t->port, t->db);
	return NULL;
}

/* [[user]:password@] at p, percent-decoded into t; *p moves past it */
static const char *
parse_credentials(const char **p, RedisTarget *t)
{
	const char *slash = strchr(*p, '/');
	const char *at = memchr(*p, '@', slash ? (size_t) (slash - *p) : strlen(*p));
	const char *colon;

	if (at == NULL)
		return NULL;
	colon = memchr(*p, ':', at - *p);
	if (colon == NULL ||
		!url_decode(*p, colon - *p, t->user, sizeof(t->user)) ||
		!url_decode(colon + 1, at - colon - 1, t->password, sizeof(t->password)) ||
		t->password[0] == '\0')
		return "Credentials must be given as \":password@\" or \"user:password@\", percent-encoded.";
	*p = at + 1;
	return NULL;
}

/*
 * redis://[[user]:password@]host[:port][/db] over TCP, or
 * unix://[[user]:password@]/path/to/redis.sock[?db=N] over a Unix socket
 * (the form redis-py and others read).  The error messages name no part
 * of the value: PostgreSQL would otherwise quote all of it, the password
 * included (GUC_check_errmsg replaces its message).
 */
static bool
check_redis_url(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	const char *p;
	const char *error;
	bool		unix_socket = strncmp(v ? v : "", "unix://", 7) == 0;
	RedisTarget t;

	if (v == NULL || v[0] == '\0')
		return true;
	GUC_check_errmsg("invalid value for parameter \"agentidp.redis_url\"");
	if (strncmp(v, "redis://", 8) != 0 && !unix_socket)
	{
		GUC_check_errdetail("The URL must start with \"redis://\" or \"unix://\"; TLS (rediss://) is not supported.");
		return false;
	}
	for (p = v; *p; p++)
		if ((unsigned char) *p <= 0x20 || *p == 0x7f)
		{
			GUC_check_errdetail("The URL must not contain white space or control characters.");
			return false;
		}
	memset(&t, 0, sizeof(t));
	t.port = 6379;
	p = v + (unix_socket ? 7 : 8);
	error = parse_credentials(&p, &t);
	if (error == NULL)
		error = unix_socket ? parse_unix_target(p, &t) : parse_tcp_target(p, &t);
	*extra = error ? NULL : malloc(sizeof(RedisTarget));
	if (*extra != NULL)
		memcpy(*extra, &t, sizeof(t));
	explicit_bzero(&t, sizeof(t));
	if (error != NULL)
		GUC_check_errdetail("%s", error);
	return *extra != NULL;
}

static void
close_connection(void)
{
	if (conn != NULL)
		redisFree(conn);
	conn = NULL;
}

/* a new server (or none): the next check connects to it at once */
static void
assign_redis_url(const char *newval, void *extra)
{
	close_connection();
	next_attempt = 0;
	target = (newval != NULL && newval[0] != '\0') ? (RedisTarget *) extra : NULL;
}

void
agentidp_redis_limits_init(void)
{
	unsigned char digest[SHA_DIGEST_LENGTH];

	/* superusers alone may see it: it may hold a password */
	DefineCustomStringVariable("agentidp.redis_url",
							   "Redis server that holds the rate limits, shared by every server using it; empty: shared memory.",
							   "redis://[[user]:password@]host[:port][/db] (host a name, an IPv4 address or [IPv6]) or unix://[[user]:password@]/path/to/redis.sock[?db=N]",
							   &agentidp_redis_url,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY,
							   check_redis_url, assign_redis_url, NULL);

	DefineCustomStringVariable("agentidp.redis_password_file",
							   "File whose first line is the password of the Redis server, when agentidp.redis_url has none.",
							   NULL,
							   &agentidp_redis_password_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.redis_timeout",
							"How long a rate-limit check waits for Redis to connect, and then to answer.",
							"Past it, agentidp.rate_limit_fail_open decides.",
							&agentidp_redis_timeout,
							50, 1, 60000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	SHA1((const unsigned char *) gcra_script, strlen(gcra_script), digest);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(script_sha + 2 * i, 3, "%02x", digest[i]);
}

bool
agentidp_redis_configured(void)
{
	return target != NULL;
}

const char *
agentidp_redis_target(void)
{
	return target != NULL ? target->display : "";
}

/* what went wrong, for a detail that ends with its own period */
static void
set_error(const char *what, const char *detail)
{
	size_t		len;

	snprintf(last_error, sizeof(last_error), "%s%s%s", what,
			 detail && detail[0] ? ": " : "", detail ? detail : "");
	len = strlen(last_error);
	while (len > 0 && (last_error[len - 1] == '.' || last_error[len - 1] == ' '))
		last_error[--len] = '\0';
}

/* a command whose reply must be +OK; false, with last_error, otherwise */
static bool
simple_command(int argc, const char **argv, const char *what)
{
	redisReply *r = redisCommandArgv(conn, argc, argv, NULL);
	bool		ok = r != NULL && r->type == REDIS_REPLY_STATUS;

	if (r == NULL)
		set_error(what, conn->errstr);
	else if (!ok)
		set_error(what, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	freeReplyObject(r);
	return ok;
}

/*
 * The first line of agentidp.redis_password_file into buf; false, with
 * last_error, when it cannot be read or is empty.
 */
static bool
read_password_file(char *buf, size_t size)
{
	FILE	   *f = AllocateFile(agentidp_redis_password_file, "r");
	bool		ok;

	if (f == NULL)
	{
		set_error("could not open agentidp.redis_password_file", strerror(errno));
		return false;
	}
	ok = fgets(buf, size, f) != NULL;
	FreeFile(f);
	if (ok)
		buf[strcspn(buf, "\r\n")] = '\0';
	if (!ok || buf[0] == '\0')
	{
		set_error("agentidp.redis_password_file holds no password", NULL);
		return false;
	}
	return true;
}

static bool
connect_redis(void)
{
	struct timeval tv;
	char		db[16];
	char		password[sizeof(target->password)];
	const char *auth[3] = {"AUTH", NULL, NULL};
	const char *select[2] = {"SELECT", db};
	bool		ok = true;

	tv.tv_sec = agentidp_redis_timeout / 1000;
	tv.tv_usec = (agentidp_redis_timeout % 1000) * 1000;
	conn = target->unix_socket ? redisConnectUnixWithTimeout(target->host, tv) :
		redisConnectWithTimeout(target->host, target->port, tv);
	if (conn == NULL || conn->err)
	{
		set_error("could not connect", conn ? conn->errstr : "out of memory");
		close_connection();
		return false;
	}
	if (redisSetTimeout(conn, tv) != REDIS_OK)
	{
		set_error("could not set the timeout", conn->errstr);
		close_connection();
		return false;
	}
	/* the URL's password, else the file's */
	strlcpy(password, target->password, sizeof(password));
	if (password[0] == '\0' && agentidp_redis_password_file[0] != '\0')
		ok = read_password_file(password, sizeof(password));
	if (ok && password[0] != '\0')
	{
		int			argc = 1;

		if (target->user[0] != '\0')
			auth[argc++] = target->user;
		auth[argc++] = password;
		ok = simple_command(argc, auth, "authentication failed");
	}
	explicit_bzero(password, sizeof(password));
	if (!ok)
	{
		close_connection();
		return false;
	}
	if (target->db != 0)
	{
		snprintf(db, sizeof(db), "%d", target->db);
		if (!simple_command(2, select, "could not select the database"))
		{
			close_connection();
			return false;
		}
	}
	return true;
}

/* the script's answer: five integers */
static bool
read_verdict(redisReply *r, int n, RateVerdict *v)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 5)
		return false;
	for (int i = 0; i < 5; i++)
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return false;
	if (r->element[1]->integer < 1 || r->element[1]->integer > n)
		return false;
	v->allowed = r->element[0]->integer == 1;
	v->binding = (int) r->element[1]->integer - 1;
	v->remaining = r->element[2]->integer;
	v->reset = r->element[3]->integer;
	v->retry = r->element[4]->integer;
	return true;
}

/* a connection that failed is closed, and tried again later */
static void
connection_failed(const char *what)
{
	set_error(what, conn->errstr);
	close_connection();
	next_attempt = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RECONNECT_DELAY_MS);
}

/*
 * Queue the script for the buckets, as EVALSHA, or as EVAL with the
 * script itself, and write it; false, with the connection closed, when
 * that fails.  hiredis copies the arguments into its buffer.
 */
static bool
send_check(const RateBucket *b, int n, bool whole_script)
{
	const char *argv[3 + 3 * RATE_MAX_BUCKETS];
	char		numbers[2 * RATE_MAX_BUCKETS][24];
	char		nkeys[8];
	int			argc = 0;
	int			done = 0;

	snprintf(nkeys, sizeof(nkeys), "%d", n);
	argv[argc++] = whole_script ? "EVAL" : "EVALSHA";
	argv[argc++] = whole_script ? gcra_script : script_sha;
	argv[argc++] = nkeys;
	for (int i = 0; i < n; i++)
		argv[argc++] = b[i].key;
	for (int i = 0; i < n; i++)
	{
		snprintf(numbers[2 * i], sizeof(numbers[0]), INT64_FORMAT, b[i].emission);
		snprintf(numbers[2 * i + 1], sizeof(numbers[0]), INT64_FORMAT, b[i].period);
		argv[argc++] = numbers[2 * i];
		argv[argc++] = numbers[2 * i + 1];
	}
	if (redisAppendCommandArgv(conn, argc, argv, NULL) != REDIS_OK)
	{
		connection_failed("could not send");
		return false;
	}
	while (!done)
	{
		if (redisBufferWrite(conn, &done) != REDIS_OK)
		{
			connection_failed("could not send");
			return false;
		}
	}
	return true;
}

/* the check in flight: its buckets, until its answer is read */
static const RateBucket *pending = NULL;
static int	npending = 0;

bool
agentidp_redis_limits_send(const RateBucket *b, int n, const char **why)
{
	Assert(target != NULL && n >= 1 && n <= RATE_MAX_BUCKETS);
	*why = last_error;

	/*
	 * An answer nobody read (an error came between a send and its
	 * receive) would be taken for this one's: start afresh.
	 */
	if (pending != NULL)
		close_connection();
	pending = NULL;
	if (conn == NULL)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (now < next_attempt)
			return false;
		if (!connect_redis())
		{
			next_attempt = TimestampTzPlusMilliseconds(now, RECONNECT_DELAY_MS);
			return false;
		}
	}
	if (!send_check(b, n, false))
		return false;
	pending = b;
	npending = n;
	return true;
}

bool
agentidp_redis_limits_receive(RateVerdict *v, const char **why)
{
	redisReply *r = NULL;
	bool		ok;

	Assert(pending != NULL && conn != NULL);
	*why = last_error;
	if (redisGetReply(conn, (void **) &r) == REDIS_OK && r != NULL &&
		r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
	{
		/* Redis restarted, or its scripts were flushed: send the script */
		freeReplyObject(r);
		r = NULL;
		if (send_check(pending, npending, true) && redisGetReply(conn, (void **) &r) != REDIS_OK)
			r = NULL;
	}
	if (r == NULL)
	{
		/* the connection is in an unknown state: a new one, later */
		if (conn != NULL)
			connection_failed("no answer");
		pending = NULL;
		return false;
	}
	pending = NULL;
	ok = read_verdict(r, npending, v);
	if (!ok)
		set_error("unexpected answer to the rate-limit script",
				  r->type == REDIS_REPLY_ERROR ? r->str : NULL);
	freeReplyObject(r);
	return ok;
}
