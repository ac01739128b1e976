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
DECLARE
	wanted text[] := string_to_array(COALESCE(scope, ''), ' ');
	a agentidp.approvals;
	id uuid;
BEGIN
	IF approval IS NULL OR approval = '' THEN
		RAISE EXCEPTION 'invalid_scope: approval required by policy for scope "%"', COALESCE(scope, '')
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('The policy says: %s.', COALESCE(reason, 'approval required')),
				  HINT = 'Call agentidp.request_approval(action, scope => ...), have it approved, and pass its id as approval_id in the token request.';
	END IF;
	BEGIN
		id := approval::uuid;
	EXCEPTION WHEN invalid_text_representation THEN
		id := NULL;
	END;
	SELECT * INTO a FROM agentidp.approvals AS x
		WHERE x.tenant_id = tenant AND x.approval_id = id AND x.agent_id = agent
		FOR UPDATE;
	IF NOT FOUND OR (a.token_jti IS NOT NULL AND a.token_jti <> jti)
		OR NOT (wanted <@ string_to_array(COALESCE(a.scope, ''), ' '))
		OR NOT (a.status = 'consumed' OR (a.status = 'approved' AND a.expires_at > now())) THEN
		RAISE EXCEPTION 'invalid_scope: approval required by policy for scope "%"', COALESCE(scope, '')
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Approval "%s" is not an approved, unused approval of this agent for these scopes.',
								  left(approval, 64)),
				  HINT = 'An approval serves one token: request and have approved a new one.';
	END IF;
	UPDATE agentidp.approvals AS x
		SET status = 'consumed', consumed_at = COALESCE(x.consumed_at, now()), token_jti = jti
		WHERE x.tenant_id = a.tenant_id AND x.approval_id = a.approval_id;
END
$$;
COMMENT ON FUNCTION agentidp._policy_step_up(uuid, uuid, text, text, text, text) IS
'refuses a token the policy requires an approval for without an approved, unused approval of the agent covering its scope, and binds the approval to the token';

/*
 * The grants of the token endpoint as in 0.9, and a policy's deny: OAuth
 * error unauthorized_client (RFC 6749 section 5.2: the client may not
 * use this grant for this request), status 400, audited like every
 * refusal.
 */
