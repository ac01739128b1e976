/*-------------------------------------------------------------------------
 *
 * server.c
 *	  The libmicrohttpd server: routing, request bodies, client
 *	  authentication headers, the request object passed to the endpoint
 *	  functions, the admin API's requests, responses, the JWKS and metadata
 *	  cache, and draining at shutdown.  Every OAuth and admin decision is
 *	  the database's: this file only turns HTTP into one SQL call and the
 *	  call's answer back into HTTP.
 *
 *	  Per-request state is made on the first access-handler call and freed
 *	  in the completed callback, which also writes the access log line.
 *
 * IDENTIFICATION
 *	  src/httpd/server.c
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "httpd.h"

typedef enum Route
{
	R_NONE,
	R_TOKEN,
	R_REVOKE,
	R_INTROSPECT,
	R_JWKS,
	R_METADATA,
	R_HEALTHZ,
	R_READYZ,
	R_METRICS,
	R_ADMIN						/* /admin/v1 and below, every method */
} Route;

typedef struct Request
{
	struct timespec start;
	char		request_id[33];
	char		client_addr[INET6_ADDRSTRLEN];
	char	   *method;
	char	   *path;
	Route		route;
	Endpoint	ep;
	char		tenant[64];		/* empty: not scoped by path or host */
	char		host_base[300];	/* scheme://Host of a request routed by host */
	StrBuf		body;
	bool		too_large;
	size_t		discarded;
	int			status;			/* what was sent, for the log and metrics */
} Request;

/* response flags */
#define RF_NO_STORE		0x01
#define RF_WWW_AUTH		0x02
#define RF_PUBLIC		0x04
#define RF_RETRY		0x08

static struct MHD_Daemon *daemon_handle;
static int	in_flight;
static int	draining;		/* set at SIGTERM: close keep-alive connections */

/*
 * A body that may hold tokens: its bytes are zeroed before they go back to
 * the allocator, when libmicrohttpd is done with the response.
 */
typedef struct SecretBody
{
	size_t		len;
	char		data[];
} SecretBody;

static void
secret_body_free(void *cls)
{
	SecretBody *b = cls;

	explicit_bzero(b->data, b->len);
	free(b);
}

static double
elapsed_seconds(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

/*
 * Make a response.  body may be NULL (no body); its bytes are copied.
 * allow names the methods of a 405.  NULL when out of memory.
 */
static struct MHD_Response *
make_response(const Request *req, const char *content_type, const char *body,
			  size_t len, int flags, const char *allow)
{
	SecretBody *b = malloc(sizeof(SecretBody) + len + 1);
	struct MHD_Response *resp;

	if (b == NULL)
		return NULL;
	b->len = len;
	if (len)
		memcpy(b->data, body, len);
	b->data[len] = '\0';
	resp = MHD_create_response_from_buffer_with_free_callback_cls(len, b->data,
																  secret_body_free, b);
	if (resp == NULL)
	{
		secret_body_free(b);
		return NULL;
	}
	if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, "X-Request-Id", req->request_id);
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (flags & RF_NO_STORE)
	{
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
		MHD_add_response_header(resp, MHD_HTTP_HEADER_PRAGMA, "no-cache");
	}
	if (flags & RF_PUBLIC)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
								"public, max-age=300");
	if (flags & RF_WWW_AUTH)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
								"Basic realm=\"agentidp\"");
	if (flags & RF_RETRY)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	if (allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	if (__atomic_load_n(&draining, __ATOMIC_RELAXED))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	return resp;
}

static enum MHD_Result
queue_response(struct MHD_Connection *conn, Request *req, int status,
			   struct MHD_Response *resp)
{
	enum MHD_Result ret;

	if (resp == NULL)
		return MHD_NO;
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	if (ret == MHD_YES)
		req->status = status;
	return ret;
}

/* queue a response made by make_response() */
static enum MHD_Result
respond(struct MHD_Connection *conn, Request *req, int status,
		const char *content_type, const char *body, size_t len, int flags,
		const char *allow)
{
	return queue_response(conn, req, status,
						  make_response(req, content_type, body, len, flags, allow));
}

/* an OAuth2 error body (RFC 6749 section 5.2), never naming a secret */
static enum MHD_Result
respond_error(struct MHD_Connection *conn, Request *req, int status,
			  const char *error, const char *description, int flags,
			  const char *allow)
{
	StrBuf		buf = {0};
	enum MHD_Result ret;

	httpd_buf_appends(&buf, "{\"error\":");
	httpd_buf_json_string(&buf, error);
	if (description)
	{
		httpd_buf_appends(&buf, ",\"error_description\":");
		httpd_buf_json_string(&buf, description);
	}
	httpd_buf_appends(&buf, "}");
	if (buf.failed)
	{
		httpd_buf_free(&buf);
		return MHD_NO;
	}
	if (status == 401)
		flags |= RF_WWW_AUTH;
	ret = respond(conn, req, status, "application/json", buf.data, buf.len,
				  flags, allow);
	httpd_buf_free(&buf);
	return ret;
}

/* the reason phrase of a status the daemon itself answers the admin API with */
static const char *
reason_phrase(int status)
{
	switch (status)
	{
		case 400:
			return "Bad Request";
		case 404:
			return "Not Found";
		case 413:
			return "Content Too Large";
		case 415:
			return "Unsupported Media Type";
		case 503:
			return "Service Unavailable";
		default:
			return "Internal Server Error";
	}
}

/*
 * An admin API error of the daemon's own (RFC 9457 problem details), in
 * the form admin_api() gives its errors.  Admin responses are never stored.
 */
