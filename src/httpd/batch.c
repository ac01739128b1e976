/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Group commit for the token endpoint.
 *
 *	  A token is answered once its audit row is durable, and a tenant's
 *	  audit chain takes its links one commit at a time: the chain's lock is
 *	  held until the commit is flushed (docs/audit.md, "Concurrency").  One
 *	  transaction per token would make the requests of one tenant wait for
 *	  each other's WAL flush, one at a time.  So the token requests that
 *	  arrive while others are running are gathered and issued together by
 *	  one call of agentidp.token_endpoint_batch(): one transaction, one
 *	  flush, one link of the chain for all of them.  Each request is still
 *	  its own grant with its own answer and its own audit row, with its own
 *	  client address and request id; the database decides each one as it
 *	  would alone.
 *
 *	  At most token_batch_concurrency batches run at once (two by default:
 *	  one flushing while the next is being issued).  A request that finds a
 *	  free place runs at once, alone, so that a quiet daemon adds no wait;
 *	  under load the queue grows while the running batches finish, and the
 *	  next leader takes up to token_batch_max requests from it in arrival
 *	  order.  The leader is whichever waiting request thread finds a place
 *	  free: there is no thread of its own.
 *
 *	  A batch that fails as a whole (an error no grant catches, which rolls
 *	  the whole transaction back, so nothing of it committed) is run again
 *	  one request at a time, so that a bad request fails alone.  When the
 *	  database is unavailable, every request of the batch gets the 503.
 *
 * IDENTIFICATION
 *	  src/httpd/batch.c
 *
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"

typedef struct BatchItem
{
	const char *request;		/* the request object, JSON; holds secrets */
	PoolResult	result;
	int			status;
	char	   *body;
	char	   *headers;		/* header lines of the answer, or NULL */
	bool		done;			/* after this is set, the owner may return */
	pthread_cond_t wake;		/* its thread waits here: done, or to lead */
	struct BatchItem *next;
} BatchItem;

static pthread_mutex_t batch_lock = PTHREAD_MUTEX_INITIALIZER;
static BatchItem *queue_head;
static BatchItem *queue_tail;
static int	running;			/* batches in flight */
static uint64_t batches_run;	/* statements of more than one request */
static uint64_t requests_batched;	/* requests that went in them */

/* one request alone, through the endpoint's own statement */
static void
run_one(BatchItem *item)
{
	item->result = httpd_pool_call_params(STMT_TOKEN, 1, &item->request, &item->status,
										  &item->body, &item->headers);
}

/*
 * The items of one batch, n > 1: one call with the JSON array of their
 * request objects, one row back per request, in order.
 */
static void
run_batch(BatchItem *first, int n)
{
	StrBuf		json = {0};
	int		   *statuses = NULL;
	char	  **bodies = NULL;
	char	  **headers = NULL;
	PoolResult	pr = POOL_ERROR;
	BatchItem  *item;
	int			i;

	httpd_buf_appends(&json, "[");
	for (item = first, i = 0; i < n; item = item->next, i++)
	{
		if (i > 0)
			httpd_buf_appends(&json, ",");
		httpd_buf_appends(&json, item->request);
	}
	httpd_buf_appends(&json, "]");
	statuses = calloc(n, sizeof(int));
	bodies = calloc(n, sizeof(char *));
	headers = calloc(n, sizeof(char *));
	if (!json.failed && statuses && bodies && headers)
		pr = httpd_pool_call_rows(STMT_TOKEN_BATCH, json.data, n, statuses, bodies,
								  headers);
	if (json.data)
		explicit_bzero(json.data, json.len);
	httpd_buf_free(&json);

	for (item = first, i = 0; i < n; item = item->next, i++)
	{
		if (pr == POOL_OK)
		{
			item->result = POOL_OK;
			item->status = statuses[i];
			item->body = bodies[i];
			item->headers = headers[i];
		}
		else if (pr == POOL_ERROR)
			run_one(item);		/* the batch failed: nothing of it committed */
		else
			item->result = pr == POOL_UNAVAILABLE ? POOL_UNAVAILABLE : POOL_ERROR;
	}
	free(statuses);
	free(bodies);
	free(headers);

	if (pr == POOL_OK)
	{
		pthread_mutex_lock(&batch_lock);
		batches_run++;
		requests_batched += n;
		pthread_mutex_unlock(&batch_lock);
	}
}

PoolResult
httpd_token_call(const char *request, int *status, char **body, char **headers)
{
	BatchItem	self = {.request = request};

	/*
	 * Each waiting thread has a condition variable of its own, so that a
	 * batch wakes its own requests' threads and, when a place is free,
	 * the thread of the oldest waiting request to lead the next one:
	 * waking every waiting thread at each batch's end costs a 2-core
	 * machine a good share of its time under load.
	 */
	*status = 0;
	*body = NULL;
	*headers = NULL;
	if (httpd_config.token_batch_max <= 1)
		return httpd_pool_call_params(STMT_TOKEN, 1, &request, status, body, headers);

	pthread_cond_init(&self.wake, NULL);
	pthread_mutex_lock(&batch_lock);
	if (queue_tail)
		queue_tail->next = &self;
	else
		queue_head = &self;
	queue_tail = &self;

	while (!self.done)
	{
		BatchItem  *first;
		BatchItem  *item;
		int			n = 0;

		if (queue_head == NULL || running >= httpd_config.token_batch_concurrency)
		{
			pthread_cond_wait(&self.wake, &batch_lock);
			continue;
		}

		/* lead a batch: the oldest requests, ours among them or not */
		first = queue_head;
		for (item = first; item && n < httpd_config.token_batch_max; item = item->next)
		{
			n++;
			queue_head = item->next;
		}
		if (queue_head == NULL)
			queue_tail = NULL;
		running++;
		/* another place free and requests left: the next leader */
		if (queue_head && running < httpd_config.token_batch_concurrency)
			pthread_cond_signal(&queue_head->wake);
		pthread_mutex_unlock(&batch_lock);

		if (n == 1)
			run_one(first);
		else
			run_batch(first, n);

		pthread_mutex_lock(&batch_lock);
		running--;
		/*
		 * Read each next link before done: a done item's owner may leave
		 * once the lock is released (not before: it waits under it).
		 */
		for (item = first; n > 0; n--)
		{
			BatchItem  *next = item->next;

			item->done = true;
			pthread_cond_signal(&item->wake);
			item = next;
		}
		if (queue_head && running < httpd_config.token_batch_concurrency)
			pthread_cond_signal(&queue_head->wake);
	}
	pthread_mutex_unlock(&batch_lock);
	pthread_cond_destroy(&self.wake);

	*status = self.status;
	*body = self.body;
	*headers = self.headers;
	return self.result;
}

void
httpd_batch_stats(uint64_t *batches, uint64_t *requests)
{
	pthread_mutex_lock(&batch_lock);
	*batches = batches_run;
	*requests = requests_batched;
	pthread_mutex_unlock(&batch_lock);
}
