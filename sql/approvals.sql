--
-- Approvals (agentidp--0.10--0.11.sql, src/tokens.c): request_approval(),
-- decide_approval() by an approver agent or a tenant administrator but
-- never the requester, consume_approval() once within expiry, the
-- over-cap path of record_action, step-up for tokens of risky scopes,
-- the webhook events and audit rows, and who may do what.
--
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_approval_app;
RESET client_min_messages;
CREATE ROLE regress_approval_app IN ROLE agentidp_agent;

-- ids and times masked
CREATE FUNCTION pg_temp.mask(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT regexp_replace(regexp_replace(regexp_replace(s,
		'[0-9a-f]{32}', '<client_id>', 'g'),
		'[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<uuid>', 'g'),
		'[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:.]+([+-][0-9:]+)?', '<time>', 'g')
$$;
GRANT EXECUTE ON FUNCTION pg_temp.mask(text) TO PUBLIC;

-- a statement run as the agent of a token (none: no identity), in a
-- transaction of its own: its answer or its refusal, masked
CREATE FUNCTION pg_temp.as_agent(tok text, q text) RETURNS text
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
GRANT EXECUTE ON FUNCTION pg_temp.as_agent(text, text) TO PUBLIC;

-- a request for approval by the agent of a token: its id
CREATE FUNCTION pg_temp.req(tok text, action text, scope text DEFAULT NULL, amount numeric DEFAULT 0)
RETURNS uuid
LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
	PERFORM agentidp.authenticate(tok);
	RETURN agentidp.request_approval(action, scope, amount, 'USD', 'needed for ' || action, 'critical');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.req(text, text, text, numeric) TO PUBLIC;

-- the token endpoint's answer: status, error, and the scope granted
CREATE FUNCTION pg_temp.token(id text, secret text, scope text, approval text DEFAULT NULL,
							  OUT status text, OUT error text, OUT scope_granted text, OUT description text)
LANGUAGE sql AS $$
	SELECT r ->> 'status', r -> 'body' ->> 'error', r -> 'body' ->> 'scope',
		   pg_temp.mask(r -> 'body' ->> 'error_description')
	FROM agentidp.token_endpoint(jsonb_strip_nulls(jsonb_build_object('grant_type', 'client_credentials',
		'client_id', id, 'client_secret', secret, 'scope', scope, 'approval_id', approval))) AS r
$$;
GRANT EXECUTE ON FUNCTION pg_temp.token(text, text, text, text) TO PUBLIC;

-- a new agent of a tenant with a client secret
CREATE FUNCTION pg_temp.client(tenant uuid, name text, scopes text[], OUT agent uuid, OUT id text, OUT secret text)
LANGUAGE sql AS $$
	SELECT a, c.client_id, c.client_secret
	FROM agentidp.register_agent(tenant, name, scopes) AS a, agentidp.create_client_secret(a) AS c
$$;
GRANT EXECUTE ON FUNCTION pg_temp.client(uuid, text, text[]) TO PUBLIC;

SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('approval-a') AS ta \gset
SELECT agentidp.create_tenant('approval-b') AS tb \gset
SELECT agentidp.rotate_signing_key(:'ta') IS NOT NULL AND agentidp.rotate_signing_key(:'tb') IS NOT NULL AS keyed;
SELECT * FROM pg_temp.client(:'ta', 'payer', '{read,payments:write,agentidp:approve}') \gset p_
SELECT * FROM pg_temp.client(:'ta', 'boss', '{read,agentidp:approve}') \gset b_
SELECT * FROM pg_temp.client(:'ta', 'peer', '{read,payments:write}') \gset q_
SELECT * FROM pg_temp.client(:'tb', 'other', '{read,agentidp:approve}') \gset o_
SELECT agentidp.set_token_rate_limit(a, 'unlimited')
FROM unnest(ARRAY[:'p_agent', :'b_agent', :'q_agent', :'o_agent']::uuid[]) AS a;
SELECT count(*) AS subscribed FROM agentidp.create_webhook_subscription(:'ta',
	'https://hooks.example.com/approvals', '{approval.requested,approval.decided}');
RESET ROLE;

--
-- Settings: risky_scopes and over_cap are checked
--
SET ROLE regress_admin_a;
UPDATE agentidp.tenants SET settings = settings || '{"risky_scopes": "payments:write"}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"risky_scopes": [1]}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"risky_scopes": ["a b"]}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"over_cap": "maybe"}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"risky_scopes": ["payments:write"], "over_cap": "refuse"}'
WHERE tenant_id = :'ta';
SELECT settings -> 'risky_scopes' AS risky, settings -> 'over_cap' AS over_cap
FROM agentidp.tenants WHERE tenant_id = :'ta';
RESET ROLE;

--
-- Step-up: no token for a risky scope without an approval
--
SET ROLE regress_service;
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read');
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read payments:write');
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', 'not-a-uuid');
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', '00000000-0000-0000-0000-000000000000');
-- a direct grant: the error as a client sees it
SELECT agentidp.issue_token(:'p_id', :'p_secret', 'payments:write');
SELECT agentidp.issue_token(:'p_id', :'p_secret', 'read agentidp:approve') ->> 'access_token' AS p_tok \gset
SELECT agentidp.issue_token(:'b_id', :'b_secret', 'read agentidp:approve') ->> 'access_token' AS b_tok \gset
SELECT agentidp.issue_token(:'b_id', :'b_secret', 'read') ->> 'access_token' AS b_plain_tok \gset
SELECT agentidp.issue_token(:'q_id', :'q_secret', 'read') ->> 'access_token' AS q_tok \gset
SELECT agentidp.issue_token(:'o_id', :'o_secret', 'read agentidp:approve') ->> 'access_token' AS o_tok \gset
RESET ROLE;

--
-- Requests: the current agent's, checked
--
SET ROLE regress_approval_app;
SELECT pg_temp.as_agent(NULL, $$SELECT agentidp.request_approval('payment.send')$$) AS no_identity;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.request_approval('')$$) AS bad_action;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.request_approval('x', 'a  b')$$) AS bad_scope;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.request_approval('x', amount => -1)$$) AS bad_amount;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.request_approval('x', currency => 'usd')$$) AS bad_currency;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.request_approval('x', risk => 'extreme')$$) AS bad_risk;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.request_approval('x', ttl => '8 days')$$) AS bad_ttl;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.request_approval('x', ttl => '-1 hour')$$) AS bad_ttl;
SELECT pg_temp.req(:'p_tok', 'vendor.pay', 'payments:write') AS ap1 \gset
-- the agent sees its own request
SELECT pg_temp.as_agent(:'p_tok', $$SELECT string_agg(format('%s %s %s %s %s %s', action, scope, amount, currency, risk, status), ', ') FROM agentidp.approvals$$) AS own;
-- but writes nothing directly
SELECT pg_temp.as_agent(:'p_tok', format($$UPDATE agentidp.approvals SET status = 'approved' WHERE approval_id = %L RETURNING 1$$, :'ap1')) AS direct_update;
RESET ROLE;