static enum MHD_Result
respond_problem(struct MHD_Connection *conn, Request *req, int status,
				const char *detail, int flags)
{
	StrBuf		buf = {0};
	enum MHD_Result ret;

	httpd_buf_appends(&buf, "{\"type\":\"about:blank\",\"title\":");
	httpd_buf_json_string(&buf, reason_phrase(status));
	httpd_buf_printf(&buf, ",\"status\":%d,\"detail\":", status);
	httpd_buf_json_string(&buf, detail);
	httpd_buf_appends(&buf, "}");
	if (buf.failed)
	{
		httpd_buf_free(&buf);
		return MHD_NO;
	}
	ret = respond(conn, req, status, "application/problem+json", buf.data, buf.len,
				  flags | RF_NO_STORE, NULL);
	httpd_buf_free(&buf);
	return ret;
}

/* ---------------------------------------------------------------------
 * The JWKS and metadata cache: a few seconds per tenant, since keys are
 * published before they sign, so that key-set fetches do not each cost a
 * database round trip.
 * ---------------------------------------------------------------------
 */
#define CACHE_SIZE 128

typedef struct CacheEntry
{
	PoolStatement stmt;
	char		tenant[64];
	char	   *body;			/* NULL: the tenant is unknown (404) */
	struct timespec expires;
	bool		used;
} CacheEntry;

static CacheEntry cache[CACHE_SIZE];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static bool
cache_get(PoolStatement stmt, const char *tenant, char **body)
{
	struct timespec now;
	bool		found = false;

	if (httpd_config.cache_seconds <= 0)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&cache_lock);
	for (int i = 0; i < CACHE_SIZE; i++)
	{
		CacheEntry *e = &cache[i];

		if (e->used && e->stmt == stmt && strcmp(e->tenant, tenant) == 0 &&
			now.tv_sec < e->expires.tv_sec)
		{
			*body = e->body ? strdup(e->body) : NULL;
			found = (e->body == NULL || *body != NULL);
			break;
		}
	}
	pthread_mutex_unlock(&cache_lock);
	return found;
}

static void
cache_put(PoolStatement stmt, const char *tenant, const char *body)
{
	struct timespec now;
	CacheEntry *victim = NULL;

	if (httpd_config.cache_seconds <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&cache_lock);
	for (int i = 0; i < CACHE_SIZE; i++)
	{
		CacheEntry *e = &cache[i];

		if (e->used && e->stmt == stmt && strcmp(e->tenant, tenant) == 0)
		{
			victim = e;
			break;
		}
		/* else the first free or expired entry, else the oldest */
		if (victim == NULL || !e->used ||
			(victim->used && e->expires.tv_sec < victim->expires.tv_sec))
			victim = e;
	}
	free(victim->body);
	victim->used = true;
	victim->stmt = stmt;
	snprintf(victim->tenant, sizeof(victim->tenant), "%s", tenant);
	victim->body = body ? strdup(body) : NULL;
	victim->expires = now;
	victim->expires.tv_sec += httpd_config.cache_seconds;
	pthread_mutex_unlock(&cache_lock);
}

/* ---------------------------------------------------------------------
 * Routing
 * ---------------------------------------------------------------------
 */

/* a tenant name as agentidp._valid_slug accepts it */
static bool
valid_slug(const char *s, size_t len)
{
	if (len < 1 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			continue;
		if (i > 0 && (c == '.' || c == '_' || c == '-'))
			continue;
		return false;
	}
	return true;
}

static Route
route_suffix(const char *rest)
{
	if (strcmp(rest, "/oauth/token") == 0)
		return R_TOKEN;
	if (strcmp(rest, "/oauth/revoke") == 0)
		return R_REVOKE;
	if (strcmp(rest, "/oauth/introspect") == 0)
		return R_INTROSPECT;
	return R_NONE;
}

/*
 * Tenant routing by host name (tenant_host_suffix): a Host header of the
 * form <tenant><suffix>, e.g. acme.idp.example.com with the suffix
 * .idp.example.com, names the tenant of an unscoped route.  The base URL
 * of the request (the scheme of public_url, then the Host as sent) is what
 * the DPoP htu is checked against.  False when the host names no tenant.
 */
static bool
route_by_host(Request *req, const char *host)
{
	const char *suffix = httpd_config.tenant_host_suffix;
	size_t		hostlen,
				namelen,
				suffixlen;
	const char *colon;

	if (suffix == NULL || suffix[0] == '\0' || host == NULL)
		return false;
	hostlen = strlen(host);
	if (hostlen == 0 || hostlen > 253 + 6)
		return false;
	for (const char *p = host; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == ':'))
			return false;
	/* the port, if any, is no part of the name */
	colon = strchr(host, ':');
	namelen = colon ? (size_t) (colon - host) : hostlen;
	if (colon && (colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1)))
		return false;
	suffixlen = strlen(suffix);
	if (namelen <= suffixlen ||
		strncasecmp(host + namelen - suffixlen, suffix, suffixlen) != 0 ||
		namelen - suffixlen >= sizeof(req->tenant))
		return false;
	namelen -= suffixlen;
	for (size_t i = 0; i < namelen; i++)
		if (host[i] >= 'A' && host[i] <= 'Z')
			return false;		/* tenant names are lower case */
	if (!valid_slug(host, namelen) || memchr(host, '.', namelen) != NULL)
		return false;
	memcpy(req->tenant, host, namelen);
	req->tenant[namelen] = '\0';
	snprintf(req->host_base, sizeof(req->host_base), "%s://%s",
			 strncmp(httpd_config.public_url, "https:", 6) == 0 ? "https" : "http", host);
	return true;
}

