--
-- Quotas and caps (agentidp--0.9--0.10.sql, src/tokens.c): a tenant's
-- monthly token quota, counted in token_usage and refused past it by the
-- grants and the token endpoint (429), usage(); an agent's daily action
-- cap and spend limit, record_action(), its errors; the setters and who
-- may call them; the maintenance task that prunes old counters.
--
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_quota_app;
RESET client_min_messages;
CREATE ROLE regress_quota_app IN ROLE agentidp_agent;

-- a refusal as one line: SQLSTATE, message and detail, ids masked
CREATE FUNCTION pg_temp.attempt(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	state text;
	msg text;
	detail text;
	r text;
BEGIN
	EXECUTE q INTO r;
	RETURN 'passed';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	RETURN state || ': ' || regexp_replace(regexp_replace(msg || COALESCE(' / ' || NULLIF(detail, ''), ''),
		'[0-9a-f]{32}', '<client_id>', 'g'), '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.attempt(text) TO PUBLIC;

-- an action of the agent of a token, in a transaction of its own: the
-- answer without its day, or the refusal
CREATE FUNCTION pg_temp.act(tok text, action text, amount numeric DEFAULT 0,
							currency text DEFAULT 'USD') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	r jsonb;
	state text;
	msg text;
	detail text;
BEGIN
	IF tok IS NOT NULL THEN
		PERFORM agentidp.authenticate(tok);
	END IF;
	r := agentidp.record_action(action, amount, currency, '{"ref": 1}');
	RETURN (r - 'day')::text;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	RETURN state || ': ' || regexp_replace(msg || COALESCE(' / ' || NULLIF(detail, ''), ''),
		'[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text, text, numeric, text) TO PUBLIC;

-- a new agent of a tenant with a client secret
CREATE FUNCTION pg_temp.client(tenant uuid, name text, OUT agent uuid, OUT id text, OUT secret text)
LANGUAGE sql AS $$
	SELECT a, c.client_id, c.client_secret
	FROM agentidp.register_agent(tenant, name, '{read}') AS a, agentidp.create_client_secret(a) AS c
$$;
GRANT EXECUTE ON FUNCTION pg_temp.client(uuid, text) TO PUBLIC;

SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('quota-a') AS ta \gset
SELECT agentidp.create_tenant('quota-b') AS tb \gset
SELECT agentidp.rotate_signing_key(:'ta') IS NOT NULL AND agentidp.rotate_signing_key(:'tb') IS NOT NULL AS keyed;
SELECT * FROM pg_temp.client(:'ta', 'issuer') \gset i_
SELECT * FROM pg_temp.client(:'ta', 'buyer') \gset b_
SELECT * FROM pg_temp.client(:'ta', 'free') \gset f_
SELECT * FROM pg_temp.client(:'tb', 'other') \gset o_
-- rate limits are not what this file tests
SELECT agentidp.set_token_rate_limit(:'i_agent', 'unlimited'),
	   agentidp.set_token_rate_limit(:'b_agent', 'unlimited'),
	   agentidp.set_token_rate_limit(:'f_agent', 'unlimited'),
	   agentidp.set_token_rate_limit(:'o_agent', 'unlimited');
RESET ROLE;

--
-- Monthly token quota.  Unlimited by default: nothing is counted.
--
SET ROLE regress_service;
SELECT count(agentidp.issue_token(:'i_id', :'i_secret')) AS tokens FROM generate_series(1, 3);
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.usage(:'ta') - 'tenant_id' - 'month' AS usage,
	   agentidp.usage(:'ta') ->> 'month' = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') AS this_month;
SELECT count(*) AS counted FROM agentidp.token_usage WHERE tenant_id = :'ta';

-- a quota of 3: three tokens, then 53400
SELECT agentidp.set_monthly_token_quota(:'ta', 3);
SELECT settings -> 'monthly_token_quota' AS quota FROM agentidp.tenants WHERE tenant_id = :'ta';
RESET ROLE;
SET ROLE regress_service;
SELECT count(agentidp.issue_token(:'i_id', :'i_secret')) AS tokens FROM generate_series(1, 2);
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'i_id', :'i_secret')) AS third;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'f_id', :'f_secret')) AS fourth;
-- a direct call: the error as a client sees it (53400 above)
SELECT agentidp.issue_token(:'i_id', :'i_secret');
-- through the token endpoint: 429 temporarily_unavailable, audited
SELECT response ->> 'status' AS status, response -> 'body' AS body
FROM agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'i_id', 'client_secret', :'i_secret')) AS response;
RESET ROLE;
SELECT action, result, detail::jsonb ->> 'error' AS error, detail::jsonb ->> 'error_description' AS description
FROM agentidp.audit_events WHERE tenant_id = :'ta' AND action = 'token.refused' ORDER BY seq;
-- another tenant is not affected
SET ROLE regress_service;
SELECT agentidp.issue_token(:'o_id', :'o_secret') ? 'access_token' AS other_tenant;
RESET ROLE;