--
-- Decisions
--
SET ROLE regress_approval_app;
-- never by the requester itself, though it holds the approver scope
SELECT pg_temp.as_agent(:'p_tok', format('SELECT agentidp.decide_approval(%L, true)', :'ap1')) AS self;
-- not without the approver scope (the same agent's token without it neither)
SELECT pg_temp.as_agent(:'q_tok', format('SELECT agentidp.decide_approval(%L, true)', :'ap1')) AS no_scope;
SELECT pg_temp.as_agent(:'b_plain_tok', format('SELECT agentidp.decide_approval(%L, true)', :'ap1')) AS no_scope;
-- not from another tenant
SELECT pg_temp.as_agent(:'o_tok', format('SELECT agentidp.decide_approval(%L, true)', :'ap1')) AS other_tenant;
-- not consumed before it is approved
SELECT pg_temp.as_agent(:'p_tok', format('SELECT agentidp.consume_approval(%L)', :'ap1')) AS consume_pending;
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, NULL)', :'ap1')) AS null_decision;
SELECT pg_temp.as_agent(:'b_tok', 'SELECT agentidp.decide_approval(''00000000-0000-0000-0000-000000000000'', true)') AS unknown;
-- the approver agent sees the tenant's requests
SELECT pg_temp.as_agent(:'b_tok', 'SELECT count(*) FROM agentidp.approvals') AS approver_sees;
SELECT pg_temp.as_agent(:'q_tok', 'SELECT count(*) FROM agentidp.approvals') AS peer_sees;
-- approved once
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, true, %L)', :'ap1', 'ok for vendor 7')) AS approved;
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, false)', :'ap1')) AS again;
-- only the requester consumes
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.consume_approval(%L)', :'ap1')) AS not_requester;
RESET ROLE;

