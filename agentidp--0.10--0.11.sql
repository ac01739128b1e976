/* agentidp--0.10--0.11.sql: approvals and step-up for risky scopes (docs/limits.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.11'" to load this file. \quit

/*
 * A tenant's approval settings: settings."risky_scopes", an array of at
 * most 100 scope names whose tokens need an approval (step-up), and
 * settings."over_cap", "refuse" (the default, also when absent) or
 * "approval": what record_action does past a daily cap.
 */
CREATE FUNCTION agentidp._valid_approval_settings(settings jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (NOT (settings ? 'risky_scopes')
		OR (pg_catalog.jsonb_typeof(settings -> 'risky_scopes') OPERATOR(pg_catalog.=) 'array'
			AND pg_catalog.jsonb_array_length(settings -> 'risky_scopes') OPERATOR(pg_catalog.<=) 100
			AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(settings -> 'risky_scopes') AS e
							WHERE pg_catalog.jsonb_typeof(e) OPERATOR(pg_catalog.<>) 'string'
							   OR NOT ((e OPERATOR(pg_catalog.#>>) '{}') OPERATOR(pg_catalog.~) '^[!#-\[\]-~]{1,128}$'))))
	AND (NOT (settings ? 'over_cap')
		 OR settings -> 'over_cap' OPERATOR(pg_catalog.=) ANY (ARRAY['"refuse"', '"approval"']::jsonb[]));
COMMENT ON FUNCTION agentidp._valid_approval_settings(jsonb) IS
'true when a tenant''s settings have no risky_scopes or an array of at most 100 scope names, and no over_cap or one of "refuse", "approval"';
ALTER TABLE agentidp.tenants ADD CONSTRAINT tenants_approval_settings_valid
	CHECK (agentidp._valid_approval_settings(settings));

/*
 * Approval requests.  risk: low, medium, high, critical (informational:
 * every tier needs one decision).  scope: set for a token step-up, the
 * space-separated risky scopes the token may then carry.  status moves
 * pending -> approved | denied | expired, approved -> consumed (once),
 * and token_jti records the one token an approval was used for.
 */
CREATE TABLE agentidp.approvals (
	tenant_id	uuid NOT NULL,
	approval_id	uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	agent_id	uuid NOT NULL,
	action		text NOT NULL CONSTRAINT approvals_action_valid
				CHECK (action OPERATOR(pg_catalog.~) '^[[:print:]]{1,128}$'),
	amount		numeric NOT NULL DEFAULT 0 CONSTRAINT approvals_amount_valid CHECK (amount >= 0),
	currency	text NOT NULL DEFAULT 'USD' CONSTRAINT approvals_currency_valid
				CHECK (currency OPERATOR(pg_catalog.~) '^[A-Z]{3}$'),
	reason		text CONSTRAINT approvals_reason_valid
				CHECK (pg_catalog.length(reason) OPERATOR(pg_catalog.<=) 1024),
	risk		text NOT NULL DEFAULT 'high' CONSTRAINT approvals_risk_valid
				CHECK (risk OPERATOR(pg_catalog.=) ANY (ARRAY['low', 'medium', 'high', 'critical'])),
	scope		text CONSTRAINT approvals_scope_valid
				CHECK (scope OPERATOR(pg_catalog.~) '^[!#-\[\]-~]{1,128}( [!#-\[\]-~]{1,128}){0,19}$'),
	status		text NOT NULL DEFAULT 'pending' CONSTRAINT approvals_status_valid
				CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'approved', 'denied', 'consumed', 'expired'])),
	requested_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	expires_at	timestamptz NOT NULL,
	decided_by	text,
	decided_at	timestamptz,
	memo		text CONSTRAINT approvals_memo_valid
				CHECK (pg_catalog.length(memo) OPERATOR(pg_catalog.<=) 1024),
	consumed_at	timestamptz,
	token_jti	text,
	CONSTRAINT approvals_pkey PRIMARY KEY (tenant_id, approval_id),
	CONSTRAINT approvals_agent_fkey FOREIGN KEY (tenant_id, agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id) ON DELETE CASCADE
);
CREATE INDEX approvals_agent_idx ON agentidp.approvals (tenant_id, agent_id, status);
COMMENT ON TABLE agentidp.approvals IS
'approval requests of agents: over-cap actions, risky actions and token step-ups, decided once and consumed once';

ALTER TABLE agentidp.approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.approvals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.approvals TO agentidp_admin
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));
-- an agent sees its own requests, an approver agent those of its tenant
CREATE POLICY agent_read ON agentidp.approvals FOR SELECT TO agentidp_agent
	USING (tenant_id OPERATOR(pg_catalog.=) (SELECT agentidp.current_tenant())
		   AND (agent_id OPERATOR(pg_catalog.=) (SELECT agentidp.current_agent())
				OR (SELECT agentidp.has_scope('agentidp:approve'))));
CREATE TRIGGER agentidp_audit AFTER INSERT OR UPDATE OR DELETE ON agentidp.approvals
	FOR EACH ROW EXECUTE FUNCTION agentidp.audit_trigger();
CREATE TRIGGER agentidp_audit_truncate BEFORE TRUNCATE ON agentidp.approvals
	FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audited_truncate_refused();
SELECT pg_catalog.pg_extension_config_dump('agentidp.approvals', '');

/* approval.decided exists from now on */
CREATE OR REPLACE FUNCTION agentidp._webhook_event_types() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY['agent.created', 'agent.suspended', 'agent.deleted', 'credential.created',
			 'credential.revoked', 'token.reuse_detected', 'approval.requested',
			 'approval.decided', 'audit.chain_broken']::text[];

/*
 * The approval events, from a trigger so that every path that requests or
 * decides (the functions below, an administrator's UPDATE) queues them in
 * its own transaction.  SECURITY DEFINER: the queue is not the writer's.
 */
CREATE FUNCTION agentidp._approval_event_trigger() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		PERFORM agentidp._enqueue_event(NEW.tenant_id, 'approval.requested',
			jsonb_build_object('approval_id', NEW.approval_id, 'agent_id', NEW.agent_id,
							   'action', NEW.action, 'amount', NEW.amount, 'currency', NEW.currency,
							   'scope', NEW.scope, 'risk', NEW.risk, 'reason', NEW.reason,
							   'expires_at', NEW.expires_at));
	ELSIF OLD.status = 'pending' AND NEW.status IN ('approved', 'denied') THEN
		PERFORM agentidp._enqueue_event(NEW.tenant_id, 'approval.decided',
			jsonb_build_object('approval_id', NEW.approval_id, 'agent_id', NEW.agent_id,
							   'action', NEW.action, 'scope', NEW.scope, 'status', NEW.status,
							   'decided_by', NEW.decided_by, 'memo', NEW.memo));
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION agentidp._approval_event_trigger() IS
'queues approval.requested when an approval is requested and approval.decided when it is approved or denied';
CREATE TRIGGER agentidp_webhook AFTER INSERT OR UPDATE OF status ON agentidp.approvals
	FOR EACH ROW EXECUTE FUNCTION agentidp._approval_event_trigger();

/* the insert behind request_approval and the over-cap path of record_action */
CREATE FUNCTION agentidp._new_approval(tenant uuid, agent uuid, action text, scope text, amount numeric,
									   currency text, reason text, risk text, ttl interval)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id uuid;
BEGIN
	PERFORM agentidp._require(action IS NOT NULL AND action ~ '^[[:print:]]{1,128}$', '22023',
		'invalid action name', hint => 'An action name is 1 to 128 printable characters, such as "payment.send".');
	PERFORM agentidp._require(scope IS NULL OR scope ~ '^[!#-\[\]-~]{1,128}( [!#-\[\]-~]{1,128}){0,19}$', '22023',
		'invalid scope', hint => 'A scope is up to 20 space-separated scope names, such as "payments:write".');
	PERFORM agentidp._require(amount IS NOT NULL AND amount >= 0, '22023',
		format('invalid amount %s', amount), hint => 'An amount is a number from 0.');
	PERFORM agentidp._require(currency IS NOT NULL AND currency ~ '^[A-Z]{3}$', '22023',
		format('invalid currency "%s"', left(currency, 16)),
		hint => 'A currency is an ISO 4217 code of three capital letters, such as "USD" or "EUR".');
	PERFORM agentidp._require(reason IS NULL OR length(reason) <= 1024, '22023',
		'reason must be at most 1024 characters');
	PERFORM agentidp._require(risk IN ('low', 'medium', 'high', 'critical'), '22023',
		format('invalid risk tier "%s"', left(risk, 16)),
		hint => 'A risk tier is one of "low", "medium", "high", "critical".');
	PERFORM agentidp._require(ttl > interval '0' AND ttl <= interval '7 days', '22023',
		format('invalid approval lifetime %s', ttl),
		hint => 'An approval lives from a second to 7 days.');
	INSERT INTO agentidp.approvals AS x (tenant_id, agent_id, action, scope, amount, currency,
										 reason, risk, expires_at)
	VALUES (tenant, agent, action, scope, amount, currency, reason, risk, now() + ttl)
	RETURNING x.approval_id INTO id;
	RETURN id;
END
$$;
COMMENT ON FUNCTION agentidp._new_approval(uuid, uuid, text, text, numeric, text, text, text, interval) IS
'inserts a pending approval request after checking its arguments';

/* the current agent, active, or 28000 */
CREATE FUNCTION agentidp._approval_agent() RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tenant uuid := agentidp.current_tenant();
	agent uuid := agentidp.current_agent();
BEGIN
	PERFORM agentidp._require(tenant IS NOT NULL AND agent IS NOT NULL, '28000',
		'no agent identity', 'Approvals are requested and consumed by the agent of the transaction''s access token.',
		'Call agentidp.authenticate() with the agent''s access token in the same transaction first.');
	PERFORM agentidp._require(EXISTS (SELECT FROM agentidp.agents AS x
		WHERE x.tenant_id = tenant AND x.agent_id = agent AND x.status = 'active'), '28000',
		'agent is not active', format('Agent "%s" is suspended, deleted or unknown.', agent));
	RETURN agent;
END
$$;
COMMENT ON FUNCTION agentidp._approval_agent() IS
'the agent of the transaction''s identity, refused with 28000 when there is none or it is not active';

/*
 * SECURITY DEFINER: an agent writes no table directly; it may only ask
 * for itself (the identity authenticate() gave the transaction).
 */
CREATE FUNCTION agentidp.request_approval(action text, scope text DEFAULT NULL, amount numeric DEFAULT 0,
										  currency text DEFAULT 'USD', reason text DEFAULT NULL,
										  risk text DEFAULT 'high', ttl interval DEFAULT '1 hour')
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	agent uuid := agentidp._approval_agent();
BEGIN
	RETURN agentidp._new_approval(agentidp.current_tenant(), agent, action, scope, amount, currency,
								  reason, risk, ttl);
END
$$;
COMMENT ON FUNCTION agentidp.request_approval(text, text, numeric, text, text, text, interval) IS
'asks for an approval of an action (or, with scope, of a token for risky scopes) for the current agent; returns its id';

/*
 * The decision, as whoever runs it: an administrator of the tenant
 * (RLS shows only its tenants' approvals) or, through
 * _decide_approval_as_agent, the extension's owner for an approver agent.
 * The row lock makes concurrent decisions wait for each other; the
 * status is checked after it.
 */
CREATE FUNCTION agentidp._decide_approval(approval_id uuid, approve boolean, memo text, decider text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.approvals;
	tenant uuid := agentidp.current_tenant();
	agent uuid := agentidp.current_agent();
BEGIN
	PERFORM agentidp._require(approval_id IS NOT NULL, '22004', 'approval_id must not be null');
	PERFORM agentidp._require(approve IS NOT NULL, '22004', 'approve must not be null');
	PERFORM agentidp._require(memo IS NULL OR length(memo) <= 1024, '22023', 'memo must be at most 1024 characters');
	SELECT * INTO a FROM agentidp.approvals AS x
		WHERE x.approval_id = _decide_approval.approval_id
		  AND (agent IS NULL OR x.tenant_id = tenant)
		FOR UPDATE;
	PERFORM agentidp._require(FOUND, '42704', 'approval does not exist',
		format('No approval "%s" is visible to the caller.', approval_id));
	IF agent IS NOT NULL AND a.agent_id = agent THEN
		RAISE EXCEPTION 'an agent cannot decide its own approval request'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Approval "%s" was requested by agent "%s".', a.approval_id, a.agent_id),
				  HINT = 'Another agent holding the agentidp:approve scope, or an administrator of the tenant, decides it.';
	END IF;
	PERFORM agentidp._require(a.status = 'pending', '55000',
		'approval is not pending', format('Approval "%s" is %s.', a.approval_id, a.status));
	PERFORM agentidp._require(a.expires_at > now(), '55000',
		'approval has expired',
		format('Approval "%s" expired at %s.', a.approval_id, to_char(a.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')), 'The agent can request a new approval.');
	UPDATE agentidp.approvals AS x
		SET status = CASE WHEN approve THEN 'approved' ELSE 'denied' END,
			decided_by = decider, decided_at = now(), memo = _decide_approval.memo
		WHERE x.tenant_id = a.tenant_id AND x.approval_id = a.approval_id
		RETURNING * INTO a;
	RETURN jsonb_build_object('approval_id', a.approval_id, 'status', a.status,
							  'decided_by', a.decided_by, 'expires_at', a.expires_at);
END
$$;
COMMENT ON FUNCTION agentidp._decide_approval(uuid, boolean, text, text) IS
'approves or denies a pending, unexpired approval under a row lock, as the caller; the requester agent cannot';

/* SECURITY DEFINER: an approver agent decides without write privileges */
CREATE FUNCTION agentidp._decide_approval_as_agent(approval_id uuid, approve boolean, memo text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	agent uuid := agentidp._approval_agent();
BEGIN
	PERFORM agentidp._require(agentidp.has_scope('agentidp:approve'), '42501',
		'approver scope required', 'Deciding an approval needs the agentidp:approve scope in the access token.',
		'Request a token with scope agentidp:approve, or ask an administrator of the tenant.');
	RETURN agentidp._decide_approval(approval_id, approve, memo, agent::text);
END
$$;
COMMENT ON FUNCTION agentidp._decide_approval_as_agent(uuid, boolean, text) IS
'decide_approval for an agent identity holding the agentidp:approve scope';

CREATE FUNCTION agentidp.decide_approval(approval_id uuid, approve boolean, memo text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- an agent identity decides as that agent, with the approver scope
	IF agentidp.current_agent() IS NOT NULL THEN
		RETURN agentidp._decide_approval_as_agent(approval_id, approve, memo);
	END IF;
	RETURN agentidp._decide_approval(approval_id, approve, memo, current_user::text);
END
$$;
COMMENT ON FUNCTION agentidp.decide_approval(uuid, boolean, text) IS
'approves or denies a pending approval: by an agent with the agentidp:approve scope (never the requester) or a tenant administrator';

/*
 * SECURITY DEFINER: the requester marks its approval used.  The row lock
 * serialises two consumptions; the second sees "consumed" and is refused.
 */
CREATE FUNCTION agentidp.consume_approval(approval_id uuid) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	agent uuid := agentidp._approval_agent();
	a agentidp.approvals;
BEGIN
	PERFORM agentidp._require(approval_id IS NOT NULL, '22004', 'approval_id must not be null');
	SELECT * INTO a FROM agentidp.approvals AS x
		WHERE x.tenant_id = agentidp.current_tenant() AND x.approval_id = consume_approval.approval_id
		FOR UPDATE;
	PERFORM agentidp._require(FOUND, '42704', 'approval does not exist',
		format('No approval "%s" is visible to the caller.', approval_id));
	PERFORM agentidp._require(a.agent_id = agent, '42501', 'only the requester can consume an approval',
		format('Approval "%s" was requested by agent "%s".', a.approval_id, a.agent_id));
	PERFORM agentidp._require(a.status = 'approved', '55000',
		'approval is not approved', format('Approval "%s" is %s.', a.approval_id, a.status),
		CASE a.status WHEN 'pending' THEN 'Wait for the decision.'
					  WHEN 'consumed' THEN 'An approval is used once; request a new one.' END);
	PERFORM agentidp._require(a.expires_at > now(), '55000',
		'approval has expired',
		format('Approval "%s" expired at %s.', a.approval_id, to_char(a.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')), 'Request a new approval.');
	UPDATE agentidp.approvals AS x SET status = 'consumed', consumed_at = now()
		WHERE x.tenant_id = a.tenant_id AND x.approval_id = a.approval_id
		RETURNING * INTO a;
	RETURN jsonb_build_object('approval_id', a.approval_id, 'status', a.status, 'action', a.action,
							  'amount', a.amount, 'currency', a.currency, 'scope', a.scope);
END
$$;
COMMENT ON FUNCTION agentidp.consume_approval(uuid) IS
'marks an approved, unexpired approval of the current agent consumed, once';

/* maintenance: pending and approved requests past their expiry */
CREATE FUNCTION agentidp.expire_approvals() RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	UPDATE agentidp.approvals AS x SET status = 'expired'
		WHERE x.status IN ('pending', 'approved') AND x.expires_at <= now();
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
COMMENT ON FUNCTION agentidp.expire_approvals() IS
'marks pending and approved approvals past their expiry expired (those the caller may see); returns how many';

/*
 * The approval a step-up names (approval, the token request's
 * approval_id) bound to the token about to be signed (jti): an approval
 * of this agent whose scope covers every scope wanted, approved or
 * consumed, unexpired when approved, and not used for another token.
 * Bound to the token's jti, it serves one token only.  Refused with
 * 42501 and the message refused (an invalid_scope: ... text); missing is
 * the detail when no approval is named.
 */
CREATE FUNCTION agentidp._bind_step_up_approval(tenant uuid, agent uuid, jti text, approval text,
												wanted text[], refused text, missing text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.approvals;
	id uuid;
BEGIN
	IF approval IS NULL OR approval = '' THEN
		RAISE EXCEPTION '%', refused
			USING ERRCODE = 'insufficient_privilege', DETAIL = missing,
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
		RAISE EXCEPTION '%', refused
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
COMMENT ON FUNCTION agentidp._bind_step_up_approval(uuid, uuid, text, text, text[], text, text) IS
'binds the approval a step-up names to the token about to be signed, or refuses with 42501: approved or consumed, unused, of this agent, covering the scopes wanted';

/*
 * Step-up, called by the token grants (src/tokens.c) as the extension's
 * owner just before a token is signed: when the granted scope holds a
 * scope of the tenant's risky_scopes, the request must name (setting
 * agentidp.approval_id) an approval covering every such risky scope
 * (_bind_step_up_approval).
 */
CREATE FUNCTION agentidp._step_up(tenant uuid, agent uuid, scope text, jti text, approval text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	risky text[];
BEGIN
	SELECT array_agg(s) INTO risky
		FROM agentidp.tenants AS t,
			 jsonb_array_elements_text(COALESCE(t.settings -> 'risky_scopes', '[]')) AS r(s)
		WHERE t.tenant_id = tenant
		  AND r.s = ANY (string_to_array(COALESCE(scope, ''), ' '));
	IF risky IS NOT NULL THEN
		PERFORM agentidp._bind_step_up_approval(tenant, agent, jti, approval, risky,
			format('invalid_scope: approval required for scope "%s"', array_to_string(risky, ' ')),
			'The tenant marks these scopes risky: a token carrying them needs an approved request.');
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._step_up(uuid, uuid, text, text, text) IS
'refuses a token carrying a risky scope of the tenant without an approved, unused approval of the agent for it, and binds the approval to the token';

/*
 * record_action as in 0.10, and past a daily cap: with the tenant's
 * settings."over_cap" = "approval" the action is not recorded but an
 * approval requested ({"status": "pending", "approval_id": ...}); an
 * action whose detail names an approved approval of this agent for this
 * action, currency and at least this amount consumes it and is recorded
 * past the cap.  The default ("refuse") refuses with 53400 as before.
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
	refusal record := agentidp._action_over_cap(a, amount, currency);
BEGIN
	IF refusal.msg IS NULL THEN
		RETURN agentidp._action_count(a, action, amount, currency, detail);
	END IF;
	RETURN agentidp._action_past_cap(a, refusal, action, amount, currency, detail);
END
$$;
COMMENT ON FUNCTION agentidp.record_action(text, numeric, text, jsonb) IS
'records an action of the current agent and what it spent; past a daily cap refused with 53400, or pending an approval when the tenant''s over_cap is "approval"';

/*
 * Whether detail names an approval granted for this very action (its
 * agent, action and currency, at least its amount), approved, unexpired
 * and unused; if so it is consumed now, once.
 */
CREATE FUNCTION agentidp._consume_action_approval(a record, action text, amount numeric, currency text,
												  detail jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	approval uuid;
BEGIN
	IF NOT detail ? 'approval_id' THEN
		RETURN false;
	END IF;
	BEGIN
		approval := (detail ->> 'approval_id')::uuid;
	EXCEPTION WHEN invalid_text_representation THEN
		RETURN false;
	END;
	UPDATE agentidp.approvals AS x SET status = 'consumed', consumed_at = now()
		WHERE x.tenant_id = a.tenant AND x.approval_id = approval AND x.agent_id = a.agent
		  AND x.status = 'approved' AND x.expires_at > now() AND x.scope IS NULL
		  AND x.action = _consume_action_approval.action
		  AND x.currency = _consume_action_approval.currency
		  AND x.amount >= _consume_action_approval.amount;
	RETURN FOUND;
END
$$;
COMMENT ON FUNCTION agentidp._consume_action_approval(record, text, numeric, text, jsonb) IS
'consumes the approval that an action''s detail names, when it was granted for this very action; whether it did';

/* an approval requested for the action instead of recording it: the pending answer */
CREATE FUNCTION agentidp._action_pending(a record, action text, amount numeric, currency text,
										 why text, reason text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN jsonb_build_object('status', 'pending',
		'approval_id', agentidp._new_approval(a.tenant, a.agent, action, NULL, amount, currency, why, 'high',
											  interval '1 hour'),
		'action', action, 'amount', amount, 'currency', currency, 'reason', reason);
END
$$;
COMMENT ON FUNCTION agentidp._action_pending(record, text, numeric, text, text, text) IS
'requests an approval (reason why) for an action instead of recording it; returns {"status": "pending", "approval_id", ..., "reason"}';

/*
 * An action past a daily cap (refusal, from _action_over_cap): recorded
 * when its detail names an approval granted for it, pending a new
 * approval when the tenant's over_cap says "approval", else refused.
 */
CREATE FUNCTION agentidp._action_past_cap(a record, refusal record, action text, amount numeric,
										  currency text, detail jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	hint text := refusal.hint;
BEGIN
	IF detail ? 'approval_id' THEN
		IF agentidp._consume_action_approval(a, action, amount, currency, detail) THEN
			RETURN agentidp._action_count(a, action, amount, currency, detail);
		END IF;
		hint := 'The approval must be approved, unexpired, unused and for this action, currency and at least this amount.';
	ELSIF (SELECT t.settings -> 'over_cap' FROM agentidp.tenants AS t WHERE t.tenant_id = a.tenant)
			= '"approval"' THEN
		RETURN agentidp._action_pending(a, action, amount, currency, refusal.msg || ': ' || refusal.detail,
										refusal.msg);
	END IF;
	RAISE EXCEPTION '%', refusal.msg
		USING ERRCODE = 'configuration_limit_exceeded', DETAIL = refusal.detail, HINT = hint;
END
$$;
COMMENT ON FUNCTION agentidp._action_past_cap(record, record, text, numeric, text, jsonb) IS
'record_action past a daily cap: recorded with an approval granted for it, pending a new one (over_cap "approval"), or refused with 53400';

/*
 * The token endpoint of 0.9, and the request's approval_id (step-up) in
 * the setting agentidp.approval_id for the grant, which issue() reads.
 * Local to the transaction and cleared after the grant, so that the next
 * request of a batch does not carry it.
 */
CREATE OR REPLACE FUNCTION agentidp.token_endpoint(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	response jsonb;
	headers jsonb;
BEGIN
	-- what an earlier grant of this session left is not this request's
	PERFORM agentidp._token_rate_headers();
	PERFORM set_config('agentidp.approval_id',
		CASE WHEN jsonb_typeof(request) = 'object' THEN left(request ->> 'approval_id', 64) END, true);
	response := agentidp._token_routed(request);
	PERFORM set_config('agentidp.approval_id', '', true);
	headers := agentidp._token_rate_headers();
	IF headers IS NOT NULL THEN
		response := response || jsonb_build_object('headers', headers);
	END IF;
	RETURN response;
END
$$;

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
REVOKE ALL ON agentidp.approvals FROM PUBLIC;
GRANT SELECT ON agentidp.approvals TO agentidp_admin, agentidp_agent;
-- an administrator decides as itself (decide_approval, or by hand)
GRANT UPDATE (status, decided_by, decided_at, memo) ON agentidp.approvals TO agentidp_admin;
GRANT EXECUTE ON FUNCTION agentidp._valid_approval_settings(jsonb) TO agentidp_admin, agentidp_service;
GRANT EXECUTE ON FUNCTION
	agentidp.decide_approval(uuid, boolean, text),
	agentidp._decide_approval_as_agent(uuid, boolean, text)
	TO agentidp_admin, agentidp_agent, agentidp_service;
GRANT EXECUTE ON FUNCTION agentidp._decide_approval(uuid, boolean, text, text) TO agentidp_admin;
GRANT EXECUTE ON FUNCTION agentidp.expire_approvals() TO agentidp_admin;
GRANT EXECUTE ON FUNCTION
	agentidp.request_approval(text, text, numeric, text, text, text, interval),
	agentidp.consume_approval(uuid)
	TO agentidp_agent, agentidp_service;
