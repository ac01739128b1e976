/*-------------------------------------------------------------------------
 *
 * maintenance.c
 *	  A database worker of the background worker: started by the launcher
 *	  for one database, it runs CALL agentidp.run_maintenance() there, as
 *	  pg_cron would, and exits.  The procedure commits between its steps,
 *	  so no transaction stays open long; nothing waits inside one.
 *
 * IDENTIFICATION
 *	  bgworker/maintenance.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "tcop/pquery.h"
#include "tcop/utility.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "worker.h"

#define RUN_MAINTENANCE "CALL agentidp.run_maintenance()"

/* whether this database has an agentidp that knows run_maintenance (0.5 on) */
static bool
has_maintenance(void)
{
	bool		found = false;

	StartTransactionCommand();
	if (OidIsValid(get_extension_oid("agentidp", true)))
	{
		bool		isnull;

		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT ||
			SPI_execute("SELECT pg_catalog.to_regprocedure('agentidp.run_maintenance(interval)') IS NOT NULL",
						true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not look for agentidp.run_maintenance");
		found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	return found;
}

/*
 * Runs one statement as a client's simple query would, in a portal at top
 * level: a CALL there is not atomic, so the procedure may commit, and
 * the portal keeps the snapshots its commits expect.
 */
static void
run_top_level(const char *sql)
{
	/* the plan must outlive the procedure's commits, as MessageContext does */
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "agentidp maintenance statement",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	List	   *parsetrees = pg_parse_query(sql);
	RawStmt    *parsetree;
	List	   *queries;
	List	   *plans;
	Portal		portal;
	DestReceiver *receiver;

	if (list_length(parsetrees) != 1)
		elog(ERROR, "expected one statement: %s", sql);
	parsetree = linitial_node(RawStmt, parsetrees);
	queries = pg_analyze_and_rewrite_fixedparams(parsetree, sql, NULL, 0, NULL);
	plans = pg_plan_queries(queries, sql, CURSOR_OPT_PARALLEL_OK, NULL);
	portal = CreatePortal("agentidp maintenance", true, true);
	portal->visible = false;
	PortalDefineQuery(portal, NULL, sql, CreateCommandTag(parsetree->stmt), plans, NULL);
	PortalStart(portal, NULL, 0, InvalidSnapshot);
	receiver = CreateDestReceiver(DestNone);
	(void) PortalRun(portal, FETCH_ALL, true, true, receiver, receiver, NULL);
	receiver->rDestroy(receiver);
	PortalDrop(portal, false);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

void
agentidp_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);

	/* SIGTERM cancels what runs at once, as for any backend */
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	/* as the bootstrap superuser, the owner of what the maintenance touches */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname(AGENTIDP_WORKER_TYPE);

	if (!has_maintenance())
	{
		agentidp_worker_note_no_extension(dboid);
		proc_exit(0);
	}

	pgstat_report_activity(STATE_RUNNING, RUN_MAINTENANCE);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	run_top_level(RUN_MAINTENANCE);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
