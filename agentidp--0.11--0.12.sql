/* agentidp--0.11--0.12.sql: the policy hook (docs/limits.md, "Policy hook") */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.12'" to load this file. \quit

/*
 * The decision of the configured policy (agentidp.policy_function, then
 * agentidp.policy_url) on a request: {"decision": "allow" | "deny" |
 * "require_approval", "reason": text or null}, or NULL when no policy is
 * configured.  A failing engine decides as agentidp.policy_fail_open says.
 * Called by record_action (SECURITY DEFINER); no other role may call it.
 */
CREATE FUNCTION agentidp._policy_decide(input jsonb) RETURNS jsonb
AS 'MODULE_PATHNAME', 'agentidp__policy_decide'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION agentidp._policy_decide(jsonb) IS
'the decision of agentidp.policy_function / agentidp.policy_url on a request, or NULL when no policy is configured';

/*
 * Step-up asked by the policy (require_approval) on an issuance: as
 * _step_up for risky scopes, but for the whole requested scope.  The
 * request must name (agentidp.approval_id, from the token request's
 * approval_id) an approval of this agent whose scope covers every scope
 * asked for, approved or consumed, unexpired when approved, and not yet
 * used for a token; it is bound to the token's jti, so it serves once.
 */
CREATE FUNCTION agentidp._policy_step_up(tenant uuid, agent uuid, scope text, jti text,
										 approval text, reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._bind_step_up_approval(tenant, agent, jti, approval,
		string_to_array(COALESCE(scope, ''), ' '),
		format('invalid_scope: approval required by policy for scope "%s"', COALESCE(scope, '')),
		format('The policy says: %s.', COALESCE(reason, 'approval required')));
END
$$;
COMMENT ON FUNCTION agentidp._policy_step_up(uuid, uuid, text, text, text, text) IS
'refuses a token the policy requires an approval for without an approved, unused approval of the agent covering its scope, and binds the approval to the token';

/*
 * record_action as in 0.11, and the policy hook after the checks of its
 * arguments and agent: deny refuses with 42501; require_approval requests
 * an approval ({"status": "pending", ...}) unless detail's approval_id
 * names an approved approval of this agent for this action, currency and
 * at least this amount, which it consumes (and which lets the action past
 * a daily cap too).  The caps apply after an allow.
 */
CREATE OR REPLACE FUNCTION agentidp.record_action(action text, amount numeric DEFAULT 0,
												  currency text DEFAULT 'USD', detail jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a record := agentidp._action_agent(action, amount, currency, detail);
	refusal record;
	pol jsonb;
	policy_approved boolean := false;
BEGIN
	-- the policy hook (agentidp.policy_function / policy_url); NULL: none configured
	pol := agentidp._policy_decide(jsonb_build_object('kind', 'action', 'tenant_id', a.tenant,
		'agent_id', a.agent, 'action', action, 'amount', amount, 'currency', currency,
		'detail', detail));
	IF pol ->> 'decision' = 'deny' THEN
		RAISE EXCEPTION 'action denied by policy'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('The policy says: %s.', COALESCE(pol ->> 'reason', 'no reason given'));
	ELSIF pol ->> 'decision' = 'require_approval' THEN
		-- an approval granted for this very action lets it through, once
		policy_approved := agentidp._consume_action_approval(a, action, amount, currency, detail);
		IF NOT policy_approved THEN
			RETURN agentidp._action_pending(a, action, amount, currency,
				'policy: ' || COALESCE(pol ->> 'reason', 'approval required'),
				COALESCE(pol ->> 'reason', 'approval required by policy'));
		END IF;
	END IF;

	-- checked when approved too: with a cap, its lock orders this action's count with the others'
	refusal := agentidp._action_over_cap(a, amount, currency);
	-- the approval the policy asked for, consumed above, covers the cap too
	IF refusal.msg IS NULL OR policy_approved THEN
		RETURN agentidp._action_count(a, action, amount, currency, detail);
	END IF;
	RETURN agentidp._action_past_cap(a, refusal, action, amount, currency, detail);
END
$$;
COMMENT ON FUNCTION agentidp.record_action(text, numeric, text, jsonb) IS
'records an action of the current agent and what it spent, as the policy hook decides; past a daily cap refused with 53400, or pending an approval when the tenant''s over_cap is "approval"';

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON FUNCTION agentidp._policy_decide(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentidp._policy_step_up(uuid, uuid, text, text, text, text) FROM PUBLIC;
