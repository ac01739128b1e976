/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  A fixed-size libpq connection pool.  A request borrows one connection
 *	  (waiting a bounded time), runs one prepared statement in autocommit
 *	  (one short transaction), and gives it back.  A broken connection is
 *	  closed and reopened by a later borrower, at most once a second while
 *	  the database stays down, so that an outage costs 503s and no storm of
 *	  connection attempts.  Parameters hold secrets: they are never logged;
 *	  errors are logged by SQLSTATE alone, since messages may quote input.
 *
 * IDENTIFICATION
 *	  src/httpd/pool.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "httpd.h"

typedef struct PoolConn
{
	PGconn	   *conn;			/* NULL: not connected */
	bool		busy;
	unsigned int prepared;		/* bit per PoolStatement */
} PoolConn;

/*
 * Each statement returns the HTTP status and the body as text, so that the
 * daemon never parses JSON: the endpoint functions' {"status", "body"} is
 * taken apart by the database, and the documents get status 200.  The
 * answers of the token endpoint (its rate limit) and of the admin API have
 * headers too, which come as a third column of "Name: value" lines.
 */
#define HEADER_LINES(headers) \
	"(SELECT pg_catalog.string_agg(h.key OPERATOR(pg_catalog.||) ': ' " \
	"OPERATOR(pg_catalog.||) h.value, E'\\n' ORDER BY h.key) " \
	"FROM pg_catalog.jsonb_each_text(" headers ") AS h)"

static const char *const stmt_sql[STMT_COUNT] = {
	[STMT_TOKEN] = "SELECT (r OPERATOR(pg_catalog.->>) 'status')::pg_catalog.int4, "
	"(r OPERATOR(pg_catalog.->) 'body')::pg_catalog.text, "
	HEADER_LINES("r OPERATOR(pg_catalog.->) 'headers'") " "
	"FROM agentidp.token_endpoint($1::pg_catalog.jsonb) AS r",
	[STMT_REVOKE] = "SELECT (r OPERATOR(pg_catalog.->>) 'status')::pg_catalog.int4, "
	"(r OPERATOR(pg_catalog.->) 'body')::pg_catalog.text "
	"FROM agentidp.revocation_endpoint($1::pg_catalog.jsonb) AS r",
	[STMT_INTROSPECT] = "SELECT (r OPERATOR(pg_catalog.->>) 'status')::pg_catalog.int4, "
	"(r OPERATOR(pg_catalog.->) 'body')::pg_catalog.text "
	"FROM agentidp.introspection_endpoint($1::pg_catalog.jsonb) AS r",
	[STMT_METADATA] = "SELECT 200, r::pg_catalog.text "
	"FROM agentidp.http_metadata($1::pg_catalog.text) AS r",
	[STMT_JWKS] = "SELECT 200, r::pg_catalog.text "
	"FROM agentidp.http_jwks($1::pg_catalog.text) AS r",
	[STMT_TOKEN_BATCH] = "SELECT b.status, b.body, " HEADER_LINES("b.headers") " "
	"FROM agentidp.token_endpoint_batch($1::pg_catalog.jsonb) WITH ORDINALITY AS b "
	"ORDER BY b.ordinality",
	[STMT_ADMIN] = "SELECT (r OPERATOR(pg_catalog.->>) 'status')::pg_catalog.int4, "
	"(r OPERATOR(pg_catalog.->) 'body')::pg_catalog.text, "
	HEADER_LINES("r OPERATOR(pg_catalog.->) 'headers'") " "
	"FROM agentidp.admin_api($1::pg_catalog.text, $2::pg_catalog.text, $3::pg_catalog.jsonb, "
	"$4::pg_catalog.text, $5::pg_catalog.text, $6::pg_catalog.inet, $7::pg_catalog.text) AS r",
};

static const char *const stmt_name[STMT_COUNT] = {
	"agentidp_token", "agentidp_revoke", "agentidp_introspect",
	"agentidp_metadata", "agentidp_jwks", "agentidp_token_batch", "agentidp_admin",
};

/* how many parameters each statement takes and columns it returns */
static const int stmt_nparams[STMT_COUNT] = {
	[STMT_TOKEN] = 1, [STMT_REVOKE] = 1, [STMT_INTROSPECT] = 1,
	[STMT_METADATA] = 1, [STMT_JWKS] = 1, [STMT_TOKEN_BATCH] = 1, [STMT_ADMIN] = 7,
};

