/*-------------------------------------------------------------------------
 *
 * credentials.h
 *	  What other parts use of credentials.c: client authentication.
 *
 * IDENTIFICATION
 *	  src/credentials.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_CREDENTIALS_H
#define AGENTIDP_CREDENTIALS_H

#include "utils/uuid.h"

/*
 * True, with the agent and the secret's id (unless secret_id is NULL),
 * when secret is a current secret of client_id's
 * active agent of an active tenant; constant-time in the secret.  Runs in
 * the caller's SPI connection, as a role that may read secret hashes.
 */
extern bool agentidp_client_secret_matches(text *client_id, text *secret,
										   pg_uuid_t *agent_id, pg_uuid_t *secret_id);

/* the one 28000 error of every client authentication failure */
extern void agentidp_client_authentication_failed(void) pg_attribute_noreturn();

#endif							/* AGENTIDP_CREDENTIALS_H */