static void
route(Request *req, const char *url, const char *host)
{
	static const char md_prefix[] = "/.well-known/oauth-authorization-server/t/";

	req->route = R_NONE;
	req->tenant[0] = '\0';
	if (strcmp(url, "/healthz") == 0)
		req->route = R_HEALTHZ;
	else if (strcmp(url, "/readyz") == 0)
		req->route = R_READYZ;
	else if (strcmp(url, "/metrics") == 0)
		req->route = R_METRICS;
	else if (strcmp(url, "/admin/v1") == 0 || strncmp(url, "/admin/v1/", 10) == 0)
		req->route = R_ADMIN;
	else if (strncmp(url, "/t/", 3) == 0)
	{
		const char *name = url + 3;
		const char *slash = strchr(name, '/');

		if (slash && valid_slug(name, slash - name))
		{
			Route		r = route_suffix(slash);

			if (r == R_NONE && strcmp(slash, "/.well-known/jwks.json") == 0)
				r = R_JWKS;
			else if (r == R_NONE &&
					 strcmp(slash, "/.well-known/oauth-authorization-server") == 0)
				r = R_METADATA;
			if (r != R_NONE)
			{
				req->route = r;
				memcpy(req->tenant, name, slash - name);
				req->tenant[slash - name] = '\0';
			}
		}
	}
	else if (strncmp(url, md_prefix, sizeof(md_prefix) - 1) == 0)
	{
		/* RFC 8414 section 3.1: the issuer's path after the well-known part */
		const char *name = url + sizeof(md_prefix) - 1;

		if (valid_slug(name, strlen(name)))
		{
			req->route = R_METADATA;
			snprintf(req->tenant, sizeof(req->tenant), "%s", name);
		}
	}
	else if (route_by_host(req, host))
	{
		req->route = route_suffix(url);
		if (req->route == R_NONE && strcmp(url, "/.well-known/jwks.json") == 0)
			req->route = R_JWKS;
		else if (req->route == R_NONE &&
				 strcmp(url, "/.well-known/oauth-authorization-server") == 0)
			req->route = R_METADATA;
	}
	else
		req->route = route_suffix(url);

	switch (req->route)
	{
		case R_TOKEN:
			req->ep = EP_TOKEN;
			break;
		case R_REVOKE:
			req->ep = EP_REVOKE;
			break;
		case R_INTROSPECT:
			req->ep = EP_INTROSPECT;
			break;
		case R_JWKS:
			req->ep = EP_JWKS;
			break;
		case R_METADATA:
			req->ep = EP_METADATA;
			break;
		case R_HEALTHZ:
			req->ep = EP_HEALTHZ;
			break;
		case R_READYZ:
			req->ep = EP_READYZ;
			break;
		case R_METRICS:
			req->ep = EP_METRICS;
			break;
		case R_ADMIN:
			req->ep = EP_ADMIN;
			break;
		default:
			req->ep = EP_OTHER;
			break;
	}
}

static bool
is_post_route(Route r)
{
	return r == R_TOKEN || r == R_REVOKE || r == R_INTROSPECT;
}

/* routes whose requests may carry a body, which is read before answering */
static bool
reads_body(Route r)
{
	return is_post_route(r) || r == R_ADMIN;
}

/* ---------------------------------------------------------------------
 * Request deadlines (slowloris)
 *
 * libmicrohttpd's connection_timeout counts idleness alone: a client that
 * sends a byte of its header now and then keeps its connection for ever,
 * and max_connections such clients shut everyone else out.  So a request
 * must arrive whole, header and body, within connection_timeout seconds
 * of the connection's start or of the end of the previous request on it.
 * A reaper thread shuts the late connections' sockets down; libmicrohttpd
 * then closes them as it closes any the client closed.
 * ---------------------------------------------------------------------
 */
typedef struct ConnDeadline
{
	MHD_socket	fd;
	struct timespec since;		/* the request being received began */
	bool		received;		/* it is whole: no deadline while answered */
	bool		reaped;
	struct ConnDeadline *prev;
	struct ConnDeadline *next;
} ConnDeadline;

static pthread_mutex_t deadline_lock = PTHREAD_MUTEX_INITIALIZER;
static ConnDeadline *deadlines;
static pthread_t reaper;
static bool reaper_running;
static int	reaper_stop;

static void
notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
				  enum MHD_ConnectionNotificationCode code)
{
	ConnDeadline *d;

	if (code == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		/* without one, the idle timeout still applies */
		if (ci == NULL || (d = calloc(1, sizeof(ConnDeadline))) == NULL)
			return;
		d->fd = ci->connect_fd;
		clock_gettime(CLOCK_MONOTONIC, &d->since);
		pthread_mutex_lock(&deadline_lock);
		d->next = deadlines;
		if (deadlines)
			deadlines->prev = d;
		deadlines = d;
		pthread_mutex_unlock(&deadline_lock);
		*socket_context = d;
	}
	else if (code == MHD_CONNECTION_NOTIFY_CLOSED && (d = *socket_context) != NULL)
	{
		/* called before the socket is closed: the reaper never sees a reused fd */
		pthread_mutex_lock(&deadline_lock);
		if (d->prev)
			d->prev->next = d->next;
		else
			deadlines = d->next;
		if (d->next)
			d->next->prev = d->prev;
		pthread_mutex_unlock(&deadline_lock);
		free(d);
		*socket_context = NULL;
	}
}

/* the request is whole (true), or answered, and the next one may begin */
static void
deadline_mark(struct MHD_Connection *conn, bool received)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	ConnDeadline *d = ci ? ci->socket_context : NULL;

	if (d == NULL)
		return;
	pthread_mutex_lock(&deadline_lock);
	d->received = received;
	if (!received)
		clock_gettime(CLOCK_MONOTONIC, &d->since);
	pthread_mutex_unlock(&deadline_lock);
}

static void *
reaper_main(void *arg)
{
	while (!__atomic_load_n(&reaper_stop, __ATOMIC_RELAXED))
	{
		struct timespec now;

		usleep(250 * 1000);
		clock_gettime(CLOCK_MONOTONIC, &now);
		pthread_mutex_lock(&deadline_lock);
		for (ConnDeadline *d = deadlines; d; d = d->next)
		{
			long		ms = (now.tv_sec - d->since.tv_sec) * 1000L +
				(now.tv_nsec - d->since.tv_nsec) / 1000000L;

			if (d->received || d->reaped ||
				ms < httpd_config.connection_timeout * 1000L)
				continue;
			shutdown(d->fd, SHUT_RDWR);
			d->reaped = true;
		}
		pthread_mutex_unlock(&deadline_lock);
	}
	return NULL;
}

