/*-------------------------------------------------------------------------
 *
 * token_state.h
 *	  What verifying an access token reads about it, every time
 *	  (token_state.c).
 *
 * IDENTIFICATION
 *	  src/token_state.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_TOKEN_STATE_H
#define AGENTIDP_TOKEN_STATE_H

#include "utils/uuid.h"

typedef struct TokenState
{
	bool		tenant_found;
	char	   *issuer;
	char	   *tenant_status;
	char	   *default_audience;	/* the "audience" setting, else the issuer */
	bool		agent_found;
	char	   *agent_status;
	bool		revoked;		/* the jti is in revoked_tokens */
	bool		key_exists;		/* the signing key (kid) is still the tenant's */
	bool		cred_active;	/* the credential (cred claim) is unrevoked, or none named */
} TokenState;

/* as the extension owner, with the statement's snapshot */
extern void agentidp_token_state(const pg_uuid_t *tenant, const pg_uuid_t *agent,
								 const char *jti, const char *kid, const char *cred,
								 TokenState *st);

#endif							/* AGENTIDP_TOKEN_STATE_H */
