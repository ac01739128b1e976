/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher of the background worker.  Registered from _PG_init
 *	  when agentidp is in shared_preload_libraries, it connects to no
 *	  database, lists the databases every agentidp.worker_naptime and
 *	  starts one short-lived worker (maintenance.c) for each database that
 *	  has agentidp and has no worker running yet.
 *
 *	  A database worker exits when its run is over, so no connection is
 *	  held between runs (DROP DATABASE is not blocked by an idle worker).
 *	  A database found without agentidp is noted in shared memory and left
 *	  alone until agentidp._wake_worker() clears the notes, which the
 *	  extension's scripts call: CREATE EXTENSION is served at once, and a
 *	  database without agentidp costs one check, not one per naptime.
 *
 * IDENTIFICATION
 *	  bgworker/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker.h"

int			agentidp_worker_naptime = 10;
int			agentidp_expiry_batch_size = 5000;
int			agentidp_deleted_agent_retention = 30 * 86400;
bool		agentidp_preloaded = false;

/* the databases noted as without agentidp; more are simply checked again */
#define MAX_NOTED_DATABASES 1024

/* tenants whose trusted issuers' key sets a token asked to refresh */
#define MAX_KEY_REFRESHES 64

typedef struct WorkerShared
{
	slock_t		mutex;
	Latch	   *launcher_latch; /* NULL while no launcher runs */
	int			nnoted;
	Oid			noted[MAX_NOTED_DATABASES];
	int			nrefresh;
	Oid			refresh_db[MAX_KEY_REFRESHES];
	pg_uuid_t	refresh_tenant[MAX_KEY_REFRESHES];
} WorkerShared;

static WorkerShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;

/* the launcher's view of one database */
typedef struct DatabaseEntry
{
	Oid			dboid;
	BackgroundWorkerHandle *handle; /* the running worker, or NULL */
	TimestampTz next_run;
	bool		seen;			/* still listed in pg_database */
} DatabaseEntry;

static void
worker_shmem_request(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	RequestAddinShmemSpace(MAXALIGN(sizeof(WorkerShared)));
}