static const int stmt_ncolumns[STMT_COUNT] = {
	[STMT_TOKEN] = 3, [STMT_REVOKE] = 2, [STMT_INTROSPECT] = 2,
	[STMT_METADATA] = 2, [STMT_JWKS] = 2, [STMT_TOKEN_BATCH] = 3, [STMT_ADMIN] = 3,
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond;
static PoolConn *pool;
static int	pool_size;
static int	pool_in_use;
static int	pool_waiting;
static int	pool_wait_ms;
static char *pool_conninfo;
static char pool_options[64];
static struct timespec next_connect_attempt;	/* CLOCK_MONOTONIC */
static bool pool_down;			/* last connection attempt failed */

bool
httpd_pool_init(const char *conninfo, int size, int wait_ms,
				int statement_timeout_ms)
{
	pthread_condattr_t attr;

	pool = calloc(size, sizeof(PoolConn));
	if (pool == NULL)
		return false;
	pool_size = size;
	pool_wait_ms = wait_ms;
	pool_conninfo = strdup(conninfo);
	snprintf(pool_options, sizeof(pool_options), "-c statement_timeout=%d",
			 statement_timeout_ms);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pool_cond, &attr);
	pthread_condattr_destroy(&attr);
	return pool_conninfo != NULL;
}

static void
timespec_add_ms(struct timespec *ts, int ms)
{
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long) (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L)
	{
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static bool
timespec_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
		(a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* a free slot, waiting at most pool_wait_ms; NULL when none came */
static PoolConn *
borrow(void)
{
	struct timespec deadline;
	PoolConn   *slot = NULL;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	timespec_add_ms(&deadline, pool_wait_ms);
	pthread_mutex_lock(&pool_lock);
	for (;;)
	{
		/* prefer a connected slot, so that one reconnect does not stall */
		for (int i = 0; i < pool_size; i++)
		{
			if (!pool[i].busy &&
				(slot == NULL || (slot->conn == NULL && pool[i].conn != NULL)))
				slot = &pool[i];
		}
		if (slot != NULL)
			break;
		pool_waiting++;
		if (pthread_cond_timedwait(&pool_cond, &pool_lock, &deadline) == ETIMEDOUT)
		{
			pool_waiting--;
			break;
		}
		pool_waiting--;
	}
	if (slot != NULL)
	{
		slot->busy = true;
		pool_in_use++;
	}
	pthread_mutex_unlock(&pool_lock);
	return slot;
}

static void
give_back(PoolConn *slot)
{
	pthread_mutex_lock(&pool_lock);
	slot->busy = false;
	pool_in_use--;
	pthread_cond_signal(&pool_cond);
	pthread_mutex_unlock(&pool_lock);
}

static void
drop(PoolConn *slot)
{
	PQfinish(slot->conn);
	slot->conn = NULL;
	slot->prepared = 0;
}

/*
 * One lost connection usually means the server restarted and the idle ones
 * are dead too: close them now rather than fail one request on each.  A
 * statement is never retried on a new connection, since it may have
 * committed (a refresh token used twice revokes its family).
 */
static void
drop_idle(void)
{
	pthread_mutex_lock(&pool_lock);
	for (int i = 0; i < pool_size; i++)
	{
		if (!pool[i].busy && pool[i].conn != NULL)
		{
			PQfinish(pool[i].conn);
			pool[i].conn = NULL;
			pool[i].prepared = 0;
		}
	}
	pthread_mutex_unlock(&pool_lock);
}

/*
 * libpq prints the server's notices and warnings on standard error, whole:
 * into the log instead, by SQLSTATE alone, as errors are, since messages
 * may quote input.
 */
static void
log_notice(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	httpd_log("warning", "msg=\"database notice\" severity=%s sqlstate=%s",
			  severity ? severity : "unknown", state ? state : "unknown");
}

/*
 * Connect the slot if it is not.  While the database is down, only one
 * attempt a second is made (by whichever request comes first); the others
 * fail at once instead of each waiting for a connect timeout.
 */
static bool
ensure_connected(PoolConn *slot)
{
	struct timespec now;
	const char *keys[] = {"connect_timeout", "application_name", "options",
	"dbname", NULL};
	const char *vals[] = {"2", "agentidp-httpd", pool_options, pool_conninfo,
	NULL};
	PGconn	   *conn;

	if (slot->conn != NULL)
		return true;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&pool_lock);
	if (pool_down && timespec_before(&now, &next_connect_attempt))
	{
		pthread_mutex_unlock(&pool_lock);
		return false;
	}
	next_connect_attempt = now;
	timespec_add_ms(&next_connect_attempt, 1000);
	pthread_mutex_unlock(&pool_lock);

	/* dbname comes last and is expanded: the configured conninfo wins */
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		pthread_mutex_lock(&pool_lock);
		if (!pool_down)
			httpd_log("error", "msg=\"could not connect to the database\"");
		pool_down = true;
		pthread_mutex_unlock(&pool_lock);
		httpd_metrics_db_error();
		PQfinish(conn);
		return false;
	}
	pthread_mutex_lock(&pool_lock);
	if (pool_down)
		httpd_log("info", "msg=\"connected to the database\"");
	pool_down = false;
	pthread_mutex_unlock(&pool_lock);
	PQsetNoticeReceiver(conn, log_notice, NULL);
	slot->conn = conn;
	slot->prepared = 0;
	return true;
}

