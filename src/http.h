/*-------------------------------------------------------------------------
 *
 * http.h
 *	  Outbound HTTP requests with libcurl (http.c): webhook deliveries,
 *	  and fetching outside issuers' key sets.
 *
 * IDENTIFICATION
 *	  src/http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_HTTP_H
#define AGENTIDP_HTTP_H

#include "postgres.h"

#include "nodes/pg_list.h"

/* the longest URL accepted */
#define AGENTIDP_HTTP_URL_MAX_LEN	2048

/* how every request of one agentidp_http_perform() call is made */
typedef struct AgentidpHttpOptions
{
	int			timeout_ms;		/* the whole transfer, connecting included */
	size_t		max_response;	/* a longer response body is an error */
	bool		allow_private;	/* connect to addresses that are not public */
} AgentidpHttpOptions;

typedef struct AgentidpHttpRequest
{
	/* what to send */
	const char *url;
	const char *body;			/* POSTed when not NULL; otherwise a GET */
	size_t		body_len;
	List	   *headers;		/* extra request header lines, "Name: value" */

	/* what came back (all palloc'd) */
	long		status;			/* the HTTP status; 0 when none arrived */
	char	   *response;		/* the body received, NUL-terminated */
	size_t		response_len;
	char	   *response_headers;	/* the final response's header lines */
	char	   *error;			/* why the transfer failed, or NULL; ASCII */
	bool		refused;		/* an address was refused as not public */
} AgentidpHttpRequest;

/*
 * Make the requests concurrently and wait until each has finished or
 * timed out.  Only http and https, no redirects, no proxies; unless
 * allow_private, every address connected to (after DNS resolution, so
 * that rebinding cannot get around it) must be a public one.  Interrupts
 * are served while waiting.  A failed transfer is not an ERROR: its
 * request says why.
 */
extern void agentidp_http_perform(AgentidpHttpRequest *requests, int nrequests,
								  const AgentidpHttpOptions *options);

/*
 * Why a URL cannot be requested, as a sentence for errdetail, or NULL if
 * it can: not http(s), no host, user information, a fragment, too long,
 * or (unless allow_private) a host that is a literal address that is not
 * public or a name for the loopback.  *not_public says the last.
 */
extern char *agentidp_http_url_problem(const char *url, bool allow_private,
									   bool *not_public);

/* a header of the response (case-insensitive name), palloc'd, or NULL */
extern char *agentidp_http_header(const AgentidpHttpRequest *request, const char *name);

#endif							/* AGENTIDP_HTTP_H */