/* ---------------------------------------------------------------------
 * Request state
 * ---------------------------------------------------------------------
 */

static void
make_request_id(char *out)
{
	unsigned char raw[16];
	static const char hex[] = "0123456789abcdef";

	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
	{
		/* cannot happen once the pool is initialized; ids need not be secret */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		snprintf((char *) raw, sizeof(raw), "%08lx%07lx", (long) ts.tv_sec,
				 ts.tv_nsec & 0xfffffff);
	}
	for (int i = 0; i < 16; i++)
	{
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[32] = '\0';
}

/*
 * The client address the database audits: the peer, or, only where an
 * operator has configured a trusted proxy header, that header's left-most
 * address (the client as the first proxy saw it).  A header that does not
 * hold an IP address is ignored.
 */
static void
client_address(struct MHD_Connection *conn, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci;

	out[0] = '\0';
	if (httpd_config.trusted_proxy_header)
	{
		const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
													httpd_config.trusted_proxy_header);

		if (h)
		{
			char		first[INET6_ADDRSTRLEN];
			size_t		n;
			unsigned char tmp[sizeof(struct in6_addr)];

			while (*h == ' ' || *h == '\t')
				h++;
			n = strcspn(h, ", \t");
			if (n > 0 && n < sizeof(first))
			{
				memcpy(first, h, n);
				first[n] = '\0';
				if (inet_pton(AF_INET, first, tmp) == 1 ||
					inet_pton(AF_INET6, first, tmp) == 1)
				{
					snprintf(out, outlen, "%s", first);
					return;
				}
			}
		}
	}
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr)
	{
		const struct sockaddr *sa = ci->client_addr;

		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr,
					  out, outlen);
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr,
					  out, outlen);
	}
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;
	double		secs;

	if (req == NULL)
		return;
	deadline_mark(conn, false);
	secs = elapsed_seconds(&req->start);
	httpd_log_access(req->request_id, req->method, req->path, req->status,
					 secs * 1000.0, req->client_addr, httpd_endpoint_name(req->ep));
	httpd_metrics_request(req->ep, req->status, secs);
	if (req->body.data)
		explicit_bzero(req->body.data, req->body.len);
	httpd_buf_free(&req->body);
	free(req->method);
	free(req->path);
	free(req);
	*con_cls = NULL;
	__atomic_sub_fetch(&in_flight, 1, __ATOMIC_SEQ_CST);
}

/* ---------------------------------------------------------------------
 * The OAuth endpoints
 * ---------------------------------------------------------------------
 */

typedef struct HeaderCount
{
	const char *name;
	int			count;
	const char *value;
} HeaderCount;

static enum MHD_Result
count_header(void *cls, enum MHD_ValueKind kind, const char *key,
			 const char *value)
{
	HeaderCount *hc = cls;

	if (key && strcasecmp(key, hc->name) == 0)
	{
		hc->count++;
		hc->value = value;
	}
	return MHD_YES;
}

/* the single value of a header; *repeated when it came more than once */
static const char *
single_header(struct MHD_Connection *conn, const char *name, bool *repeated)
{
	HeaderCount hc = {name, 0, NULL};

	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &hc);
	*repeated = hc.count > 1;
	return hc.value;
}

/* form parameters the daemon sets itself, so that no client can */
static bool
reserved_name(const char *name)
{
	static const char *const reserved[] = {"dpop", "htm", "htu", "client_addr",
	"request_id", "tenant", NULL};

	for (int i = 0; reserved[i]; i++)
		if (strcmp(name, reserved[i]) == 0)
			return true;
	return false;
}