SET ROLE regress_admin_a;
SELECT agentidp.usage(:'ta') - 'tenant_id' - 'month' AS usage;
SELECT agentidp.usage(:'ta', '2020-02-17') - 'tenant_id' AS past_month;
-- raised: one more token; unlimited again: no more counting
SELECT agentidp.set_monthly_token_quota(:'ta', 4);
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.issue_token(:'i_id', :'i_secret') ? 'access_token' AS fourth_token;
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.usage(:'ta') - 'tenant_id' - 'month' AS usage;
SELECT agentidp.set_monthly_token_quota(:'ta', 0);
RESET ROLE;
SET ROLE regress_service;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'f_id', :'f_secret')) AS quota_zero;
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.set_monthly_token_quota(:'ta', NULL);
SELECT settings -> 'monthly_token_quota' AS quota FROM agentidp.tenants WHERE tenant_id = :'ta';
RESET ROLE;
SET ROLE regress_service;
SELECT count(agentidp.issue_token(:'i_id', :'i_secret')) AS tokens FROM generate_series(1, 3);
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.usage(:'ta') - 'tenant_id' - 'month' AS usage;

-- validation
SELECT agentidp.set_monthly_token_quota(:'ta', -1);
SELECT agentidp.set_monthly_token_quota(NULL, 10);
UPDATE agentidp.tenants SET settings = settings || '{"monthly_token_quota": "lots"}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"monthly_token_quota": 2.5}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"monthly_token_quota": "unlimited"}' WHERE tenant_id = :'ta';
SELECT agentidp.usage(:'ta', NULL);
RESET ROLE;

-- privileges: another tenant's administrator, the service, an outsider
SET ROLE regress_admin_b;
SELECT pg_temp.attempt(format('SELECT agentidp.usage(%L)', :'ta')) AS admin_b_usage;
SELECT pg_temp.attempt(format('SELECT agentidp.set_monthly_token_quota(%L, 1)', :'ta')) AS admin_b_quota;
SELECT count(*) AS rows_seen FROM agentidp.token_usage;
RESET ROLE;
SET ROLE regress_outsider;
SELECT pg_temp.attempt(format('SELECT agentidp.usage(%L)', :'ta')) AS outsider_usage;
SELECT pg_temp.attempt('SELECT count(*) FROM agentidp.token_usage') AS outsider_table;
RESET ROLE;
SET ROLE regress_service;
SELECT pg_temp.attempt(format('SELECT agentidp.usage(%L)', :'ta')) AS service_usage;
RESET ROLE;

--
-- Daily caps: an agent's action cap and spend limit
--
SET ROLE regress_service;
SELECT agentidp.issue_token(:'b_id', :'b_secret') ->> 'access_token' AS b_tok \gset
SELECT agentidp.issue_token(:'f_id', :'f_secret') ->> 'access_token' AS f_tok \gset
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.set_daily_caps(:'b_agent', 3, 100, 'EUR');
SELECT name, daily_action_cap, daily_spend_limit, spend_currency
FROM agentidp.agents WHERE tenant_id = :'ta' ORDER BY name;
RESET ROLE;