static void
worker_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup)
		prev_shmem_startup();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("agentidp worker", sizeof(WorkerShared), &found);
	if (!found)
	{
		SpinLockInit(&shared->mutex);
		shared->launcher_latch = NULL;
		shared->nnoted = 0;
		shared->nrefresh = 0;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
agentidp_worker_init(void)
{
	BackgroundWorker bgw;

	DefineCustomIntVariable("agentidp.worker_naptime",
							"Seconds between two maintenance runs of the background worker in each database.",
							NULL,
							&agentidp_worker_naptime,
							10, 1, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/* read by agentidp.expire_batch(), under the worker or pg_cron alike */
	DefineCustomIntVariable("agentidp.expiry_batch_size",
							"Rows of each kind that one expiry batch (one transaction) deletes at most.",
							NULL,
							&agentidp_expiry_batch_size,
							5000, 1, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.deleted_agent_retention",
							"How long a deleted agent's row is kept before expiry removes it.",
							NULL,
							&agentidp_deleted_agent_retention,
							30 * 86400, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;
	agentidp_preloaded = true;

	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = worker_shmem_request;
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = worker_shmem_startup;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* after a crash of the server or of the launcher itself */
	bgw.bgw_restart_time = 10;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "agentidp");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "agentidp_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, AGENTIDP_LAUNCHER_TYPE);
	snprintf(bgw.bgw_type, BGW_MAXLEN, AGENTIDP_LAUNCHER_TYPE);
	RegisterBackgroundWorker(&bgw);
}

void
agentidp_worker_note_no_extension(Oid dboid)
{
	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	if (shared->nnoted < MAX_NOTED_DATABASES)
		shared->noted[shared->nnoted++] = dboid;
	SpinLockRelease(&shared->mutex);
}

bool
agentidp_worker_lacks_extension(Oid dboid)
{
	bool		noted = false;

	if (shared == NULL)
		return false;
	SpinLockAcquire(&shared->mutex);
	for (int i = 0; i < shared->nnoted && !noted; i++)
		noted = shared->noted[i] == dboid;
	SpinLockRelease(&shared->mutex);
	return noted;
}

void
agentidp_worker_request_key_refresh(const pg_uuid_t *tenant)
{
	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	for (int i = 0; i < shared->nrefresh; i++)
		if (shared->refresh_db[i] == MyDatabaseId &&
			memcmp(&shared->refresh_tenant[i], tenant, sizeof(pg_uuid_t)) == 0)
		{
			SpinLockRelease(&shared->mutex);
			return;
		}
	if (shared->nrefresh < MAX_KEY_REFRESHES)
	{
		shared->refresh_db[shared->nrefresh] = MyDatabaseId;
		memcpy(&shared->refresh_tenant[shared->nrefresh], tenant, sizeof(pg_uuid_t));
		shared->nrefresh++;
	}
	SpinLockRelease(&shared->mutex);
}

int
agentidp_worker_take_key_refreshes(pg_uuid_t *tenants, int max)
{
	int			n = 0;

	if (shared == NULL)
		return 0;
	SpinLockAcquire(&shared->mutex);
	for (int i = 0; i < shared->nrefresh;)
	{
		if (shared->refresh_db[i] == MyDatabaseId && n < max)
		{
			memcpy(&tenants[n++], &shared->refresh_tenant[i], sizeof(pg_uuid_t));
			/* the last one takes its place */
			shared->nrefresh--;
			shared->refresh_db[i] = shared->refresh_db[shared->nrefresh];
			memcpy(&shared->refresh_tenant[i], &shared->refresh_tenant[shared->nrefresh],
				   sizeof(pg_uuid_t));
		}
		else
			i++;
	}
	SpinLockRelease(&shared->mutex);
	return n;
}

/* forget the notes and wake the launcher */
static void
wake_launcher(void)
{
	Latch	   *latch;

	SpinLockAcquire(&shared->mutex);
	shared->nnoted = 0;
	latch = shared->launcher_latch;
	SpinLockRelease(&shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

static bool wake_at_commit = false;

static void
wake_xact_callback(XactEvent event, void *arg)
{
	if (!wake_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		wake_launcher();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_at_commit = false;
}

/*
 * agentidp._wake_worker() RETURNS boolean
 *
 * When the calling transaction commits, forgets which databases lacked
 * agentidp and wakes the launcher, which then looks at every database:
 * a worker started before the commit would not see the extension yet.
 * False when no launcher runs (not preloaded, or between a crash and its
 * restart).
 */
PG_FUNCTION_INFO_V1(agentidp_wake_worker);
Datum
agentidp_wake_worker(PG_FUNCTION_ARGS)
{
	static bool registered = false;
	bool		running;

	if (shared == NULL)
		PG_RETURN_BOOL(false);
	if (!registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		registered = true;
	}
	wake_at_commit = true;
	SpinLockAcquire(&shared->mutex);
	running = shared->launcher_latch != NULL;
	SpinLockRelease(&shared->mutex);
	PG_RETURN_BOOL(running);
}

/*
 * agentidp._preloaded() RETURNS boolean
 */
PG_FUNCTION_INFO_V1(agentidp_preloaded_sql);
Datum
agentidp_preloaded_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(agentidp_preloaded);
}

static void
launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&shared->mutex);
	shared->launcher_latch = NULL;
	SpinLockRelease(&shared->mutex);
}

/* the databases a worker may connect to, in a short transaction of their own */
static List *
list_databases(void)
{
	List	   *oids = NIL;
	MemoryContext cxt = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		/* datconnlimit -2 marks a database half-dropped */
		if (!db->datallowconn || db->datistemplate || db->datconnlimit == -2)
			continue;
		old = MemoryContextSwitchTo(cxt);
		oids = lappend_oid(oids, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return oids;
}

static DatabaseEntry *
find_entry(List *entries, Oid dboid)
{
	ListCell   *lc;

	foreach(lc, entries)
	{
		DatabaseEntry *e = lfirst(lc);

		if (e->dboid == dboid)
			return e;
	}
	return NULL;
}

static bool
start_database_worker(DatabaseEntry *e)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* the launcher starts it again at the next naptime */
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "agentidp");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "agentidp_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, AGENTIDP_WORKER_TYPE " for database %u", e->dboid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, AGENTIDP_WORKER_TYPE);
	bgw.bgw_main_arg = ObjectIdGetDatum(e->dboid);
	/* SIGUSR1 (hence the latch) when it starts and when it exits */
	bgw.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&bgw, &e->handle);
}

