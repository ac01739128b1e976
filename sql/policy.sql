--
-- The policy hook (agentidp--0.11--0.12.sql, src/policy.c):
-- agentidp.policy_function decides issuance (deny: unauthorized_client;
-- require_approval: step-up with an approval) and record_action (deny:
-- 42501; require_approval: pending approval), with the input documents
-- it is given; bad settings; agentidp.policy_url failing closed and open.
-- The URL path against a live engine is test/t/012_policy_url.pl.
--
\set SHOW_CONTEXT never

-- ids and times masked
CREATE FUNCTION pg_temp.mask(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(s,
		'"client_addr": "[^"]*"', '"client_addr": "<peer>"', 'g'),
		'[0-9a-f]{32}', '<client_id>', 'g'),
		'[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<uuid>', 'g'),
		'[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:.]+([+-][0-9:]+)?', '<time>', 'g')
$$;
GRANT EXECUTE ON FUNCTION pg_temp.mask(text) TO PUBLIC;

-- a statement, as the agent of a token when one is given, in a
-- transaction of its own: its answer or its refusal, masked
CREATE FUNCTION pg_temp.try(tok text, q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	r text;
	state text;
	msg text;
	detail text;
BEGIN
	IF tok IS NOT NULL THEN
		PERFORM agentidp.authenticate(tok);
	END IF;
	EXECUTE q INTO r;
	RETURN pg_temp.mask(r);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	RETURN state || ': ' || pg_temp.mask(msg || COALESCE(' / ' || NULLIF(detail, ''), ''));
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text, text) TO PUBLIC;

-- the same, unmasked and not caught: for ids to keep
CREATE FUNCTION pg_temp.raw(tok text, q text) RETURNS text
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
	r text;
BEGIN
	PERFORM agentidp.authenticate(tok);
	EXECUTE q INTO r;
	RETURN r;
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.raw(text, text) TO PUBLIC;

-- the token endpoint's answer: status, error, scope granted, description
CREATE FUNCTION pg_temp.token(id text, secret text, scope text, approval text DEFAULT NULL,
							  OUT status text, OUT error text, OUT scope_granted text, OUT description text)
LANGUAGE sql AS $$
	SELECT r ->> 'status', r -> 'body' ->> 'error', r -> 'body' ->> 'scope',
		   pg_temp.mask(r -> 'body' ->> 'error_description')
	FROM agentidp.token_endpoint(jsonb_strip_nulls(jsonb_build_object('grant_type', 'client_credentials',
		'client_id', id, 'client_secret', secret, 'scope', scope, 'approval_id', approval))) AS r
$$;
GRANT EXECUTE ON FUNCTION pg_temp.token(text, text, text, text) TO PUBLIC;

