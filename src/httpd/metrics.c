/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  Counters for GET /metrics in the Prometheus text format (version
 *	  0.0.4): requests by endpoint and status, a latency histogram by
 *	  endpoint, the pool's gauges and database errors.  Lock-free: atomic
 *	  adds on fixed arrays, so that counting costs no request a wait.
 *
 * IDENTIFICATION
 *	  src/httpd/metrics.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include "httpd.h"

/* the statuses the daemon and the endpoint functions give; others count as 0 */
static const int statuses[] = {200, 201, 204, 400, 401, 403, 404, 405, 409, 413,
415, 429, 500, 503, 0};

#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

/* seconds; a token request takes about a millisecond, a cached JWKS less */
static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

#define NBUCKET (sizeof(buckets) / sizeof(buckets[0]))

static const char *const endpoint_names[EP_COUNT] = {
	"token", "revoke", "introspect", "jwks", "metadata", "healthz", "readyz",
	"metrics", "admin", "other",
};

static uint64_t requests[EP_COUNT][NSTATUS];
static uint64_t other_status[EP_COUNT][600];	/* statuses outside the list */
static uint64_t hist[EP_COUNT][NBUCKET];
static uint64_t hist_count[EP_COUNT];
static uint64_t hist_sum_us[EP_COUNT];
static uint64_t db_errors;

const char *
httpd_endpoint_name(Endpoint ep)
{
	return endpoint_names[ep];
}

void
httpd_metrics_request(Endpoint ep, int status, double seconds)
{
	size_t		i;

	for (i = 0; i < NSTATUS - 1; i++)
		if (statuses[i] == status)
			break;
	if (i < NSTATUS - 1)
		__atomic_add_fetch(&requests[ep][i], 1, __ATOMIC_RELAXED);
	else if (status >= 100 && status < 600)
		__atomic_add_fetch(&other_status[ep][status], 1, __ATOMIC_RELAXED);

	/* cumulative buckets are summed at render time */
	for (i = 0; i < NBUCKET; i++)
		if (seconds <= buckets[i])
			break;
	if (i < NBUCKET)
		__atomic_add_fetch(&hist[ep][i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&hist_count[ep], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&hist_sum_us[ep], (uint64_t) (seconds * 1e6),
					   __ATOMIC_RELAXED);
}

void
httpd_metrics_db_error(void)
{
	__atomic_add_fetch(&db_errors, 1, __ATOMIC_RELAXED);
}

static uint64_t
load(uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

char *
httpd_metrics_render(size_t *len)
{
	StrBuf		buf = {0};
	int			size,
				in_use,
				waiting,
				connected;
	uint64_t	batches,
				batched;

	httpd_buf_appends(&buf,
					  "# HELP agentidp_httpd_requests_total HTTP requests by endpoint and status.\n"
					  "# TYPE agentidp_httpd_requests_total counter\n");
	for (int ep = 0; ep < EP_COUNT; ep++)
	{
		for (size_t i = 0; i < NSTATUS - 1; i++)
		{
			uint64_t	n = load(&requests[ep][i]);

			if (n)
				httpd_buf_printf(&buf,
								 "agentidp_httpd_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
								 endpoint_names[ep], statuses[i], (unsigned long long) n);
		}
		for (int s = 100; s < 600; s++)
		{
			uint64_t	n = load(&other_status[ep][s]);

			if (n)
				httpd_buf_printf(&buf,
								 "agentidp_httpd_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
								 endpoint_names[ep], s, (unsigned long long) n);
		}
	}

	httpd_buf_appends(&buf,
					  "# HELP agentidp_httpd_request_duration_seconds Time from the first byte of the request to the response, by endpoint.\n"
					  "# TYPE agentidp_httpd_request_duration_seconds histogram\n");
	for (int ep = 0; ep < EP_COUNT; ep++)
	{
		uint64_t	cum = 0;
		uint64_t	count = load(&hist_count[ep]);

		if (count == 0)
			continue;
		for (size_t i = 0; i < NBUCKET; i++)
		{
			cum += load(&hist[ep][i]);
			httpd_buf_printf(&buf,
							 "agentidp_httpd_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
							 endpoint_names[ep], buckets[i], (unsigned long long) cum);
		}
		httpd_buf_printf(&buf,
						 "agentidp_httpd_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n"
						 "agentidp_httpd_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n"
						 "agentidp_httpd_request_duration_seconds_count{endpoint=\"%s\"} %llu\n",
						 endpoint_names[ep], (unsigned long long) count,
						 endpoint_names[ep], load(&hist_sum_us[ep]) / 1e6,
						 endpoint_names[ep], (unsigned long long) count);
	}

	httpd_pool_stats(&size, &in_use, &waiting, &connected);
	httpd_buf_printf(&buf,
					 "# HELP agentidp_httpd_pool_connections Database connections the pool may hold.\n"
					 "# TYPE agentidp_httpd_pool_connections gauge\n"
					 "agentidp_httpd_pool_connections %d\n"
					 "# HELP agentidp_httpd_pool_connections_open Database connections open now.\n"
					 "# TYPE agentidp_httpd_pool_connections_open gauge\n"
					 "agentidp_httpd_pool_connections_open %d\n",
					 size, connected);
	httpd_buf_printf(&buf,
					 "# HELP agentidp_httpd_pool_connections_in_use Database connections lent to requests now.\n"
					 "# TYPE agentidp_httpd_pool_connections_in_use gauge\n"
					 "agentidp_httpd_pool_connections_in_use %d\n"
					 "# HELP agentidp_httpd_pool_waiting Requests waiting for a database connection now.\n"
					 "# TYPE agentidp_httpd_pool_waiting gauge\n"
					 "agentidp_httpd_pool_waiting %d\n",
					 in_use, waiting);
	httpd_buf_printf(&buf,
					 "# HELP agentidp_httpd_database_errors_total Failed connection attempts and failed statements.\n"
					 "# TYPE agentidp_httpd_database_errors_total counter\n"
					 "agentidp_httpd_database_errors_total %llu\n",
					 (unsigned long long) load(&db_errors));
	httpd_batch_stats(&batches, &batched);
	httpd_buf_printf(&buf,
					 "# HELP agentidp_httpd_token_batches_total Transactions that issued more than one token request (group commit).\n"
					 "# TYPE agentidp_httpd_token_batches_total counter\n"
					 "agentidp_httpd_token_batches_total %llu\n"
					 "# HELP agentidp_httpd_token_batched_requests_total Token requests issued in those transactions.\n"
					 "# TYPE agentidp_httpd_token_batched_requests_total counter\n"
					 "agentidp_httpd_token_batched_requests_total %llu\n",
					 (unsigned long long) batches, (unsigned long long) batched);
	if (buf.failed)
	{
		httpd_buf_free(&buf);
		return NULL;
	}
	*len = buf.len;
	return buf.data;
}