/*
 * What a failed statement means for the connection and the client.  A
 * lost connection, an administrator's termination and a plan invalidated
 * by an extension update need a new connection (its prepared statements
 * go with it); contention and overload are worth a retry; anything else is
 * a server error that a retry would not fix.
 */
static PoolResult
classify_failure(PoolConn *slot, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	httpd_metrics_db_error();
	if (PQstatus(slot->conn) != CONNECTION_OK || state == NULL)
	{
		httpd_log("error", "msg=\"database connection lost\"");
		drop(slot);
		drop_idle();
		return POOL_UNAVAILABLE;
	}
	httpd_log("error", "msg=\"database statement failed\" sqlstate=%s", state);
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
		strcmp(state, "0A000") == 0 || strcmp(state, "26000") == 0 ||
		strcmp(state, "25P02") == 0)
	{
		drop(slot);
		return POOL_UNAVAILABLE;
	}
	if (strncmp(state, "40", 2) == 0 || strncmp(state, "53", 2) == 0 ||
		strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0)
		return POOL_UNAVAILABLE;
	return POOL_ERROR;
}

PoolResult
httpd_pool_call(PoolStatement stmt, const char *param, int *status, char **body)
{
	const char *values[1] = {param};

	return httpd_pool_call_params(stmt, 1, values, status, body, NULL);
}

/*
 * Run a statement with nparams text parameters (NULL: SQL NULL).  The
 * statement's third column, where it has one, goes to *extra (NULL when
 * the column is NULL); extra may be NULL for statements without one.
 */
/*
 * Borrow a connection and run a prepared statement on it: the result, with
 * the connection still lent (*slotp; give it back after reading the
 * result), or NULL with *failure set and the connection given back.
 */
static PGresult *
execute(PoolStatement stmt, int nparams, const char *const *values,
		PoolConn **slotp, PoolResult *failure)
{
	PoolConn   *slot;
	PGresult   *res;

	if (nparams != stmt_nparams[stmt])
	{
		*failure = POOL_ERROR;
		return NULL;
	}
	slot = borrow();
	if (slot == NULL)
	{
		*failure = POOL_UNAVAILABLE;
		return NULL;
	}
	if (!ensure_connected(slot))
	{
		give_back(slot);
		*failure = POOL_UNAVAILABLE;
		return NULL;
	}

	/* prepared on first use, so that one missing function spoils no other */
	if (!(slot->prepared & (1u << stmt)))
	{
		res = PQprepare(slot->conn, stmt_name[stmt], stmt_sql[stmt], nparams, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			*failure = classify_failure(slot, res);
			PQclear(res);
			give_back(slot);
			return NULL;
		}
		PQclear(res);
		slot->prepared |= 1u << stmt;
	}

	res = PQexecPrepared(slot->conn, stmt_name[stmt], nparams, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		*failure = classify_failure(slot, res);
		PQclear(res);
		give_back(slot);
		return NULL;
	}
	*slotp = slot;
	return res;
}