-- the policy: what it was asked, and its answers
CREATE TABLE public.regress_policy_inputs (seq serial, input jsonb);
CREATE FUNCTION public.regress_policy(input jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.regress_policy_inputs (input) VALUES (input);
	IF input ->> 'kind' = 'token.issue' THEN
		IF 'admin' = ANY (string_to_array(input ->> 'scope', ' ')) THEN
			RETURN '{"decision": "deny", "reason": "scope admin is not for agents"}';
		ELSIF 'payments:write' = ANY (string_to_array(input ->> 'scope', ' ')) THEN
			RETURN '{"decision": "require_approval", "reason": "payments need a person"}';
		END IF;
	ELSIF input ->> 'kind' = 'action' THEN
		IF input ->> 'action' = 'delete.all' THEN
			RETURN '{"allow": false}';
		ELSIF (input ->> 'amount')::numeric > 100 THEN
			RETURN jsonb_build_object('decision', 'require_approval',
				'reason', format('%s %s is over 100', input ->> 'amount', input ->> 'currency'));
		ELSIF input ->> 'action' = 'garbage' THEN
			RETURN '{"decision": "maybe"}';
		END IF;
	END IF;
	RETURN '{"allow": true}';
END
$$;
CREATE FUNCTION public.regress_policy_text(input jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT 'allow' $$;

SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('policy-a') AS ta \gset
SELECT agentidp.rotate_signing_key(:'ta') IS NOT NULL AS keyed;
SELECT a AS p_agent, c.client_id AS p_id, c.client_secret AS p_secret
FROM agentidp.register_agent(:'ta', 'policed', '{read,admin,payments:write}') AS a,
	 agentidp.create_client_secret(a) AS c \gset
RESET ROLE;

-- no policy: the decision is NULL, and tokens are issued as before
SELECT agentidp._policy_decide('{}') IS NULL AS no_policy;
SET ROLE regress_service;
SELECT (agentidp.issue_token(:'p_id', :'p_secret', 'admin') ->> 'scope') AS scope;
SELECT pg_temp.try(NULL, 'SELECT agentidp._policy_decide(''{}'')') AS not_callable;
-- only a superuser sets the policy
SET agentidp.policy_function = 'public.regress_policy';
RESET ROLE;

SET agentidp.policy_function = 'public.regress_policy';
SET ROLE regress_service;
-- allowed; the input document of an issuance
SELECT (agentidp.issue_token(:'p_id', :'p_secret', 'read', 'api') ->> 'scope') AS scope;
RESET ROLE;
SELECT pg_temp.mask((SELECT input::text FROM public.regress_policy_inputs ORDER BY seq DESC LIMIT 1)) AS input;
SELECT (SELECT input #>> '{request,client_addr}' FROM public.regress_policy_inputs ORDER BY seq DESC LIMIT 1)
	IS NOT DISTINCT FROM host(inet_client_addr()) AS the_peer;
-- behind the HTTP front: its client's address and its request id
BEGIN;
SELECT agentidp._set_request_context('203.0.113.7', 'req-42');
SET LOCAL ROLE regress_service;
SELECT (agentidp.issue_token(:'p_id', :'p_secret', 'read', 'api') ->> 'scope') AS scope;
COMMIT;
SELECT input -> 'request' AS request FROM public.regress_policy_inputs ORDER BY seq DESC LIMIT 1;
-- no scope asked: the policy sees the scope the token would carry, every
-- scope of the agent, admin included
SELECT pg_temp.try(NULL, format('SELECT agentidp.issue_token(%L, %L)', :'p_id', :'p_secret')) AS no_scope;
SET ROLE regress_service;
-- denied: a direct call errors with 42501
\set VERBOSITY sqlstate
SELECT agentidp.issue_token(:'p_id', :'p_secret', 'read admin');
\set VERBOSITY default
SELECT pg_temp.try(NULL, format('SELECT agentidp.issue_token(%L, %L, %L)', :'p_id', :'p_secret', 'admin')) AS denied;
-- and the token endpoint answers 400 unauthorized_client
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read admin');
-- approval required: refused like a risky scope without an approval
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read payments:write');
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', 'not-a-uuid');
RESET ROLE;

-- an approval of the agent for the scope, decided by the tenant's administrator
SELECT agentidp.issue_token(:'p_id', :'p_secret', 'read') ->> 'access_token' AS p_tok \gset
SELECT pg_temp.raw(:'p_tok', 'SELECT agentidp.request_approval(''token'', ''read payments:write'')') AS ap_tok \gset
SET ROLE regress_admin_a;
SELECT agentidp.decide_approval(:'ap_tok', true) ->> 'status' AS decided;
SET ROLE regress_service;
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read payments:write', :'ap_tok');
-- it serves one token
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read payments:write', :'ap_tok');
RESET ROLE;

-- the refusals reach the tenant's audit log
SELECT agentidp.drain_refusals() > 0 AS drained;
SELECT detail::jsonb ->> 'error' AS error, pg_temp.mask(detail::jsonb ->> 'error_description') AS description
FROM agentidp.audit_events WHERE tenant_id = :'ta' AND action = 'token.refused' ORDER BY seq;

-- record_action: allowed, the input document, denied, pending
SET ROLE regress_service;
SELECT pg_temp.try(:'p_tok', 'SELECT agentidp.record_action(''search'', 5, ''EUR'', ''{"q": 1}'') ->> ''status''') AS allowed;
RESET ROLE;
SELECT pg_temp.mask((SELECT input::text FROM public.regress_policy_inputs ORDER BY seq DESC LIMIT 1)) AS input;
SET ROLE regress_service;
SELECT pg_temp.try(:'p_tok', 'SELECT agentidp.record_action(''delete.all'')') AS denied;
SELECT pg_temp.try(:'p_tok', 'SELECT agentidp.record_action(''payment.send'', 500)') AS pending;
SELECT pg_temp.raw(:'p_tok', 'SELECT agentidp.record_action(''payment.send'', 500) ->> ''approval_id''') AS ap_act \gset
RESET ROLE;
SELECT status, action, amount, pg_temp.mask(reason) AS reason FROM agentidp.approvals
 WHERE approval_id = :'ap_act';
SET ROLE regress_admin_a;
SELECT agentidp.decide_approval(:'ap_act', true) ->> 'status' AS decided;
SET ROLE regress_service;
-- the approval lets the action through, once; not another action or a larger amount
SELECT pg_temp.try(:'p_tok', format('SELECT agentidp.record_action(''payment.send'', 600, ''USD'', %L) ->> ''status''',
	jsonb_build_object('approval_id', :'ap_act'))) AS larger;
SELECT pg_temp.try(:'p_tok', format('SELECT agentidp.record_action(''payment.send'', 500, ''USD'', %L) ->> ''status''',
	jsonb_build_object('approval_id', :'ap_act'))) AS approved;
SELECT pg_temp.try(:'p_tok', format('SELECT agentidp.record_action(''payment.send'', 500, ''USD'', %L) ->> ''status''',
	jsonb_build_object('approval_id', :'ap_act'))) AS again;
-- an answer that is no decision fails closed
SELECT pg_temp.try(:'p_tok', 'SELECT agentidp.record_action(''garbage'')') AS garbage;
RESET ROLE;

-- bad settings: a clear error when used, or refused when set
SET agentidp.policy_function = 'public.regress_no_such';
SELECT pg_temp.try(NULL, format('SELECT agentidp.issue_token(%L, %L, %L)', :'p_id', :'p_secret', 'read')) AS missing;
SET agentidp.policy_function = 'public.regress_policy_text';
SELECT pg_temp.try(NULL, format('SELECT agentidp.issue_token(%L, %L, %L)', :'p_id', :'p_secret', 'read')) AS wrong_type;
SET agentidp.policy_function = 'public.regress_policy(jsonb)';
SET agentidp.policy_function = 'regress_policy';
SET agentidp.policy_url = 'ftp://127.0.0.1/x';
SET agentidp.policy_timeout = 0;
RESET agentidp.policy_function;

-- an engine that cannot be reached: denied (fail-closed), or allowed (fail-open)
SET agentidp.policy_url = 'http://127.0.0.1:9/v1/data/agentidp/decision';
SELECT pg_temp.try(NULL, format('SELECT agentidp.issue_token(%L, %L, %L)', :'p_id', :'p_secret', 'read')) AS private_refused;
SET agentidp.allow_private_addresses = on;
SELECT regexp_replace(pg_temp.try(NULL, format('SELECT agentidp.issue_token(%L, %L, %L)', :'p_id', :'p_secret', 'read')),
	'unreachable: .*\(', 'unreachable: ... (') AS fail_closed;
SELECT r.status, r.error FROM pg_temp.token(:'p_id', :'p_secret', 'read') AS r;
SELECT regexp_replace(pg_temp.try(:'p_tok', 'SELECT agentidp.record_action(''search'')'),
	'unreachable: .*\(', 'unreachable: ... (') AS fail_closed;
SET agentidp.policy_fail_open = on;
SELECT (agentidp.issue_token(:'p_id', :'p_secret', 'read') ->> 'scope') AS fail_open;
SELECT pg_temp.try(:'p_tok', 'SELECT agentidp.record_action(''search'') ->> ''status''') AS fail_open;
-- both set: the function first, and its deny is final
SET agentidp.policy_function = 'public.regress_policy';
SELECT r.status, r.error FROM pg_temp.token(:'p_id', :'p_secret', 'admin') AS r;
SELECT (agentidp.issue_token(:'p_id', :'p_secret', 'read') ->> 'scope') AS both_allow;
RESET agentidp.policy_function;
RESET agentidp.policy_url;
RESET agentidp.policy_fail_open;
RESET agentidp.allow_private_addresses;

DROP TABLE public.regress_policy_inputs;
DROP FUNCTION public.regress_policy(jsonb), public.regress_policy_text(jsonb);
