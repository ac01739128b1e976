/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  What other parts use of keys.c: tenants' active signing keys.
 *
 * IDENTIFICATION
 *	  src/keys.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_KEYS_H
#define AGENTIDP_KEYS_H

#include "utils/uuid.h"

#include "jose.h"

/* a signer for the tenant's active key; owned by a per-backend cache */
extern AgentidpSigner *agentidp_active_signer(const pg_uuid_t *tenant_id);

#endif							/* AGENTIDP_KEYS_H */
