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

#include "jwk.h"

/* the tenant's active key, decrypted; owned by a per-backend cache */
extern AgentidpJwk *agentidp_active_key(const pg_uuid_t *tenant_id);

#endif							/* AGENTIDP_KEYS_H */
