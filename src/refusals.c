/*-------------------------------------------------------------------------
 *
 * refusals.c
 *	  Refused token requests of direct SQL callers, kept for the audit log.
 *
 *	  A refused grant raises an error, and the error rolls back the
 *	  caller's transaction, audit rows included.  So a refusal is noted in
 *	  backend memory when it is raised, moved into a ring in shared memory
 *	  when the transaction aborts, and written to the tenants' audit chains
 *	  later by agentidp.drain_refusals(), which the background worker (or a
 *	  pg_cron job) calls.  token_endpoint audits its own refusals in the
 *	  same transaction and needs none of this.
 *
 *	  The ring needs shared_preload_libraries; without it nothing is
 *	  noted, and drain_refusals says so.  When the ring is full, new
 *	  refusals are counted as dropped rather than overwrite older ones.
 *
 * IDENTIFICATION
 *	  src/refusals.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "agentidp.h"
#include "audit.h"
#include "refusals.h"

PG_FUNCTION_INFO_V1(agentidp_drain_refusals);

#define RING_SIZE		1024
#define PENDING_MAX		16
#define FIELD_LEN		128

typedef struct Refusal
{
	Oid			database;		/* tenants are per database */
	pg_uuid_t	tenant;
	pg_uuid_t	agent;
	TimestampTz at;
	char		grant[48];
	char		client_id[FIELD_LEN];
	char		error[32];
	char		reason[FIELD_LEN];
} Refusal;

typedef struct RefusalRing
{
	LWLock	   *lock;
	uint64		head;			/* next to write */
	uint64		tail;			/* next to drain */
	uint64		dropped;
	Refusal		items[RING_SIZE];
} RefusalRing;

static RefusalRing *ring = NULL;
static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;

/* this transaction's refusals, moved to the ring if it aborts */
static Refusal pending[PENDING_MAX];
static int	npending = 0;

static void
refusals_shmem_request(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RefusalRing)));
	RequestNamedLWLockTranche("agentidp_refusals", 1);
}

static void
refusals_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup)
		prev_shmem_startup();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ring = ShmemInitStruct("agentidp refusals", sizeof(RefusalRing), &found);
	if (!found)
	{
		memset(ring, 0, sizeof(RefusalRing));
		ring->lock = &(GetNamedLWLockTranche("agentidp_refusals"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
refusals_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT && npending > 0 && ring != NULL)
	{
		LWLockAcquire(ring->lock, LW_EXCLUSIVE);
		for (int i = 0; i < npending; i++)
		{
			if (ring->head - ring->tail >= RING_SIZE)
			{
				ring->dropped++;
				continue;
			}
			ring->items[ring->head % RING_SIZE] = pending[i];
			ring->head++;
		}
		LWLockRelease(ring->lock);
	}
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT ||
		event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT)
		npending = 0;
}

void
agentidp_refusals_init(void)
{
	if (process_shared_preload_libraries_in_progress)
	{
		prev_shmem_request = shmem_request_hook;
		shmem_request_hook = refusals_shmem_request;
		prev_shmem_startup = shmem_startup_hook;
		shmem_startup_hook = refusals_shmem_startup;
	}
	RegisterXactCallback(refusals_xact_callback, NULL);
}

/* src cut to fit size bytes with its NUL, never inside a character */
static void
clip(char *dst, const char *src, size_t size)
{
	int			len = pg_mbcliplen(src, strlen(src), size - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

void
agentidp_note_refusal(const pg_uuid_t *tenant, const pg_uuid_t *agent,
					  const char *grant, const char *client_id,
					  const char *error, const char *reason)
{
	Refusal    *r;

	if (ring == NULL || npending >= PENDING_MAX)
		return;
	r = &pending[npending++];
	memset(r, 0, sizeof(*r));
	r->database = MyDatabaseId;
	memcpy(&r->tenant, tenant, sizeof(pg_uuid_t));
	memcpy(&r->agent, agent, sizeof(pg_uuid_t));
	r->at = GetCurrentTimestamp();
	clip(r->grant, grant, sizeof(r->grant));
	clip(r->client_id, client_id, sizeof(r->client_id));
	clip(r->error, error, sizeof(r->error));
	clip(r->reason, reason, sizeof(r->reason));
}

/*
 * agentidp.drain_refusals(max integer DEFAULT 1000) RETURNS integer
 *
 * Writes up to max queued refusals to their tenants' audit chains
 * (token.refused, result denied) and returns how many.  They leave the
 * ring at once: a drain whose transaction rolls back loses them, so run
 * it in a transaction of its own.
 */
Datum
agentidp_drain_refusals(PG_FUNCTION_ARGS)
{
	int32		max = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	Refusal    *batch;
	int			n = 0;
	uint64		dropped;

	if (ring == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("agentidp.drain_refusals needs agentidp in shared_preload_libraries"),
				errhint("Without it, refusals of direct SQL calls are not queued; token_endpoint audits its own."));
	if (max < 1)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("max must be at least 1"));

	/*
	 * Take this database's refusals, oldest first; other databases' stay,
	 * in order, for their own drains.
	 */
	batch = palloc(sizeof(Refusal) * Min(max, RING_SIZE));
	LWLockAcquire(ring->lock, LW_EXCLUSIVE);
	{
		uint64		keep = ring->tail;

		for (uint64 i = ring->tail; i < ring->head; i++)
		{
			Refusal    *r = &ring->items[i % RING_SIZE];

			if (r->database == MyDatabaseId && n < Min(max, RING_SIZE))
				batch[n++] = *r;
			else
			{
				if (keep != i)
					ring->items[keep % RING_SIZE] = *r;
				keep++;
			}
		}
		ring->head = keep;
	}
	dropped = ring->dropped;
	ring->dropped = 0;
	LWLockRelease(ring->lock);

	if (dropped > 0)
		ereport(WARNING,
				errmsg("agentidp: " UINT64_FORMAT " refused token requests were not queued: the queue was full",
					   dropped),
				errhint("Drain it more often."));

	for (int i = 0; i < n; i++)
	{
		StringInfoData detail;

		initStringInfo(&detail);
		appendStringInfoString(&detail, "{\"grant_type\":");
		escape_json(&detail, batch[i].grant);
		appendStringInfoString(&detail, ",\"client_id\":");
		escape_json(&detail, batch[i].client_id);
		appendStringInfoString(&detail, ",\"error\":");
		escape_json(&detail, batch[i].error);
		appendStringInfoString(&detail, ",\"error_description\":");
		escape_json(&detail, batch[i].reason);
		appendStringInfoString(&detail, ",\"refused_at\":");
		escape_json(&detail, timestamptz_to_str(batch[i].at));
		appendStringInfoString(&detail, ",\"path\":\"sql\"}");
		agentidp_audit_event(&batch[i].tenant, &batch[i].agent, "token.refused", "denied",
							 "token", NULL, detail.data);
	}
	PG_RETURN_INT32(n);
}