static bool
header_value_ok(const char *v)
{
	for (const unsigned char *p = (const unsigned char *) v; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return httpd_utf8_valid(v, strlen(v));
}

/* the Content-Type is this media type, perhaps with parameters such as charset=UTF-8 */
static bool
content_type_is(struct MHD_Connection *conn, const char *type)
{
	const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
												 MHD_HTTP_HEADER_CONTENT_TYPE);
	size_t		n = strlen(type);

	if (ct == NULL || strncasecmp(ct, type, n) != 0)
		return false;
	return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

/* a header name or value as the database gives it: no control characters */
static bool
header_token_ok(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/*
 * Add the headers the database answered with, "Name: value" lines (an
 * admin API answer's, the token endpoint's rate limit); what names the
 * answer in the log if one is not sent.
 */
static void
add_header_lines(struct MHD_Response *resp, const char *headers, const char *what)
{
	for (const char *line = headers; line != NULL && *line;)
	{
		const char *end = strchr(line, '\n');
		size_t		len = end ? (size_t) (end - line) : strlen(line);
		const char *colon = memchr(line, ':', len);

		if (colon != NULL && colon[1] == ' ' &&
			header_token_ok(line, colon - line) &&
			header_token_ok(colon + 2, len - (colon + 2 - line)))
		{
			char	   *name = strndup(line, colon - line);
			char	   *value = strndup(colon + 2, len - (colon + 2 - line));

			if (name == NULL || value == NULL ||
				MHD_add_response_header(resp, name, value) != MHD_YES)
				httpd_log("warning", "msg=\"%s response header was not sent\"", what);
			free(name);
			free(value);
		}
		else
			httpd_log("warning", "msg=\"%s response header was malformed\"", what);
		line = end ? end + 1 : NULL;
	}
}

static enum MHD_Result
handle_oauth(struct MHD_Connection *conn, Request *req)
{
	Form		form;
	const char *error = NULL;
	const char *auth;
	const char *dpop;
	bool		repeated;
	char	   *basic_id = NULL;
	char	   *basic_secret = NULL;
	StrBuf		json = {0};
	int			status = 0;
	char	   *body = NULL;
	char	   *headers = NULL;
	PoolResult	pr;
	enum MHD_Result ret;
	PoolStatement stmt = req->route == R_TOKEN ? STMT_TOKEN :
		req->route == R_REVOKE ? STMT_REVOKE : STMT_INTROSPECT;

	if (!httpd_form_parse(req->body.data ? req->body.data : "", req->body.len,
						  &form, &error))
		return respond_error(conn, req, 400, "invalid_request", error,
							 RF_NO_STORE, NULL);

	auth = single_header(conn, MHD_HTTP_HEADER_AUTHORIZATION, &repeated);
	if (repeated)
	{
		ret = respond_error(conn, req, 400, "invalid_request",
							"the Authorization header is repeated", RF_NO_STORE, NULL);
		goto done;
	}
	if (auth && strncasecmp(auth, "Basic ", 6) == 0)
	{
		/* RFC 6749 section 2.3.1: both parts are form-urlencoded */
		const char *b64 = auth + 6;
		size_t		rawlen;
		unsigned char *raw;
		char	   *colon;

		while (*b64 == ' ')
			b64++;
		raw = httpd_base64_decode(b64, strlen(b64), &rawlen);
		colon = raw ? memchr(raw, ':', rawlen) : NULL;
		if (colon && memchr(raw, '\0', rawlen) == NULL)
		{
			basic_id = httpd_url_decode((char *) raw, colon - (char *) raw, true);
			basic_secret = httpd_url_decode(colon + 1,
											rawlen - (colon + 1 - (char *) raw), true);
		}
		if (raw)
		{
			explicit_bzero(raw, rawlen);
			free(raw);
		}
		if (basic_id == NULL || basic_secret == NULL || basic_id[0] == '\0')
		{
			ret = respond_error(conn, req, 401, "invalid_client",
								"the Basic authorization header is malformed",
								RF_NO_STORE, NULL);
			goto done;
		}
		/* RFC 6749 section 2.3: one client authentication method */
		if (httpd_form_get(&form, "client_secret") ||
			httpd_form_get(&form, "client_assertion") ||
			(httpd_form_get(&form, "client_id") &&
			 strcmp(httpd_form_get(&form, "client_id"), basic_id) != 0))
		{
			ret = respond_error(conn, req, 400, "invalid_request",
								"the client authenticated with more than one method",
								RF_NO_STORE, NULL);
			goto done;
		}
	}

	dpop = single_header(conn, "DPoP", &repeated);
	if (repeated || (dpop && !header_value_ok(dpop)))
	{
		ret = respond_error(conn, req, 400, "invalid_dpop_proof",
							"the request must carry at most one DPoP proof",
							RF_NO_STORE, NULL);
		goto done;
	}

	/* the request object of the endpoint function */
	httpd_buf_appends(&json, "{");
	for (int i = 0; i < form.nfields; i++)
	{
		FormField  *f = &form.fields[i];

		if (f->value[0] == '\0' || reserved_name(f->name) ||
			(basic_id && strcmp(f->name, "client_id") == 0))
			continue;
		httpd_buf_json_string(&json, f->name);
		httpd_buf_appends(&json, ":");
		httpd_buf_json_string(&json, f->value);
		httpd_buf_appends(&json, ",");
	}
	if (basic_id)
	{
		httpd_buf_appends(&json, "\"client_id\":");
		httpd_buf_json_string(&json, basic_id);
		httpd_buf_appends(&json, ",\"client_secret\":");
		httpd_buf_json_string(&json, basic_secret);
		httpd_buf_appends(&json, ",");
	}
	if (dpop)
	{
		httpd_buf_appends(&json, "\"dpop\":");
		httpd_buf_json_string(&json, dpop);
		httpd_buf_appends(&json, ",");
	}
	httpd_buf_appends(&json, "\"htm\":\"POST\",\"htu\":");
	{
		StrBuf		htu = {0};

		httpd_buf_appends(&htu, req->host_base[0] ? req->host_base : httpd_config.public_url);
		httpd_buf_appends(&htu, req->path);
		httpd_buf_json_string(&json, htu.failed ? "" : htu.data);
		httpd_buf_free(&htu);
	}
	httpd_buf_appends(&json, ",\"client_addr\":");
	httpd_buf_json_string(&json, req->client_addr);
	httpd_buf_appends(&json, ",\"request_id\":");
	httpd_buf_json_string(&json, req->request_id);
	if (req->tenant[0])
	{
		httpd_buf_appends(&json, ",\"tenant\":");
		httpd_buf_json_string(&json, req->tenant);
	}
	httpd_buf_appends(&json, "}");
	if (json.failed)
	{
		ret = respond_error(conn, req, 500, "server_error", "out of memory",
							RF_NO_STORE, NULL);
		goto done;
	}

	if (stmt == STMT_TOKEN)
		pr = httpd_token_call(json.data, &status, &body, &headers);
	else
		pr = httpd_pool_call(stmt, json.data, &status, &body);
	if (pr == POOL_UNAVAILABLE)
		ret = respond_error(conn, req, 503, "temporarily_unavailable",
							"the database is not available; retry later",
							RF_NO_STORE | RF_RETRY, NULL);
	else if (pr != POOL_OK)
		ret = respond_error(conn, req, 500, "server_error",
							"the request could not be processed",
							RF_NO_STORE, NULL);
	else
	{
		struct MHD_Response *resp;

		if (status < 200 || status > 599)
			status = 500;
		resp = make_response(req, "application/json", body, strlen(body),
							 RF_NO_STORE | (status == 401 ? RF_WWW_AUTH : 0), NULL);
		/* the rate limit's RateLimit-* and Retry-After, as the database decided */
		if (resp != NULL)
			add_header_lines(resp, headers, "a token endpoint");
		ret = queue_response(conn, req, status, resp);
	}

done:
	if (body)
	{
		explicit_bzero(body, strlen(body));
		free(body);
	}
	free(headers);
	if (json.data)
		explicit_bzero(json.data, json.len);
	httpd_buf_free(&json);
	if (basic_secret)
		explicit_bzero(basic_secret, strlen(basic_secret));
	free(basic_id);
	free(basic_secret);
	httpd_form_free(&form);
	return ret;
}

static enum MHD_Result
handle_document(struct MHD_Connection *conn, Request *req)
{
	PoolStatement stmt = req->route == R_JWKS ? STMT_JWKS : STMT_METADATA;
	const char *ctype = req->route == R_JWKS ? "application/jwk-set+json" :
		"application/json";
	char	   *body = NULL;
	int			status;
	PoolResult	pr;
	enum MHD_Result ret;

	if (!cache_get(stmt, req->tenant, &body))
	{
		pr = httpd_pool_call(stmt, req->tenant, &status, &body);
		if (pr == POOL_UNAVAILABLE)
			return respond_error(conn, req, 503, "temporarily_unavailable",
								 "the database is not available; retry later",
								 RF_RETRY, NULL);
		if (pr == POOL_ERROR)
			return respond_error(conn, req, 500, "server_error",
								 "the request could not be processed", 0, NULL);
		cache_put(stmt, req->tenant, body);
	}
	if (body == NULL)
		return respond_error(conn, req, 404, "not_found", "no such tenant", 0, NULL);
	ret = respond(conn, req, 200, ctype, body, strlen(body), RF_PUBLIC, NULL);
	free(body);
	return ret;
}

static enum MHD_Result
handle_metrics(struct MHD_Connection *conn, Request *req)
{
	size_t		len;
	char	   *text = httpd_metrics_render(&len);
	enum MHD_Result ret;

	if (text == NULL)
		return respond_error(conn, req, 500, "server_error", "out of memory", 0, NULL);
	ret = respond(conn, req, 200, "text/plain; version=0.0.4; charset=utf-8",
				  text, len, RF_NO_STORE, NULL);
	free(text);
	return ret;
}

/* ---------------------------------------------------------------------
 * The admin API: every request under /admin/v1 is one call of
 * agentidp.admin_api(), which authenticates, routes, decides and answers.
 * The daemon checks only what HTTP itself needs (sizes, media type,
 * encodings) and passes the request on.
 * ---------------------------------------------------------------------
 */

#define ADMIN_PREFIX_LEN 9		/* strlen("/admin/v1") */
#define ADMIN_MAX_PARAMS 64

/* the query parameters as one JSON object of strings */
typedef struct QueryJson
{
	StrBuf		json;
	const char *keys[ADMIN_MAX_PARAMS];
	int			nkeys;
	const char *error;
} QueryJson;

static enum MHD_Result
collect_query(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
			  const char *value, size_t value_size)
{
	QueryJson  *q = cls;

	if (key == NULL)
		return MHD_YES;
	if (value == NULL)
	{
		/* "?name" without "=": an empty value */
		value = "";
		value_size = 0;
	}
	/* an encoded NUL would cut the text short, and the database takes UTF-8 */
	if (strlen(key) != key_size || strlen(value) != value_size ||
		!httpd_utf8_valid(key, key_size) || !httpd_utf8_valid(value, value_size))
	{
		q->error = "a query parameter is not valid UTF-8";
		return MHD_NO;
	}
	for (int i = 0; i < q->nkeys; i++)
		if (strcmp(q->keys[i], key) == 0)
		{
			q->error = "a query parameter is repeated";
			return MHD_NO;
		}
	if (q->nkeys >= ADMIN_MAX_PARAMS)
	{
		q->error = "too many query parameters";
		return MHD_NO;
	}
	/* MHD keeps the strings until the request ends */
	q->keys[q->nkeys++] = key;
	httpd_buf_appends(&q->json, q->nkeys > 1 ? "," : "{");
	httpd_buf_json_string(&q->json, key);
	httpd_buf_appends(&q->json, ":");
	httpd_buf_json_string(&q->json, value);
	return MHD_YES;
}

/*
 * Send admin_api's answer.  headers holds its "Name: value" lines, the
 * Content-Type among them; the daemon adds no-store, as no admin answer
 * may be cached (some show a secret once).
 */
static enum MHD_Result
respond_admin(struct MHD_Connection *conn, Request *req, int status,
			  const char *body, const char *headers)
{
	struct MHD_Response *resp;

	if (status < 200 || status > 599)
		return respond_problem(conn, req, 500, "the request could not be processed", 0);
	resp = make_response(req, NULL, body, strlen(body), RF_NO_STORE, NULL);
	if (resp == NULL)
		return MHD_NO;
	add_header_lines(resp, headers, "an admin API");
	return queue_response(conn, req, status, resp);
}

static enum MHD_Result
handle_admin(struct MHD_Connection *conn, Request *req)
{
	const char *path = req->path + ADMIN_PREFIX_LEN;
	const char *auth;
	bool		repeated;
	QueryJson	q;
	const char *values[7];
	int			status = 0;
	char	   *body = NULL;
	char	   *headers = NULL;
	PoolResult	pr;
	enum MHD_Result ret;

	/* the path goes to the database as text: UTF-8 without control characters */
	if (!header_value_ok(path))
		return respond_problem(conn, req, 404, "no such resource", 0);
	if (req->body.len > 0 &&
		(memchr(req->body.data, '\0', req->body.len) != NULL ||
		 !httpd_utf8_valid(req->body.data, req->body.len)))
		return respond_problem(conn, req, 400, "the request body is not UTF-8 text", 0);
	auth = single_header(conn, MHD_HTTP_HEADER_AUTHORIZATION, &repeated);
	if (repeated)
		return respond_problem(conn, req, 400, "the Authorization header is repeated", 0);
	if (auth != NULL && !header_value_ok(auth))
		return respond_problem(conn, req, 400, "the Authorization header is malformed", 0);

	memset(&q, 0, sizeof(q));
	(void) MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, collect_query, &q);
	if (q.error != NULL)
	{
		ret = respond_problem(conn, req, 400, q.error, 0);
		httpd_buf_free(&q.json);
		return ret;
	}
	httpd_buf_appends(&q.json, q.nkeys > 0 ? "}" : "{}");
	if (q.json.failed)
	{
		httpd_buf_free(&q.json);
		return respond_problem(conn, req, 500, "out of memory", 0);
	}

	values[0] = req->method;
	values[1] = path;
	values[2] = q.json.data;
	values[3] = req->body.len > 0 ? req->body.data : NULL;
	values[4] = auth;
	values[5] = req->client_addr[0] ? req->client_addr : NULL;
	values[6] = req->request_id;
	pr = httpd_pool_call_params(STMT_ADMIN, 7, values, &status, &body, &headers);
	httpd_buf_free(&q.json);
	if (pr == POOL_UNAVAILABLE)
		ret = respond_problem(conn, req, 503, "the database is not available; retry later",
							  RF_RETRY);
	else if (pr != POOL_OK)
		ret = respond_problem(conn, req, 500, "the request could not be processed", 0);
	else
		ret = respond_admin(conn, req, status, body, headers);

	if (body)
	{
		/* a new client secret is shown once: leave no copy behind */
		explicit_bzero(body, strlen(body));
		free(body);
	}
	free(headers);
	return ret;
}

/* ---------------------------------------------------------------------
 * The access handler
 * ---------------------------------------------------------------------
 */

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version, const char *upload_data,
			   size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;

	if (req == NULL)
	{
		/* the first call: headers only */
		bool		is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
		bool		is_post = strcmp(method, "POST") == 0;

		req = calloc(1, sizeof(Request));
		if (req == NULL)
			return MHD_NO;
		clock_gettime(CLOCK_MONOTONIC, &req->start);
		make_request_id(req->request_id);
		req->method = strdup(method);
		req->path = strdup(url);
		*con_cls = req;
		__atomic_add_fetch(&in_flight, 1, __ATOMIC_SEQ_CST);
		if (req->method == NULL || req->path == NULL)
			return MHD_NO;
		client_address(conn, req->client_addr, sizeof(req->client_addr));
		route(req, url, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST));

		/*
		 * RFC 9112 sections 3.2 and 6: one Host, and one way to tell
		 * where the body ends.  Two Hosts, two Content-Lengths, or one
		 * beside Transfer-Encoding is how a request is routed or smuggled
		 * past a proxy that reads it otherwise (libmicrohttpd 0.9 takes
		 * the first); and it reads a body of any other coding than
		 * chunked to the end of the connection: the request never ends.
		 */
		{
			bool		host_repeated;
			bool		cl_repeated;
			bool		te_repeated;
			const char *cl = single_header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH,
										   &cl_repeated);
			const char *te = single_header(conn, MHD_HTTP_HEADER_TRANSFER_ENCODING,
										   &te_repeated);
			const char *why = NULL;
			int			status = 400;

			(void) single_header(conn, MHD_HTTP_HEADER_HOST, &host_repeated);
			if (te && (te_repeated || strcasecmp(te, "chunked") != 0))
			{
				status = 501;
				why = "the only transfer coding accepted is chunked";
			}
			else if (host_repeated)
				why = "the Host header is repeated";
			else if (cl_repeated || (cl && te))
				why = "the length of the request body is ambiguous";
			if (why != NULL)
				return req->route == R_ADMIN ?
					respond_problem(conn, req, status, why, 0) :
					respond_error(conn, req, status, "invalid_request", why,
								  RF_NO_STORE, NULL);
		}

		if (req->route == R_NONE)
			return respond_error(conn, req, 404, "not_found",
								 "no such endpoint", 0, NULL);
		if (req->route == R_ADMIN)
		{
			/* any method: admin_api answers 405 itself, with its Allow */
			const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
														 MHD_HTTP_HEADER_CONTENT_LENGTH);
			const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
														 MHD_HTTP_HEADER_TRANSFER_ENCODING);

			if (cl && strtoull(cl, NULL, 10) > httpd_config.body_limit)
				return respond_problem(conn, req, 413, "the request body is too large", 0);
			if (((cl && strtoull(cl, NULL, 10) > 0) || te != NULL) &&
				!content_type_is(conn, "application/json"))
				return respond_problem(conn, req, 415,
									   "the request body must be application/json", 0);
			return MHD_YES;
		}
		if (is_post_route(req->route))
		{
			const char *cl;

			if (!is_post)
				return respond_error(conn, req, 405, "invalid_request",
									 "the endpoint accepts POST only",
									 RF_NO_STORE, "POST");
			if (!content_type_is(conn, "application/x-www-form-urlencoded"))
				return respond_error(conn, req, 400, "invalid_request",
									 "the content type must be application/x-www-form-urlencoded",
									 RF_NO_STORE, NULL);
			cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
											 MHD_HTTP_HEADER_CONTENT_LENGTH);
			if (cl && strtoull(cl, NULL, 10) > httpd_config.body_limit)
				return respond_error(conn, req, 413, "invalid_request",
									 "the request body is too large",
									 RF_NO_STORE, NULL);
			/* wait for the body */
			return MHD_YES;
		}
		if (!is_get)
			return respond_error(conn, req, 405, "invalid_request",
								 "the endpoint accepts GET and HEAD only",
								 0, "GET, HEAD");

		/*
		 * Answer on the next call: a response queued before libmicrohttpd
		 * has seen the end of the request closes the connection, which
		 * would cost key-set fetchers their keep-alive.
		 */
		return MHD_YES;
	}

	if (req->status != 0)
	{
		/* answered already (an early error): drop what else comes */
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size == 0)
		deadline_mark(conn, true);

	if (!reads_body(req->route))
	{
		if (*upload_data_size > 0)
		{
			/* a body on a GET means nothing here: drop it, bounded */
			req->discarded += *upload_data_size;
			*upload_data_size = 0;
			return req->discarded > httpd_config.body_limit ? MHD_NO : MHD_YES;
		}
		switch (req->route)
		{
			case R_HEALTHZ:
				return respond(conn, req, 200, "application/json",
							   "{\"status\":\"ok\"}", 15, RF_NO_STORE, NULL);
			case R_READYZ:
				if (httpd_pool_ping())
					return respond(conn, req, 200, "application/json",
								   "{\"status\":\"ready\"}", 18, RF_NO_STORE, NULL);
				return respond_error(conn, req, 503, "temporarily_unavailable",
									 "the database is not reachable",
									 RF_NO_STORE | RF_RETRY, NULL);
			case R_METRICS:
				return handle_metrics(conn, req);
			default:
				return handle_document(conn, req);
		}
	}

	if (*upload_data_size > 0)
	{
		if (!req->too_large &&
			req->body.len + *upload_data_size <= httpd_config.body_limit)
			httpd_buf_append(&req->body, upload_data, *upload_data_size);
		else
		{
			/* chunked, with no length to refuse early: read on, bounded */
			req->too_large = true;
			req->discarded += *upload_data_size;
			if (req->discarded > 16 * httpd_config.body_limit)
				return MHD_NO;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* the whole body is here */
	if (req->route == R_ADMIN)
	{
		if (req->too_large)
			return respond_problem(conn, req, 413, "the request body is too large", 0);
		if (req->body.failed)
			return respond_problem(conn, req, 500, "out of memory", 0);
		return handle_admin(conn, req);
	}
	if (req->too_large)
		return respond_error(conn, req, 413, "invalid_request",
							 "the request body is too large", RF_NO_STORE, NULL);
	if (req->body.failed)
		return respond_error(conn, req, 500, "server_error", "out of memory",
							 RF_NO_STORE, NULL);
	return handle_oauth(conn, req);
}

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char		msg[512];
	size_t		n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	httpd_log_text("warning", msg);
}