--
-- End to end: consumed by the requester, then one token with it
--
SET ROLE regress_approval_app;
SELECT pg_temp.as_agent(:'p_tok', format('SELECT agentidp.consume_approval(%L)', :'ap1')) AS consumed;
SELECT pg_temp.as_agent(:'p_tok', format('SELECT agentidp.consume_approval(%L)', :'ap1')) AS consumed_again;
RESET ROLE;
SET ROLE regress_service;
-- another agent cannot use it
SELECT * FROM pg_temp.token(:'q_id', :'q_secret', 'payments:write', :'ap1');
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read payments:write', :'ap1');
-- an approval serves one token
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', :'ap1');
-- scopes that are not risky need none, and ignore one
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'read', :'ap1');
RESET ROLE;
SELECT status, token_jti IS NOT NULL AS bound, consumed_at IS NOT NULL AS consumed, decided_by = :'b_agent' AS by_boss, memo
FROM agentidp.approvals WHERE approval_id = :'ap1';

-- approved and not consumed: the token's issuance consumes it
SET ROLE regress_approval_app;
SELECT pg_temp.req(:'p_tok', 'vendor.pay', 'payments:write') AS ap2 \gset
SELECT pg_temp.req(:'p_tok', 'read.more', 'read') AS ap_read \gset
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, true) ->> ''status''', :'ap2')) AS approved;
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, true) ->> ''status''', :'ap_read')) AS approved;
RESET ROLE;
SET ROLE regress_service;
-- an approval for other scopes does not cover a risky one
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', :'ap_read');
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', :'ap2');
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', :'ap2');
RESET ROLE;
SET ROLE regress_approval_app;
SELECT pg_temp.as_agent(:'p_tok', format('SELECT agentidp.consume_approval(%L)', :'ap2')) AS consume_used;
RESET ROLE;

--
-- Denied by a tenant administrator
--
SET ROLE regress_approval_app;
SELECT pg_temp.req(:'p_tok', 'wire.transfer', NULL, 25000) AS ap3 \gset
RESET ROLE;
SET ROLE regress_admin_b;
SELECT pg_temp.as_agent(NULL, format('SELECT agentidp.decide_approval(%L, true)', :'ap3')) AS admin_b;
RESET ROLE;
SET ROLE regress_admin_a;
SELECT pg_temp.mask(agentidp.decide_approval(:'ap3', false, 'too much')::text) AS denied;
RESET ROLE;
SET ROLE regress_approval_app;
SELECT pg_temp.as_agent(:'p_tok', format('SELECT agentidp.consume_approval(%L)', :'ap3')) AS consume_denied;
RESET ROLE;

