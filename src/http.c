/*-------------------------------------------------------------------------
 *
 * http.c
 *	  Outbound HTTP with libcurl: concurrent requests bounded in time and
 *	  size, http and https only, no redirects, no proxies, and a guard
 *	  against server-side request forgery.  What is requested and what is
 *	  done with the answer is the callers' (webhooks.c).
 *
 *	  The guard checks the address curl is about to connect to, in its
 *	  open-socket callback, after DNS resolution: a name that resolves to
 *	  a public address when checked and to 127.0.0.1 when connecting
 *	  (DNS rebinding) is still refused, as is every other address that is
 *	  not public (loopback, private, link-local, shared, multicast,
 *	  reserved, documentation, and IPv6 forms embedding such an IPv4
 *	  address), unless the caller allows private addresses.
 *
 *	  libcurl calls back into this file while a transfer runs; those
 *	  callbacks never ereport or palloc, since a longjmp out of libcurl
 *	  would leave it in an undefined state.  Interrupts are checked
 *	  between calls into libcurl, and every curl handle is freed on every
 *	  path, ERROR included.
 *
 * IDENTIFICATION
 *	  src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "storage/ipc.h"

#include "http.h"

#define USER_AGENT			"agentidp"

/* enough of a response's header for any header a caller reads */
#define MAX_RESPONSE_HEADERS 16384

/* how often interrupts are checked while transfers run */
#define POLL_INTERVAL_MS	100

/* one request in flight: what the callbacks write to */
typedef struct Transfer
{
	AgentidpHttpRequest *request;
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *body;			/* max_response + 1 bytes */
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;
	char	   *head;			/* MAX_RESPONSE_HEADERS + 1 bytes */
	size_t		head_len;
	bool		allow_private;
	bool		refused;
	char		refusal[128];
	char		errbuf[CURL_ERROR_SIZE];
} Transfer;

static bool curl_ready = false;

/*
 * One multi handle per value of allow_private, kept for the life of the
 * process: its connections are reused by later requests to the same
 * server (keep-alive), which saves a handshake per request and spares
 * receivers bursts of new connections.  A connection is checked when it
 * is opened, so one opened while private addresses were allowed must
 * never serve a request that does not allow them: hence two.
 */
static CURLM *multis[2] = {NULL, NULL};

/*
 * Why an IPv4 address (host order) is not public, or NULL when it is
 * (RFC 6890 and the IANA special-purpose registry).
 */
static const char *
ipv4_not_public(uint32 a)
{
	static const struct
	{
		uint32		net;
		int			bits;
		const char *what;
	}			ranges[] =
	{
		{0x00000000, 8, "an unspecified address"},	/* 0.0.0.0/8 */
		{0x0A000000, 8, "a private address"},	/* 10.0.0.0/8 */
		{0x64400000, 10, "a shared (carrier-grade NAT) address"},	/* 100.64.0.0/10 */
		{0x7F000000, 8, "a loopback address"},	/* 127.0.0.0/8 */
		{0xA9FE0000, 16, "a link-local address"},	/* 169.254.0.0/16 */
		{0xAC100000, 12, "a private address"},	/* 172.16.0.0/12 */
		{0xC0000000, 24, "a protocol assignment address"},	/* 192.0.0.0/24 */
		{0xC0000200, 24, "a documentation address"},	/* 192.0.2.0/24 */
		{0xC0586300, 24, "a 6to4 relay address"},	/* 192.88.99.0/24 */
		{0xC0A80000, 16, "a private address"},	/* 192.168.0.0/16 */
		{0xC6120000, 15, "a benchmarking address"}, /* 198.18.0.0/15 */
		{0xC6336400, 24, "a documentation address"},	/* 198.51.100.0/24 */
		{0xCB007100, 24, "a documentation address"},	/* 203.0.113.0/24 */
		{0xE0000000, 4, "a multicast address"}, /* 224.0.0.0/4 */
		{0xF0000000, 4, "a reserved or broadcast address"}, /* 240.0.0.0/4 */
	};

	for (int i = 0; i < lengthof(ranges); i++)
		if ((a >> (32 - ranges[i].bits)) == (ranges[i].net >> (32 - ranges[i].bits)))
			return ranges[i].what;
	return NULL;
}

static uint32
ipv4_at(const unsigned char *p)
{
	return ((uint32) p[0] << 24) | ((uint32) p[1] << 16) | ((uint32) p[2] << 8) | p[3];
}

/*
 * Why an IPv6 address is not public, or NULL when it is.  Only global
 * unicast (2000::/3) is public, less its special ranges; forms that
 * carry an IPv4 address (mapped, NAT64, 6to4) are judged by that one.
 */