static char *
read_file(const char *path)
{
	FILE	   *f = fopen(path, "rb");
	char	   *data = NULL;
	long		size;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && size < 1024 * 1024 &&
		fseek(f, 0, SEEK_SET) == 0 && (data = malloc(size + 1)) != NULL)
	{
		if (fread(data, 1, size, f) != (size_t) size)
		{
			free(data);
			data = NULL;
		}
		else
			data[size] = '\0';
	}
	fclose(f);
	return data;
}

bool
httpd_server_start(void)
{
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
		MHD_USE_ITC | MHD_USE_ERROR_LOG;
	struct sockaddr_storage ss;
	char	   *cert = NULL;
	char	   *key = NULL;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, httpd_config.listen,
				  &((struct sockaddr_in *) &ss)->sin_addr) == 1)
	{
		((struct sockaddr_in *) &ss)->sin_family = AF_INET;
		((struct sockaddr_in *) &ss)->sin_port = htons(httpd_config.port);
	}
	else if (inet_pton(AF_INET6, httpd_config.listen,
					   &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1)
	{
		((struct sockaddr_in6 *) &ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *) &ss)->sin6_port = htons(httpd_config.port);
		flags |= MHD_USE_IPv6;
	}
	else
	{
		httpd_log("error", "msg=\"listen is not an IP address\"");
		return false;
	}

	if (httpd_config.tls_cert || httpd_config.tls_key)
	{
		if (!httpd_config.tls_cert || !httpd_config.tls_key)
		{
			httpd_log("error", "msg=\"tls_cert and tls_key go together\"");
			return false;
		}
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
		{
			httpd_log("error", "msg=\"libmicrohttpd was built without TLS\"");
			return false;
		}
		cert = read_file(httpd_config.tls_cert);
		key = read_file(httpd_config.tls_key);
		if (cert == NULL || key == NULL)
		{
			httpd_log("error", "msg=\"could not read the TLS certificate or key\"");
			free(cert);
			free(key);
			return false;
		}
		flags |= MHD_USE_TLS;
	}

	daemon_handle = MHD_start_daemon(flags, 0, NULL, NULL,
									 access_handler, NULL,
									 MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
									 MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
									 MHD_OPTION_THREAD_POOL_SIZE,
									 (unsigned int) httpd_config.threads,
									 MHD_OPTION_CONNECTION_LIMIT,
									 (unsigned int) httpd_config.max_connections,
									 MHD_OPTION_CONNECTION_TIMEOUT,
									 (unsigned int) httpd_config.connection_timeout,
									 MHD_OPTION_CONNECTION_MEMORY_LIMIT,
									 (size_t) 16 * 1024,
									 MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
									 MHD_OPTION_STRICT_FOR_CLIENT, 1,
									 MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
									 MHD_OPTION_NOTIFY_CONNECTION, notify_connection, NULL,
									 cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cert,
									 MHD_OPTION_HTTPS_MEM_KEY, key,
									 MHD_OPTION_END);
	if (key)
		explicit_bzero(key, strlen(key));
	free(cert);
	free(key);
	if (daemon_handle == NULL)
		return false;
	reaper_running = pthread_create(&reaper, NULL, reaper_main, NULL) == 0;
	if (!reaper_running)
		httpd_log("warning", "msg=\"could not start the request deadline thread\"");
	return true;
}

/*
 * SIGTERM: stop accepting, then give the requests in flight up to
 * max_seconds to finish.  Idle keep-alive connections do not count.
 */
void
httpd_server_drain(int max_seconds)
{
	if (daemon_handle == NULL)
		return;
	__atomic_store_n(&draining, 1, __ATOMIC_SEQ_CST);
	MHD_quiesce_daemon(daemon_handle);
	for (int i = 0; i < max_seconds * 20; i++)
	{
		if (__atomic_load_n(&in_flight, __ATOMIC_SEQ_CST) == 0)
			break;
		usleep(50 * 1000);
	}
}

void
httpd_server_stop(void)
{
	if (reaper_running)
	{
		__atomic_store_n(&reaper_stop, 1, __ATOMIC_RELAXED);
		pthread_join(reaper, NULL);
		reaper_running = false;
	}
	if (daemon_handle)
		MHD_stop_daemon(daemon_handle);
	daemon_handle = NULL;
}
