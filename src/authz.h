/*-------------------------------------------------------------------------
 *
 * authz.h
 *	  What other parts use of authz.c: the transaction's identity.
 *
 * IDENTIFICATION
 *	  src/authz.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_AUTHZ_H
#define AGENTIDP_AUTHZ_H

#include "postgres.h"

#include "utils/uuid.h"

/*
 * The identity of the transaction (authenticate(), or PostgREST's claims
 * through postgrest_pre_request()), for the audit log: its tenant and the
 * agent acting (*has_* false when the claims lack them), and its "act"
 * claim as JSON text or NULL.  False when there is no identity.
 */
extern bool agentidp_identity_actor(pg_uuid_t *tenant, bool *has_tenant,
									pg_uuid_t *agent, bool *has_agent, char **act_json);

#endif							/* AGENTIDP_AUTHZ_H */
