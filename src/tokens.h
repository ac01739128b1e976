/*-------------------------------------------------------------------------
 *
 * tokens.h
 *	  What other parts use of tokens.c: verified access tokens.
 *
 * IDENTIFICATION
 *	  src/tokens.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_TOKENS_H
#define AGENTIDP_TOKENS_H

#include "utils/jsonb.h"

/* the claims of a valid (bearer) access token, else 28000 naming why */
extern Jsonb *agentidp_token_claims(text *token, text *audience);

/* the claims of a DPoP-bound access token with a valid proof, else 28000 */
extern Jsonb *agentidp_dpop_token_claims(text *token, text *proof, text *htm,
										 text *htu, text *audience);

/* the payload of a parsed JWS that a public JWK verifies, else 28000 */
struct AgentidpJws;
extern Jsonb *agentidp_verify_with_public_jwk(struct AgentidpJws *jws, Jsonb *jwk);

#endif							/* AGENTIDP_TOKENS_H */
