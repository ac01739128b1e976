/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background worker: a launcher that finds the databases where
 *	  agentidp is installed (launcher.c) and, every agentidp.worker_naptime,
 *	  a short-lived worker per such database that runs
 *	  agentidp.run_maintenance() there (maintenance.c).
 *
 * IDENTIFICATION
 *	  bgworker/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_WORKER_H
#define AGENTIDP_WORKER_H

#include "postgres.h"

#include "utils/uuid.h"

/* the process types, as pg_stat_activity.backend_type shows them */
#define AGENTIDP_LAUNCHER_TYPE	"agentidp launcher"
#define AGENTIDP_WORKER_TYPE	"agentidp worker"

extern int	agentidp_worker_naptime;
extern int	agentidp_expiry_batch_size;
extern int	agentidp_deleted_agent_retention;
extern bool agentidp_preloaded;

/* from _PG_init: settings, and when preloaded the shared state and the launcher */
extern void agentidp_worker_init(void);

/* a database worker found no agentidp: the launcher leaves it alone until woken */
extern void agentidp_worker_note_no_extension(Oid dboid);

/* whether a database was noted as without agentidp since the last wake-up */
extern bool agentidp_worker_lacks_extension(Oid dboid);

/*
 * A token named a key that no trusted issuer of the tenant has: ask the
 * next maintenance run in this database to fetch their key sets (when
 * preloaded; a full queue drops the request, the schedule still applies).
 * The run takes the requests of its database.
 */
extern void agentidp_worker_request_key_refresh(const pg_uuid_t *tenant);
extern int	agentidp_worker_take_key_refreshes(pg_uuid_t *tenants, int max);

/* entry points, named in the BackgroundWorker structs */
extern PGDLLEXPORT void agentidp_launcher_main(Datum main_arg);
extern PGDLLEXPORT void agentidp_worker_main(Datum main_arg);

#endif							/* AGENTIDP_WORKER_H */