/* a text column of a row, copied; NULL when out of memory */
static char *
copy_value(PGresult *res, int row, int col)
{
	return strdup(PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

/*
 * The third column of a row, the header lines, into *extra: NULL when the
 * statement has none or it is NULL.  False when out of memory.
 */
static bool
copy_extra(PoolStatement stmt, PGresult *res, int row, char **extra)
{
	*extra = NULL;
	if (stmt_ncolumns[stmt] < 3 || PQgetisnull(res, row, 2))
		return true;
	*extra = strdup(PQgetvalue(res, row, 2));
	return *extra != NULL;
}

/* free a body that may hold a token or a secret */
static void
free_secret(char **s)
{
	if (*s)
	{
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

PoolResult
httpd_pool_call_params(PoolStatement stmt, int nparams, const char *const *values,
					   int *status, char **body, char **extra)
{
	PoolConn   *slot;
	PGresult   *res;
	PoolResult	result;

	*status = 0;
	*body = NULL;
	if (extra)
		*extra = NULL;
	res = execute(stmt, nparams, values, &slot, &result);
	if (res == NULL)
		return result;
	if (PQntuples(res) != 1 || PQnfields(res) != stmt_ncolumns[stmt])
		result = POOL_NULL;
	else if (PQgetisnull(res, 0, 1) && (stmt == STMT_METADATA || stmt == STMT_JWKS))
		result = POOL_NULL;
	else
	{
		*status = PQgetisnull(res, 0, 0) ? 500 : atoi(PQgetvalue(res, 0, 0));
		*body = copy_value(res, 0, 1);
		result = *body ? POOL_OK : POOL_ERROR;
		if (result == POOL_OK && extra && !copy_extra(stmt, res, 0, extra))
		{
			free_secret(body);
			result = POOL_ERROR;
		}
	}
	PQclear(res);
	give_back(slot);
	return result;
}

/*
 * A statement of one parameter that answers nrows rows of (status, body,
 * header lines), in order: the token endpoint's batches (batch.c).
 * POOL_ERROR here means only that the statement failed, so that its
 * transaction rolled back; a result of the wrong shape, or no memory to
 * copy it, is POOL_NULL, since the statement may have committed.
 */
PoolResult
httpd_pool_call_rows(PoolStatement stmt, const char *param, int nrows,
					 int *statuses, char **bodies, char **extras)
{
	const char *values[1] = {param};
	PoolConn   *slot;
	PGresult   *res;
	PoolResult	result = POOL_OK;

	res = execute(stmt, 1, values, &slot, &result);
	if (res == NULL)
		return result;
	if (PQntuples(res) != nrows || PQnfields(res) != stmt_ncolumns[stmt])
		result = POOL_NULL;
	for (int i = 0; i < nrows && result == POOL_OK; i++)
	{
		statuses[i] = PQgetisnull(res, i, 0) ? 500 : atoi(PQgetvalue(res, i, 0));
		bodies[i] = copy_value(res, i, 1);
		if (bodies[i] == NULL || !copy_extra(stmt, res, i, &extras[i]))
			result = POOL_NULL;
	}
	if (result != POOL_OK)
	{
		for (int i = 0; i < nrows; i++)
		{
			free_secret(&bodies[i]);
			free(extras[i]);
			extras[i] = NULL;
		}
	}
	PQclear(res);
	give_back(slot);
	return result;
}

/* /readyz: a pooled connection answers SELECT 1 */
bool
httpd_pool_ping(void)
{
	PoolConn   *slot = borrow();
	PGresult   *res;
	bool		ok;

	if (slot == NULL)
		return false;
	if (!ensure_connected(slot))
	{
		give_back(slot);
		return false;
	}
	res = PQexec(slot->conn, "SELECT 1");
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		(void) classify_failure(slot, res);
	PQclear(res);
	give_back(slot);
	return ok;
}

void
httpd_pool_stats(int *size, int *in_use, int *waiting, int *connected)
{
	pthread_mutex_lock(&pool_lock);
	*size = pool_size;
	*in_use = pool_in_use;
	*waiting = pool_waiting;
	*connected = 0;
	for (int i = 0; i < pool_size; i++)
		if (pool[i].conn != NULL)
			(*connected)++;
	pthread_mutex_unlock(&pool_lock);
}

/* at exit, after the server has stopped: no borrower is left */
void
httpd_pool_shutdown(void)
{
	for (int i = 0; i < pool_size; i++)
		drop(&pool[i]);
	free(pool);
	pool = NULL;
	pool_size = 0;
	free(pool_conninfo);
	pool_conninfo = NULL;
}