static const char *
ipv6_not_public(const unsigned char *a)
{
	static const unsigned char zeros[16] = {0};
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

	if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
		return ipv4_not_public(ipv4_at(a + 12));
	if (memcmp(a, zeros, 15) == 0)
		return a[15] == 1 ? "a loopback address" : "an unspecified address";
	if (a[0] == 0x20 && a[1] == 0x02)	/* 2002::/16, 6to4 */
		return ipv4_not_public(ipv4_at(a + 2));
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] < 0x02)	/* 2001::/23, Teredo among them */
		return "a protocol assignment address";
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)	/* 2001:db8::/32 */
		return "a documentation address";
	if (a[0] == 0x3f && a[1] == 0xff && a[2] < 0x10)	/* 3fff::/20 */
		return "a documentation address";
	if ((a[0] & 0xe0) == 0x20)	/* 2000::/3 */
		return NULL;
	if ((a[0] & 0xfe) == 0xfc)
		return "a unique local (private) address";
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return "a link-local address";
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
		return "a site-local address";
	if (a[0] == 0xff)
		return "a multicast address";
	return "a reserved address";
}

/*
 * curl's open-socket callback: the address is the one about to be
 * connected to.  No ereport, no palloc here.
 */
static curl_socket_t
open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	Transfer   *t = (Transfer *) clientp;
	const char *why = NULL;
	char		text[INET6_ADDRSTRLEN] = "?";

	if (address->family == AF_INET)
	{
		const struct sockaddr_in *sin = (const struct sockaddr_in *) &address->addr;

		why = ipv4_not_public(ntohl(sin->sin_addr.s_addr));
		inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
	}
	else if (address->family == AF_INET6)
	{
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &address->addr;

		why = ipv6_not_public(sin6->sin6_addr.s6_addr);
		inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
	}
	else
		why = "not an IP address";

	if (purpose != CURLSOCKTYPE_IPCXN || (why != NULL && !t->allow_private))
	{
		t->refused = true;
		snprintf(t->refusal, sizeof(t->refusal),
				 "refused to connect to %s: %s is not allowed", text,
				 why != NULL ? why : "this kind of connection");
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

/* the body: kept up to the cap; more aborts the transfer */
static size_t
write_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	Transfer   *t = (Transfer *) userdata;
	size_t		n = size * nmemb;

	if (n > t->body_cap - t->body_len)
	{
		t->too_large = true;
		return 0;
	}
	memcpy(t->body + t->body_len, data, n);
	t->body_len += n;
	return n;
}

/* header lines of the last response only (not of a 100 Continue before it) */
static size_t
write_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	Transfer   *t = (Transfer *) userdata;
	size_t		n = size * nmemb;

	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
		t->head_len = 0;
	if (n > MAX_RESPONSE_HEADERS - t->head_len)
		n = MAX_RESPONSE_HEADERS - t->head_len;
	memcpy(t->head + t->head_len, data, n);
	t->head_len += n;
	return size * nmemb;
}

static void
curl_failed(const char *what)
{
	ereport(ERROR,
			errcode(ERRCODE_OUT_OF_MEMORY),
			errmsg("could not %s for an HTTP request", what));
}

static void
http_cleanup(int code, Datum arg)
{
	for (int i = 0; i < lengthof(multis); i++)
	{
		if (multis[i] != NULL)
			curl_multi_cleanup(multis[i]);
		multis[i] = NULL;
	}
	curl_global_cleanup();
}

/* once per process, before the first handle */
static void
http_init(void)
{
	if (curl_ready)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		curl_failed("initialize libcurl");
	curl_ready = true;
	on_proc_exit(http_cleanup, (Datum) 0);
}

static void
setup_transfer(Transfer *t, const AgentidpHttpOptions *options)
{
	AgentidpHttpRequest *r = t->request;
	ListCell   *lc;
	CURL	   *e;
	bool		ok;

	/* libcurl adds Expect: 100-continue to larger POSTs: a round trip lost */
	t->headers = curl_slist_append(NULL, "Expect:");
	if (t->headers == NULL)
		curl_failed("allocate a header list");
	foreach(lc, r->headers)
	{
		/* on failure the list is left as it was, to be freed by the caller */
		struct curl_slist *more = curl_slist_append(t->headers, lfirst(lc));

		if (more == NULL)
			curl_failed("allocate a header list");
		t->headers = more;
	}
	t->easy = e = curl_easy_init();
	if (e == NULL)
		curl_failed("create a curl handle");

	ok = curl_easy_setopt(e, CURLOPT_URL, r->url) == CURLE_OK &&
#if LIBCURL_VERSION_NUM >= 0x075500
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK &&
#else
		curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS)) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS)) == CURLE_OK &&
