/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  What other parts use of keys.c: tenants' active signing keys, and
 *	  the sealing of other secrets under the key-encryption key.
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

/*
 * Seal a secret under the first KEK, bound to the tenant and a label that
 * names its row; open it again with the KEK it names.  what names the
 * kind of secret in error messages.
 */
extern bytea *agentidp_seal_secret(const pg_uuid_t *tenant_id, const char *label,
								   const char *what, const unsigned char *plain,
								   int plainlen, char **kek_id);
extern char *agentidp_open_secret(const pg_uuid_t *tenant_id, const char *label,
								  const char *what, const char *kek_id,
								  const bytea *sealed, int *plainlen);

#endif							/* AGENTIDP_KEYS_H */