SET ROLE regress_quota_app;
-- no identity
SELECT pg_temp.act(NULL, 'search');
-- an agent without caps records what it likes
SELECT pg_temp.act(:'f_tok', 'search');
SELECT pg_temp.act(:'f_tok', 'payment.send', 5000, 'USD');
-- the capped agent: spending in EUR up to 100, other currencies uncapped
SELECT pg_temp.act(:'b_tok', 'payment.send', 60, 'EUR');
SELECT pg_temp.act(:'b_tok', 'payment.send', 50, 'EUR');
SELECT pg_temp.act(:'b_tok', 'payment.send', 40, 'EUR');
SELECT pg_temp.act(:'b_tok', 'payment.send', 500, 'USD');
-- three actions today: the fourth is refused, whatever its amount
SELECT pg_temp.act(:'b_tok', 'search');
-- arguments
SELECT pg_temp.act(:'b_tok', '');
SELECT pg_temp.act(:'b_tok', 'x', -1);
SELECT pg_temp.act(:'b_tok', 'x', 1, 'usd');
BEGIN;
SELECT agentidp.authenticate(:'b_tok') IS NOT NULL AS authenticated;
SELECT agentidp.record_action('x', 0, 'USD', '[]');
ROLLBACK;
-- the counters are not the agent's to read
SELECT pg_temp.attempt('SELECT count(*) FROM agentidp.agent_daily_usage') AS app_table;
RESET ROLE;

-- a direct call, with its detail and hint
SET ROLE regress_quota_app;
BEGIN;
SELECT agentidp.authenticate(:'b_tok') IS NOT NULL AS authenticated;
SELECT agentidp.record_action('search');
ROLLBACK;
RESET ROLE;

-- the counters, as the tenant's administrator sees them; each recorded
-- action is in the audit chain
SET ROLE regress_admin_a;
SELECT a.name, u.currency, u.actions, u.spent, u.last_action, u.last_amount, u.last_detail,
	   u.day = (now() AT TIME ZONE 'UTC')::date AS today
FROM agentidp.agent_daily_usage AS u JOIN agentidp.agents AS a USING (tenant_id, agent_id)
WHERE u.tenant_id = :'ta' ORDER BY a.name, u.currency;
RESET ROLE;
SELECT action, count(*) FROM agentidp.audit_events
WHERE tenant_id = :'ta' AND resource = 'agentidp.agent_daily_usage' GROUP BY action ORDER BY action;

-- the cap raised, the spend limit lifted: the agent goes on
SET ROLE regress_admin_a;
SELECT agentidp.set_daily_caps(:'b_agent', 5, NULL);
RESET ROLE;
SET ROLE regress_quota_app;
SELECT pg_temp.act(:'b_tok', 'payment.send', 1000, 'EUR');
RESET ROLE;
-- a cap of 0 stops the agent
SET ROLE regress_admin_a;
SELECT agentidp.set_daily_caps(:'b_agent', 0, NULL);
RESET ROLE;
SET ROLE regress_quota_app;
SELECT pg_temp.act(:'b_tok', 'search');
RESET ROLE;

-- setter validation and privileges
SET ROLE regress_admin_a;
SELECT agentidp.set_daily_caps(:'b_agent', -1, NULL);
SELECT agentidp.set_daily_caps(:'b_agent', NULL, -5);
SELECT agentidp.set_daily_caps(:'b_agent', NULL, 5, 'euro');
SELECT agentidp.set_daily_caps('00000000-0000-0000-0000-000000000000', 1, 1);
UPDATE agentidp.agents SET daily_action_cap = -2 WHERE agent_id = :'b_agent';
RESET ROLE;
SET ROLE regress_admin_b;
SELECT pg_temp.attempt(format('SELECT agentidp.set_daily_caps(%L, 100, NULL)', :'b_agent')) AS admin_b_caps;
SELECT count(*) AS rows_seen FROM agentidp.agent_daily_usage;
RESET ROLE;
SET ROLE regress_quota_app;
SELECT pg_temp.attempt(format('SELECT agentidp.set_daily_caps(%L, 100, NULL)', :'b_agent')) AS app_caps;
RESET ROLE;

--
-- Maintenance: months before the last one and days older than a week go
--
INSERT INTO agentidp.token_usage VALUES (:'ta', '2020-01-01', 7);
INSERT INTO agentidp.agent_daily_usage VALUES
	(:'ta', :'b_agent', '2020-01-01', 'USD', 1, 0, 'old', 0, '{}');
SELECT agentidp.reset_quotas() >= 2 AS pruned;
SELECT count(*) AS old_months FROM agentidp.token_usage WHERE month < '2021-01-01';
SELECT count(*) AS old_days FROM agentidp.agent_daily_usage WHERE day < '2021-01-01';
SELECT count(*) > 0 AS this_month_kept FROM agentidp.token_usage WHERE tenant_id = :'ta';

DROP ROLE regress_quota_app;