#endif
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
	/* an empty proxy disables those of the environment (http_proxy) */
		curl_easy_setopt(e, CURLOPT_PROXY, "") == CURLE_OK &&
	/* no SIGALRM around name resolution: the server owns its signals */
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) options->timeout_ms) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) options->timeout_ms) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) options->max_response) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_body) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_WRITEDATA, t) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, write_header) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_HEADERDATA, t) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf) == CURLE_OK &&
		curl_easy_setopt(e, CURLOPT_PRIVATE, t) == CURLE_OK;
	if (ok && r->body != NULL)
		ok = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_len) == CURLE_OK &&
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) == CURLE_OK;
	if (!ok)
		ereport(ERROR,
				errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				errmsg("libcurl %s lacks an option agentidp needs", curl_version_info(CURLVERSION_NOW)->version));
}

/* a transfer is over: fill in its request */
static void
finish_transfer(Transfer *t, CURLcode code)
{
	AgentidpHttpRequest *r = t->request;
	long		status = 0;

	(void) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	r->status = status;
	t->body[t->body_len] = '\0';
	r->response = t->body;
	r->response_len = t->body_len;
	t->head[t->head_len] = '\0';
	r->response_headers = t->head;
	r->refused = t->refused;
	if (code == CURLE_OK)
		r->error = NULL;
	else if (t->refused)
		r->error = pstrdup(t->refusal);
	else if (t->too_large || code == CURLE_FILESIZE_EXCEEDED)
		r->error = psprintf("the response is longer than %zu bytes", t->body_cap);
	else
		r->error = pstrdup(t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(code));
}

void
agentidp_http_perform(AgentidpHttpRequest *requests, int nrequests,
					  const AgentidpHttpOptions *options)
{
	Transfer   *ts;
	CURLM	   *multi;

	if (nrequests == 0)
		return;
	http_init();
	multi = multis[options->allow_private ? 1 : 0];
	if (multi == NULL)
		multi = multis[options->allow_private ? 1 : 0] = curl_multi_init();
	if (multi == NULL)
		curl_failed("create a curl multi handle");
	ts = palloc0(sizeof(Transfer) * nrequests);
	for (int i = 0; i < nrequests; i++)
	{
		ts[i].request = &requests[i];
		ts[i].body_cap = options->max_response;
		ts[i].body = palloc(options->max_response + 1);
		ts[i].head = palloc(MAX_RESPONSE_HEADERS + 1);
		ts[i].allow_private = options->allow_private;
		requests[i].status = 0;
		requests[i].error = pstrdup("the request was not made");
	}

	PG_TRY();
	{
		int			running = 0;
		CURLMsg    *msg;
		int			left;

		for (int i = 0; i < nrequests; i++)
		{
			setup_transfer(&ts[i], options);
			if (curl_multi_add_handle(multi, ts[i].easy) != CURLM_OK)
				curl_failed("start a transfer");
		}
		for (;;)
		{
			CURLMcode	mc = curl_multi_perform(multi, &running);

			if (mc == CURLM_OK && running > 0)
				mc = curl_multi_poll(multi, NULL, 0, POLL_INTERVAL_MS, NULL);
			if (mc != CURLM_OK)
				ereport(ERROR,
						errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("HTTP transfers failed"),
						errdetail_internal("%s", curl_multi_strerror(mc)));
			/* outside libcurl: a cancel or a shutdown may longjmp from here */
			CHECK_FOR_INTERRUPTS();
			if (running == 0)
				break;
		}
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			Transfer   *t = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			(void) curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
			finish_transfer(t, msg->data.result);
		}
	}
	PG_FINALLY();
	{
		/* the multi handle stays, with its connections, for the next call */
		for (int i = 0; i < nrequests; i++)
		{
			if (ts[i].easy != NULL)
			{
				(void) curl_multi_remove_handle(multi, ts[i].easy);
				curl_easy_cleanup(ts[i].easy);
			}
			curl_slist_free_all(ts[i].headers);
		}
	}
	PG_END_TRY();
	pfree(ts);
}

/*
 * A malloc'd copy of one part of a parsed URL in *out (NULL when the URL
 * has none); false when out of memory.  No ERROR while curl's string is
 * held.
 */
static bool
url_part(CURLU *u, CURLUPart part, unsigned int flags, char **out)
{
	char	   *v = NULL;

	*out = NULL;
	if (curl_url_get(u, part, &v, flags) != CURLUE_OK || v == NULL)
		return true;
	*out = strdup(v);
	curl_free(v);
	return *out != NULL;
}

