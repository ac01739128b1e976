/* agentidp--0.13--0.14.sql: an agent's limits in the admin API (docs/http.md, "Agents") */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.14'" to load this file. \quit

/*
 * An agent as the admin API shows it, now with its limits (0.9, 0.10):
 * what set_token_rate_limit and set_daily_caps set.  A NULL limit is no
 * limit of the agent's own (the token rate limit: its tenant's).
 */
CREATE OR REPLACE FUNCTION agentidp._admin_agent_json(a agentidp.agents) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('id', a.agent_id, 'client_id', a.client_id, 'name', a.name,
	'status', a.status, 'allowed_scopes', to_jsonb(a.allowed_scopes),
	'roles', to_jsonb(ARRAY(SELECT r.name FROM agentidp.agent_roles AS ar
		JOIN agentidp.roles AS r ON r.tenant_id = ar.tenant_id AND r.role_id = ar.role_id
		WHERE ar.tenant_id = a.tenant_id AND ar.agent_id = a.agent_id ORDER BY r.name)),
	'metadata', a.metadata,
	'limits', jsonb_build_object('token_rate_limit', a.token_rate_limit,
		'daily_action_cap', a.daily_action_cap, 'daily_spend_limit', a.daily_spend_limit,
		'spend_currency', COALESCE(a.spend_currency, 'USD')),
	'created_at', a.created_at, 'updated_at', a.updated_at,
	'suspended_at', a.suspended_at, 'deleted_at', a.deleted_at);

/*
 * The "limits" member of a POST or PATCH of an agent: any of
 * token_rate_limit (a string, or null: the tenant's), daily_action_cap
 * (an integer, or null: none), daily_spend_limit (a number, or null:
 * none) and spend_currency; what it does not name stays.  The checks of
 * values are set_token_rate_limit's and set_daily_caps's.
 */
CREATE FUNCTION agentidp._admin_set_limits(a agentidp.agents, limits jsonb) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(jsonb_typeof(limits) = 'object', '22023', '"limits" must be a JSON object');
	PERFORM agentidp._admin_members(limits, '{token_rate_limit,daily_action_cap,daily_spend_limit,spend_currency}',
		'limit');
	PERFORM agentidp._require(jsonb_typeof(limits -> 'token_rate_limit') IN ('string', 'null')
		OR NOT limits ? 'token_rate_limit', '22023', '"token_rate_limit" must be a string or null');
	PERFORM agentidp._require(NOT limits ? 'daily_action_cap' OR jsonb_typeof(limits -> 'daily_action_cap') = 'null'
		OR (jsonb_typeof(limits -> 'daily_action_cap') = 'number'
			AND (limits ->> 'daily_action_cap') ~ '^-?[0-9]{1,9}$'), '22023',
		'"daily_action_cap" must be an integer or null');
	PERFORM agentidp._require(jsonb_typeof(limits -> 'daily_spend_limit') IN ('number', 'null')
		OR NOT limits ? 'daily_spend_limit', '22023', '"daily_spend_limit" must be a number or null');
	PERFORM agentidp._admin_string(limits, 'spend_currency');

	IF limits ? 'token_rate_limit' THEN
		PERFORM agentidp.set_token_rate_limit(a.agent_id, limits ->> 'token_rate_limit');
	END IF;
	IF limits ?| ARRAY['daily_action_cap', 'daily_spend_limit', 'spend_currency'] THEN
		PERFORM agentidp.set_daily_caps(a.agent_id,
			CASE WHEN limits ? 'daily_action_cap' THEN (limits ->> 'daily_action_cap')::integer
				 ELSE a.daily_action_cap END,
			CASE WHEN limits ? 'daily_spend_limit' THEN (limits ->> 'daily_spend_limit')::numeric
				 ELSE a.daily_spend_limit END,
			CASE WHEN limits ? 'spend_currency' THEN limits ->> 'spend_currency'
				 ELSE COALESCE(a.spend_currency, 'USD') END);
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._admin_set_limits(agentidp.agents, jsonb) IS
'sets the limits an admin API request names for an agent (token rate limit, daily caps)';

/*
 * /agents and /agents/{id} as in 0.8 (now _admin_agents_core), and the
 * "limits" member of POST and PATCH: the core does the rest of the
 * request, then the limits are set and the agent shown again.  The whole
 * request is one subtransaction of admin_api: a refused limit undoes
 * the agent it created or the changes it made.
 */
ALTER FUNCTION agentidp._admin_agents(uuid, text, text, jsonb, jsonb) RENAME TO _admin_agents_core;
COMMENT ON FUNCTION agentidp._admin_agents_core(uuid, text, text, jsonb, jsonb) IS
'the admin API''s /agents and /agents/{id} for a tenant, without the limits of an agent (0.8)';

CREATE FUNCTION agentidp._admin_agents(tenant uuid, method text, id text, query jsonb, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r jsonb;
	a agentidp.agents;
BEGIN
	-- the core's own check would not name "limits" in its hint
	IF method IN ('POST', 'PATCH') AND body IS NOT NULL THEN
		PERFORM agentidp._admin_members(body, CASE WHEN id IS NULL THEN '{name,allowed_scopes,metadata,limits}'
												   ELSE '{status,allowed_scopes,metadata,limits}' END::text[],
			'member');
	END IF;
	IF method NOT IN ('POST', 'PATCH') OR body IS NULL OR NOT body ? 'limits' THEN
		RETURN agentidp._admin_agents_core(tenant, method, id, query, body);
	END IF;
	r := agentidp._admin_agents_core(tenant, method, id, query, body - 'limits');
	a := agentidp._admin_agent(tenant, COALESCE(id, r #>> '{body,id}'), true);
	PERFORM agentidp._admin_set_limits(a, body -> 'limits');
	RETURN jsonb_set(r, '{body}', agentidp._admin_agent_json(agentidp._admin_agent(tenant, a.agent_id::text, false)));
END
$$;
COMMENT ON FUNCTION agentidp._admin_agents(uuid, text, text, jsonb, jsonb) IS
'the admin API''s /agents and /agents/{id} for a tenant, with the limits of an agent';

REVOKE ALL ON FUNCTION agentidp._admin_set_limits(agentidp.agents, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentidp._admin_agents(uuid, text, text, jsonb, jsonb) FROM PUBLIC;
