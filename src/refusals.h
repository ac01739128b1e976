/*-------------------------------------------------------------------------
 *
 * refusals.h
 *	  Refused token requests of direct SQL callers, queued in shared
 *	  memory for the audit log (refusals.c).
 *
 * IDENTIFICATION
 *	  src/refusals.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_REFUSALS_H
#define AGENTIDP_REFUSALS_H

#include "utils/uuid.h"

/* from _PG_init: the shared-memory ring (when preloaded), the callback */
extern void agentidp_refusals_init(void);

/* a refusal of this transaction, queued if the transaction aborts */
extern void agentidp_note_refusal(const pg_uuid_t *tenant, const pg_uuid_t *agent,
								  const char *grant, const char *client_id,
								  const char *error, const char *reason);

#endif							/* AGENTIDP_REFUSALS_H */