/*
 * One pass: forget dropped databases, notice finished workers, start the
 * workers that are due.  Returns the milliseconds until the next is due.
 */
static long
launch_due_workers(List **entries, MemoryContext cxt)
{
	List	   *oids = list_databases();
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = agentidp_worker_naptime * 1000L;
	ListCell   *lc;
	List	   *kept = NIL;
	MemoryContext old = MemoryContextSwitchTo(cxt);

	elog(DEBUG2, "agentidp launcher: %d databases", list_length(oids));
	foreach(lc, *entries)
		((DatabaseEntry *) lfirst(lc))->seen = false;
	foreach(lc, oids)
	{
		Oid			dboid = lfirst_oid(lc);
		DatabaseEntry *e = find_entry(*entries, dboid);

		if (e == NULL)
		{
			e = palloc0(sizeof(DatabaseEntry));
			e->dboid = dboid;
			e->next_run = now;
			*entries = lappend(*entries, e);
		}
		e->seen = true;

		if (e->handle != NULL)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(e->handle, &pid) != BGWH_STOPPED)
				continue;		/* still running or starting */
			pfree(e->handle);
			e->handle = NULL;
		}
		if (agentidp_worker_lacks_extension(dboid))
			continue;
		if (e->next_run > now)
		{
			long		secs;
			int			usecs;

			TimestampDifference(now, e->next_run, &secs, &usecs);
			wait_ms = Min(wait_ms, secs * 1000L + usecs / 1000 + 1);
			continue;
		}
		if (!start_database_worker(e))
		{
			/* no free worker slot (max_worker_processes): try again soon */
			ereport(LOG,
					errmsg("agentidp launcher: no background worker slot free for database %u", dboid),
					errhint("Raise max_worker_processes."));
			e->handle = NULL;
			wait_ms = Min(wait_ms, 1000L);
			continue;
		}
		elog(DEBUG1, "agentidp launcher: started a worker for database %u", dboid);
		e->next_run = TimestampTzPlusMilliseconds(now, agentidp_worker_naptime * 1000L);
	}
	/* dropped databases: their workers ended with them */
	foreach(lc, *entries)
	{
		DatabaseEntry *e = lfirst(lc);

		if (e->seen || e->handle != NULL)
			kept = lappend(kept, e);
		else
			pfree(e);
	}
	list_free(*entries);
	*entries = kept;
	MemoryContextSwitchTo(old);
	list_free(oids);
	return Max(wait_ms, 10L);
}

void
agentidp_launcher_main(Datum main_arg)
{
	List	   *entries = NIL;
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/* no database: pg_database is a shared catalog */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname(AGENTIDP_LAUNCHER_TYPE);

	SpinLockAcquire(&shared->mutex);
	shared->launcher_latch = MyLatch;
	shared->nnoted = 0;
	SpinLockRelease(&shared->mutex);
	before_shmem_exit(launcher_detach, (Datum) 0);

	ereport(LOG, errmsg("agentidp launcher started, naptime %d s", agentidp_worker_naptime));
	cxt = AllocSetContextCreate(TopMemoryContext, "agentidp launcher", ALLOCSET_DEFAULT_SIZES);
	while (!ShutdownRequestPending)
	{
		long		wait_ms;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			ereport(LOG, errmsg("agentidp launcher: naptime %d s", agentidp_worker_naptime));
			/* a shorter naptime applies to the runs already planned */
			{
				TimestampTz soonest = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																  agentidp_worker_naptime * 1000L);
				ListCell   *lc;

				foreach(lc, entries)
				{
					DatabaseEntry *e = lfirst(lc);

					e->next_run = Min(e->next_run, soonest);
				}
			}
		}
		pgstat_report_activity(STATE_RUNNING, "launching database workers");
		wait_ms = launch_due_workers(&entries, cxt);
		pgstat_report_activity(STATE_IDLE, NULL);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	ereport(LOG, errmsg("agentidp launcher shutting down"));
	proc_exit(0);
}