--
-- Expiry
--
SET ROLE regress_approval_app;
SELECT pg_temp.req(:'p_tok', 'late.one') AS ap4 \gset
SELECT pg_temp.req(:'p_tok', 'late.two', 'payments:write') AS ap5 \gset
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, true) ->> ''status''', :'ap5')) AS approved;
RESET ROLE;
UPDATE agentidp.approvals SET expires_at = now() - interval '1 minute' WHERE approval_id IN (:'ap4', :'ap5');
SET ROLE regress_approval_app;
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, true)', :'ap4')) AS decide_expired;
SELECT pg_temp.as_agent(:'p_tok', format('SELECT agentidp.consume_approval(%L)', :'ap5')) AS consume_expired;
RESET ROLE;
SET ROLE regress_service;
SELECT * FROM pg_temp.token(:'p_id', :'p_secret', 'payments:write', :'ap5');
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.expire_approvals() AS expired;
SELECT action, status FROM agentidp.approvals WHERE approval_id IN (:'ap4', :'ap5') ORDER BY action;
RESET ROLE;
-- the worker's expiry task marks them too, a batch at a time, the oldest
-- first, each change audited; a request not yet expired stays open
SET ROLE regress_approval_app;
SELECT pg_temp.req(:'p_tok', 'late.three') AS ap6 \gset
SELECT pg_temp.req(:'p_tok', 'late.four') AS ap7 \gset
SELECT pg_temp.req(:'p_tok', 'late.five') AS ap8 \gset
SELECT pg_temp.req(:'p_tok', 'on.time') AS ap9 \gset
RESET ROLE;
UPDATE agentidp.approvals SET expires_at = now() - interval '3 minutes' WHERE approval_id = :'ap6';
UPDATE agentidp.approvals SET expires_at = now() - interval '2 minutes' WHERE approval_id = :'ap7';
UPDATE agentidp.approvals SET expires_at = now() - interval '1 minute' WHERE approval_id = :'ap8';
SELECT deleted AS marked FROM agentidp.expire_batch(2) WHERE kind = 'approvals';
SELECT action, status FROM agentidp.approvals WHERE approval_id IN (:'ap6', :'ap7', :'ap8', :'ap9') ORDER BY action;
SELECT deleted AS marked FROM agentidp.expire_batch(2) WHERE kind = 'approvals';
SELECT deleted AS marked FROM agentidp.expire_batch() WHERE kind = 'approvals';
SELECT status FROM agentidp.approvals WHERE approval_id = :'ap8';
SELECT action, detail -> 'old' ->> 'status' AS was, detail -> 'new' ->> 'status' AS now
FROM agentidp.audit_events WHERE resource = 'agentidp.approvals' AND resource_key ->> 'approval_id' = :'ap8'
ORDER BY seq DESC LIMIT 1;

--
-- Over a daily cap: refused by default, pending an approval when the
-- tenant says so, recorded once with the approval
--
SET ROLE regress_admin_a;
SELECT agentidp.set_daily_caps(:'p_agent', 1, NULL);
RESET ROLE;
SET ROLE regress_approval_app;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.record_action('payment.send', 10) ->> 'status'$$) AS first;
SELECT pg_temp.as_agent(:'p_tok', $$SELECT agentidp.record_action('payment.send', 10)$$) AS refused;
RESET ROLE;
SET ROLE regress_admin_a;
UPDATE agentidp.tenants SET settings = settings || '{"over_cap": "approval"}' WHERE tenant_id = :'ta';
RESET ROLE;
SET ROLE regress_approval_app;
BEGIN;
SELECT agentidp.authenticate(:'p_tok') IS NOT NULL AS authenticated;
SELECT agentidp.record_action('payment.send', 10) AS pending \gset
COMMIT;
SELECT pg_temp.mask(:'pending') AS pending;
SELECT :'pending'::jsonb ->> 'approval_id' AS ap6 \gset
SELECT pg_temp.as_agent(:'p_tok', format('SELECT reason FROM agentidp.approvals WHERE approval_id = %L', :'ap6')) AS reason;
-- not yet approved: refused
SELECT pg_temp.as_agent(:'p_tok', format($$SELECT agentidp.record_action('payment.send', 10, 'USD', '{"approval_id": "%s"}') ->> 'status'$$, :'ap6')) AS unapproved;
SELECT pg_temp.as_agent(:'b_tok', format('SELECT agentidp.decide_approval(%L, true) ->> ''status''', :'ap6')) AS approved;
-- for another action or a larger amount it does not count
SELECT pg_temp.as_agent(:'p_tok', format($$SELECT agentidp.record_action('payment.send', 11, 'USD', '{"approval_id": "%s"}') ->> 'status'$$, :'ap6')) AS larger;
SELECT pg_temp.as_agent(:'p_tok', format($$SELECT agentidp.record_action('payment.send', 10, 'USD', '{"approval_id": "%s"}') - 'day'$$, :'ap6')) AS with_approval;
SELECT pg_temp.as_agent(:'p_tok', format($$SELECT agentidp.record_action('payment.send', 10, 'USD', '{"approval_id": "%s"}') ->> 'status'$$, :'ap6')) AS reused;
RESET ROLE;
SELECT status FROM agentidp.approvals WHERE approval_id = :'ap6';

--
-- Webhooks and audit: every request and decision queued, every change audited
--
SELECT type, data ->> 'action' AS action, data ->> 'status' AS status, data ->> 'scope' AS scope
FROM agentidp.webhook_events WHERE tenant_id = :'ta' ORDER BY 1, 2, 3, 4;
SELECT count(*) AS deliveries FROM agentidp.webhook_deliveries WHERE tenant_id = :'ta';
SELECT action, count(*) FROM agentidp.audit_events
WHERE tenant_id = :'ta' AND resource = 'agentidp.approvals' GROUP BY action ORDER BY action;
SELECT ok AS chain_valid FROM agentidp.verify_audit_chain(:'ta');

--
-- Privileges
--
SET ROLE regress_outsider;
SELECT pg_temp.as_agent(NULL, 'SELECT count(*) FROM agentidp.approvals') AS outsider_table;
SELECT pg_temp.as_agent(NULL, $$SELECT agentidp.request_approval('x')$$) AS outsider_request;
SELECT pg_temp.as_agent(NULL, 'SELECT agentidp.decide_approval(''00000000-0000-0000-0000-000000000000'', true)') AS outsider_decide;
SELECT pg_temp.as_agent(NULL, 'SELECT agentidp.consume_approval(''00000000-0000-0000-0000-000000000000'')') AS outsider_consume;
RESET ROLE;
SET ROLE regress_admin_b;
SELECT count(*) AS admin_b_sees FROM agentidp.approvals;
RESET ROLE;
SET ROLE regress_admin_a;
SELECT count(*) AS admin_a_sees FROM agentidp.approvals;
-- consuming is the requester's, not an administrator's
SELECT pg_temp.as_agent(NULL, format('SELECT agentidp.consume_approval(%L)', :'ap1')) AS admin_consume;
RESET ROLE;