char *
agentidp_http_url_problem(const char *url, bool allow_private, bool *not_public)
{
	CURLU	   *u;
	bool		parsed;
	bool		copied = true;
	char	   *parts[5] = {NULL};	/* scheme, host, user, password, fragment */
	static const CURLUPart which[5] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_USER,
	CURLUPART_PASSWORD, CURLUPART_FRAGMENT};
	char		host[AGENTIDP_HTTP_URL_MAX_LEN + 1] = "";
	const char *problem = NULL;
	const char *rest;

	*not_public = false;
	if (strlen(url) > AGENTIDP_HTTP_URL_MAX_LEN)
		return psprintf("The URL is longer than %d characters.", AGENTIDP_HTTP_URL_MAX_LEN);
	for (const char *p = url; *p; p++)
		if ((unsigned char) *p <= 0x20 || *p == 0x7f)
			return pstrdup("The URL contains white space or control characters.");
	/* curl would read "https:///x" as "https://x": the host must follow "//" */
	if (pg_strncasecmp(url, "https://", 8) == 0)
		rest = url + 8;
	else if (pg_strncasecmp(url, "http://", 7) == 0)
		rest = url + 7;
	else
		return pstrdup(strstr(url, "://") != NULL ?
					   "Only http and https URLs are allowed." :
					   "The URL is not a valid absolute URL.");
	if (*rest == '\0' || strchr("/?#", *rest) != NULL)
		return pstrdup("The URL has no host.");

	http_init();
	u = curl_url();
	if (u == NULL)
		curl_failed("parse a URL");
	parsed = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK;
	/* the host as curl will resolve it: percent-decoded */
	for (int i = 0; parsed && copied && i < lengthof(parts); i++)
		copied = url_part(u, which[i], which[i] == CURLUPART_HOST ? CURLU_URLDECODE : 0,
						  &parts[i]);
	curl_url_cleanup(u);

	/* no ERROR until the copies are freed */
	if (!parsed)
		problem = "The URL is not a valid absolute URL.";
	else if (parts[0] == NULL || (strcmp(parts[0], "http") != 0 && strcmp(parts[0], "https") != 0))
		problem = "Only http and https URLs are allowed.";
	else if (parts[1] == NULL || parts[1][0] == '\0')
		problem = "The URL has no host.";
	else if (parts[2] != NULL || parts[3] != NULL)
		problem = "The URL contains user information (user:password@).";
	else if (parts[4] != NULL)
		problem = "The URL contains a fragment (#...).";
	else
		strlcpy(host, parts[1], sizeof(host));
	for (int i = 0; i < lengthof(parts); i++)
		free(parts[i]);
	if (!copied)
		curl_failed("parse a URL");
	if (problem != NULL)
		return pstrdup(problem);

	if (!allow_private)
	{
		unsigned char addr[16];
		size_t		len = strlen(host);
		const char *why = NULL;

		/* curl has normalized IPv4 forms (127.1, 0x7f.0.0.1) to dotted quads */
		if (len > 0 && host[len - 1] == '.')
			host[--len] = '\0';
		if (inet_pton(AF_INET, host, addr) == 1)
			why = ipv4_not_public(ipv4_at(addr));
		else if (len > 2 && host[0] == '[' && host[len - 1] == ']')
		{
			host[len - 1] = '\0';
			if (inet_pton(AF_INET6, host + 1, addr) == 1)
				why = ipv6_not_public(addr);
			host[len - 1] = ']';
		}
		else if (pg_strcasecmp(host, "localhost") == 0 ||
				 (len > 10 && pg_strcasecmp(host + len - 10, ".localhost") == 0))
			why = "a name for the loopback";	/* RFC 6761 section 6.3 */
		if (why != NULL)
		{
			*not_public = true;
			return psprintf("Host %s is %s.", host, why);
		}
	}
	return NULL;
}

char *
agentidp_http_header(const AgentidpHttpRequest *request, const char *name)
{
	size_t		namelen = strlen(name);
	const char *line = request->response_headers;

	while (line != NULL && *line != '\0')
	{
		const char *end = strchr(line, '\n');
		size_t		len = end != NULL ? (size_t) (end - line) : strlen(line);

		if (len > namelen && line[namelen] == ':' && pg_strncasecmp(line, name, namelen) == 0)
		{
			const char *v = line + namelen + 1;
			const char *e = line + len;

			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
				e--;
			return pnstrdup(v, e - v);
		}
		line = end != NULL ? end + 1 : NULL;
	}
	return NULL;
}
