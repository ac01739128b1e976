/*-------------------------------------------------------------------------
 *
 * ratelimit.h
 *	  What other parts use of the rate limits (ratelimit.c): their
 *	  settings and the check of token issuance.
 *
 * IDENTIFICATION
 *	  src/ratelimit.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_RATELIMIT_H
#define AGENTIDP_RATELIMIT_H

#include "utils/uuid.h"

/*
 * From _PG_init, before MarkGUCPrefixReserved: the settings, and the
 * shared-memory table when the library is being preloaded.
 */
extern void agentidp_ratelimit_init(void);

/*
 * Token issuance for a client of a tenant, counted against the client's
 * limit and the tenant's.  client_limit is the agent's own setting or its
 * tenant's default for clients, tenant_limit the tenant's setting (each
 * NULL when not set: the GUC applies).  Begin when every other check of
 * the grant has passed, end before the grant returns: either raises 53400
 * when a limit is exhausted (with Redis, the end).  The strings must last
 * until the end.  The answer is kept for token_endpoint's RateLimit
 * headers (agentidp._token_rate_headers).
 */
extern void agentidp_issuance_limit_begin(const pg_uuid_t *tenant, const char *client_id,
										  const char *client_limit, const char *tenant_limit);
extern void agentidp_issuance_limit_end(void);

/* a grant begins: forget the answer an earlier one left */
extern void agentidp_forget_issuance_limit(void);

#endif							/* AGENTIDP_RATELIMIT_H */