CREATE OR REPLACE FUNCTION agentidp._token_grant(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g text := request ->> 'grant_type';
	r jsonb;
	state text;
	msg text;
	err text;
	status int;
BEGIN
	PERFORM agentidp._require(request IS NOT NULL AND jsonb_typeof(request) = 'object', '22023',
		'the request must be a JSON object of the form parameters');
	BEGIN
		IF g = 'client_credentials' AND request ? 'client_assertion' THEN
			PERFORM agentidp._require(request ->> 'client_assertion_type' IS NOT DISTINCT FROM
				'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', '22023',
				'invalid_request: client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
			r := agentidp.issue_token_jwt(request ->> 'client_assertion', request ->> 'scope',
										  request ->> 'audience');
		ELSIF g = 'client_credentials' THEN
			r := agentidp.issue_token(request ->> 'client_id', request ->> 'client_secret',
									  request ->> 'scope', request ->> 'audience',
									  request ->> 'dpop', request ->> 'htm', request ->> 'htu');
		ELSIF g = 'refresh_token' THEN
			r := agentidp.refresh_token(request ->> 'refresh_token', request ->> 'client_id',
										request ->> 'client_secret', request ->> 'dpop',
										request ->> 'htm', request ->> 'htu');
		ELSIF g = 'urn:ietf:params:oauth:grant-type:token-exchange' THEN
			r := agentidp.exchange_token(request ->> 'subject_token', request ->> 'actor_token',
										 request ->> 'scope', request ->> 'audience');
		ELSE
			r := jsonb_build_object('error', CASE WHEN g IS NULL THEN 'invalid_request' ELSE 'unsupported_grant_type' END,
				'error_description', CASE WHEN g IS NULL THEN 'grant_type is missing'
									 ELSE 'grant_type is not supported' END);
		END IF;
	EXCEPTION
		WHEN invalid_authorization_specification OR invalid_password OR insufficient_privilege
			OR invalid_parameter_value OR null_value_not_allowed OR invalid_text_representation
			OR configuration_limit_exceeded THEN
		GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		err := CASE
			WHEN state = '53400' THEN 'temporarily_unavailable'
			WHEN msg = 'client authentication failed' THEN 'invalid_client'
			WHEN msg LIKE 'invalid DPoP proof%' THEN 'invalid_dpop_proof'
			WHEN msg LIKE 'invalid_scope%' THEN 'invalid_scope'
			WHEN msg LIKE 'invalid_target%' THEN 'invalid_target'
			WHEN msg LIKE 'unauthorized_client%' THEN 'unauthorized_client'
			-- RFC 8693 2.2.2: an invalid subject or actor token is invalid_request
			WHEN g = 'urn:ietf:params:oauth:grant-type:token-exchange' THEN 'invalid_request'
			WHEN state IN ('28000', '28P01') THEN 'invalid_grant'
			ELSE 'invalid_request' END;
		status := CASE
			WHEN err = 'invalid_client' THEN 401
			WHEN state = '53400' AND msg = 'rate limit could not be checked' THEN 503
			WHEN state = '53400' THEN 429
			ELSE 400 END;
		PERFORM agentidp._audit_refusal(request ->> 'client_id', g, err, msg);
		RETURN jsonb_build_object('status', status,
			'body', jsonb_build_object('error', err, 'error_description', msg));
	END;
	IF r ? 'error' THEN
		RETURN jsonb_build_object('status', 400, 'body', r);
	END IF;
	RETURN jsonb_build_object('status', 200, 'body', r);
END
$$;


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
	tenant uuid := agentidp.current_tenant();
	agent uuid := agentidp.current_agent();
	a record;
	today date := (now() AT TIME ZONE 'UTC')::date;
	n_actions bigint;
	n_spent numeric;
	r record;
	over_msg text;
	over_detail text;
	over_hint text;
	approval uuid;
	pol jsonb;
	policy_approved boolean := false;
BEGIN
	PERFORM agentidp._require(tenant IS NOT NULL AND agent IS NOT NULL, '28000',
		'no agent identity', 'Actions are recorded for the agent of the transaction''s access token.',
		'Call agentidp.authenticate() with the agent''s access token in the same transaction first.');
	PERFORM agentidp._require(action IS NOT NULL AND action ~ '^[[:print:]]{1,128}$', '22023',
		'invalid action name', hint => 'An action name is 1 to 128 printable characters, such as "payment.send".');
	PERFORM agentidp._require(amount IS NOT NULL AND amount >= 0, '22023',
		format('invalid amount %s', amount), hint => 'An amount is a number from 0.');
	PERFORM agentidp._require(currency IS NOT NULL AND currency ~ '^[A-Z]{3}$', '22023',
		format('invalid currency "%s"', left(currency, 16)),
		hint => 'A currency is an ISO 4217 code of three capital letters, such as "USD" or "EUR".');
	PERFORM agentidp._require(detail IS NOT NULL AND jsonb_typeof(detail) = 'object'
		AND octet_length(detail::text) <= 4096, '22023', 'detail must be a JSON object of at most 4096 bytes');

	SELECT x.status, x.daily_action_cap, x.daily_spend_limit,
		   COALESCE(x.spend_currency, 'USD') AS spend_currency INTO a
		FROM agentidp.agents AS x WHERE x.tenant_id = tenant AND x.agent_id = agent;
	PERFORM agentidp._require(FOUND AND a.status = 'active', '28000', 'agent is not active',
		format('Agent "%s" is suspended, deleted or unknown.', agent));

	-- the policy hook (agentidp.policy_function / policy_url); NULL: none configured
	pol := agentidp._policy_decide(jsonb_build_object('kind', 'action', 'tenant_id', tenant,
		'agent_id', agent, 'action', action, 'amount', amount, 'currency', currency,
		'detail', detail));
	IF pol ->> 'decision' = 'deny' THEN
		RAISE EXCEPTION 'action denied by policy'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('The policy says: %s.', COALESCE(pol ->> 'reason', 'no reason given'));
	ELSIF pol ->> 'decision' = 'require_approval' THEN
		-- an approval granted for this very action lets it through, once
		IF detail ? 'approval_id' THEN
			BEGIN
				approval := (detail ->> 'approval_id')::uuid;
			EXCEPTION WHEN invalid_text_representation THEN
				approval := NULL;
			END;
			UPDATE agentidp.approvals AS x SET status = 'consumed', consumed_at = now()
				WHERE x.tenant_id = tenant AND x.approval_id = approval AND x.agent_id = agent
				  AND x.status = 'approved' AND x.expires_at > now() AND x.scope IS NULL
				  AND x.action = record_action.action AND x.currency = record_action.currency
				  AND x.amount >= record_action.amount;
			policy_approved := FOUND;
		END IF;
		IF NOT policy_approved THEN
			approval := agentidp._new_approval(tenant, agent, action, NULL, amount, currency,
				'policy: ' || COALESCE(pol ->> 'reason', 'approval required'), 'high', interval '1 hour');
			RETURN jsonb_build_object('status', 'pending', 'approval_id', approval, 'action', action,
									  'amount', amount, 'currency', currency,
									  'reason', COALESCE(pol ->> 'reason', 'approval required by policy'));
		END IF;
	END IF;

	IF a.daily_action_cap IS NOT NULL
		OR (a.daily_spend_limit IS NOT NULL AND currency = a.spend_currency) THEN
		PERFORM FROM agentidp.agents AS x WHERE x.tenant_id = tenant AND x.agent_id = agent
			FOR NO KEY UPDATE;
		SELECT COALESCE(sum(u.actions), 0),
			   COALESCE(sum(u.spent) FILTER (WHERE u.currency = a.spend_currency), 0)
			INTO n_actions, n_spent
			FROM agentidp.agent_daily_usage AS u
			WHERE u.tenant_id = tenant AND u.agent_id = agent AND u.day = today;
		IF n_actions >= a.daily_action_cap THEN
			over_msg := 'daily action cap of agent exceeded';
			over_detail := format('The cap is %s actions a day; %s were recorded today (UTC).',
								  a.daily_action_cap, n_actions);
			over_hint := 'The cap resets at midnight UTC; an administrator of the tenant can raise it with agentidp.set_daily_caps().';
		ELSIF currency = a.spend_currency AND n_spent + amount > a.daily_spend_limit THEN
			over_msg := 'daily spend limit of agent exceeded';
			over_detail := format('The limit is %s %s a day; %s %s were spent today (UTC) and %s %s more were asked.',
								  a.daily_spend_limit, currency, n_spent, currency, amount, currency);
			over_hint := 'The limit resets at midnight UTC; an administrator of the tenant can raise it with agentidp.set_daily_caps().';
		END IF;
	END IF;

	IF over_msg IS NOT NULL AND policy_approved THEN
		-- the approval the policy asked for was consumed above: it covers the cap too
		over_msg := NULL;
	ELSIF over_msg IS NOT NULL AND detail ? 'approval_id' THEN
		-- an approval granted for this very action lets it past the cap, once
		BEGIN
			approval := (detail ->> 'approval_id')::uuid;
		EXCEPTION WHEN invalid_text_representation THEN
			approval := NULL;
		END;
		UPDATE agentidp.approvals AS x SET status = 'consumed', consumed_at = now()
			WHERE x.tenant_id = tenant AND x.approval_id = approval AND x.agent_id = agent
			  AND x.status = 'approved' AND x.expires_at > now() AND x.scope IS NULL
			  AND x.action = record_action.action AND x.currency = record_action.currency
			  AND x.amount >= record_action.amount;
		IF FOUND THEN
			over_msg := NULL;
		ELSE
			over_hint := 'The approval must be approved, unexpired, unused and for this action, currency and at least this amount.';
		END IF;
	ELSIF over_msg IS NOT NULL
		AND (SELECT t.settings -> 'over_cap' FROM agentidp.tenants AS t WHERE t.tenant_id = tenant)
			= '"approval"' THEN
		approval := agentidp._new_approval(tenant, agent, action, NULL, amount, currency,
										   over_msg || ': ' || over_detail, 'high', interval '1 hour');
		RETURN jsonb_build_object('status', 'pending', 'approval_id', approval, 'action', action,
								  'amount', amount, 'currency', currency, 'reason', over_msg);
	END IF;
	IF over_msg IS NOT NULL THEN
		RAISE EXCEPTION '%', over_msg
			USING ERRCODE = 'configuration_limit_exceeded', DETAIL = over_detail, HINT = over_hint;
	END IF;

	INSERT INTO agentidp.agent_daily_usage AS u
		(tenant_id, agent_id, day, currency, actions, spent, last_action, last_amount, last_detail)
	VALUES (tenant, agent, today, currency, 1, amount, action, amount, detail)
	ON CONFLICT ON CONSTRAINT agent_daily_usage_pkey DO UPDATE
		SET actions = u.actions + 1, spent = u.spent + excluded.spent,
			last_action = excluded.last_action, last_amount = excluded.last_amount,
			last_detail = excluded.last_detail
	RETURNING u.actions, u.spent INTO r;

	-- what the caller sees counts every currency's actions, as the cap does
	SELECT COALESCE(sum(u.actions), 0) INTO n_actions FROM agentidp.agent_daily_usage AS u
		WHERE u.tenant_id = tenant AND u.agent_id = agent AND u.day = today;
	RETURN jsonb_build_object(
		'status', 'recorded',
		'action', action,
		'amount', amount,
		'currency', currency,
		'day', today,
		'actions_today', n_actions,
		'action_cap', a.daily_action_cap,
		'spent_today', r.spent,
		'spend_limit', CASE WHEN currency = a.spend_currency THEN a.daily_spend_limit END);
END
$$;
COMMENT ON FUNCTION agentidp.record_action(text, numeric, text, jsonb) IS
'records an action of the current agent and what it spent, as the policy hook decides; past a daily cap refused with 53400, or pending an approval when the tenant''s over_cap is "approval"';

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON FUNCTION agentidp._policy_decide(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentidp._policy_step_up(uuid, uuid, text, text, text, text) FROM PUBLIC;
