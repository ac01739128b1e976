/*-------------------------------------------------------------------------
 *
 * policy.h
 *	  The policy hook (policy.c): a SQL function or an external policy
 *	  engine (OPA's Data API) decides each issuance and recorded action.
 *
 * IDENTIFICATION
 *	  src/policy.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_POLICY_H
#define AGENTIDP_POLICY_H

#include "postgres.h"

#include "utils/jsonb.h"

typedef enum AgentidpPolicyDecision
{
	AGENTIDP_POLICY_ALLOW,
	AGENTIDP_POLICY_DENY,
	AGENTIDP_POLICY_REQUIRE_APPROVAL
} AgentidpPolicyDecision;

extern char *agentidp_policy_function;
extern char *agentidp_policy_url;

/* define the GUCs (from _PG_init) */
extern void agentidp_policy_init(void);

/* whether a policy is configured: the one test of the no-policy path */
static inline bool
agentidp_policy_active(void)
{
	return (agentidp_policy_function != NULL && agentidp_policy_function[0] != '\0') ||
		(agentidp_policy_url != NULL && agentidp_policy_url[0] != '\0');
}

/*
 * Decide a request (request_input, a JSON object as text, to which the
 * request's "request" member, its client address and request id, is
 * added): the function first, then the URL when the function allowed.
 * *reason is the policy's reason (palloc'd), or NULL.  Engine failures
 * follow agentidp.policy_fail_open; a misconfigured function is an ERROR.
 */
extern AgentidpPolicyDecision agentidp_policy_decide(const char *request_input, char **reason);

#endif							/* AGENTIDP_POLICY_H */
