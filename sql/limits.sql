--
-- Rate limits (src/ratelimit.c): the settings and their checks,
-- check_rate and require_rate, the token rate limits per client and per
-- tenant (the agent's own, the tenant's default, the GUC, "unlimited"),
-- the token endpoint's 429 with its headers, and the audit of refusals.
-- The test cluster preloads agentidp, so the buckets are in shared
-- memory; every run makes new tenants, whose buckets start full.
--
\set SHOW_CONTEXT never
SELECT backend, slots FROM agentidp.rate_limit_status();

-- A refusal as one line: SQLSTATE, message and detail, ids masked, and
-- a wait of 100 seconds or more rounded to ten, as a slow machine may take
-- a second between the first request of a bucket and the refused one.
CREATE FUNCTION pg_temp.attempt(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	state text;
	msg text;
	detail text;
	secs text[];
BEGIN
	EXECUTE q;
	RETURN 'passed';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	secs := regexp_match(detail, 'retry after ([0-9]+) second');
	IF secs[1]::int >= 100 THEN
		detail := replace(detail, 'after ' || secs[1], 'after ~' || round(secs[1]::int, -1));
	END IF;
	RETURN state || ': ' || regexp_replace(regexp_replace(msg || COALESCE(' / ' || NULLIF(detail, ''), ''),
		'[0-9a-f]{32}', '<client_id>', 'g'), '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.attempt(text) TO PUBLIC;

-- a new agent of a tenant with a client secret
CREATE FUNCTION pg_temp.client(tenant uuid, name text, OUT agent uuid, OUT id text, OUT secret text)
LANGUAGE sql AS $$
	SELECT a, c.client_id, c.client_secret
	FROM agentidp.register_agent(tenant, name, '{read}') AS a, agentidp.create_client_secret(a) AS c
$$;
GRANT EXECUTE ON FUNCTION pg_temp.client(uuid, text) TO PUBLIC;

--
-- Settings: "unlimited" or "<count>/<period>", a period of 1 s to 1 day,
-- at most one request per microsecond
--
SELECT v, agentidp._valid_rate_limit(v) AS valid
FROM unnest(ARRAY['unlimited', '100/min', '10/s', '5000/h', '1/d', '20/15min', '3/2second',
				  '7/minute', '24/hour', '1/day', '1000000/s', '1000000000/d',
				  'Unlimited', '0/min', '-1/min', '100', '100/', '/min', '100/mins', '100 /min',
				  '100/0min', '2/25h', '1000001/s', '01/s', '1/05s', '1/ms', '']) AS v;

SET agentidp.token_rate_limit = '100 per minute';
SET agentidp.tenant_token_rate_limit = '1/month';
SET agentidp.redis_timeout = 0;
-- a bad URL is refused without being quoted: it may hold a password
SET agentidp.redis_url = 'redis://:hunter2@bad_host:6379';
SET agentidp.redis_url = 'https://cache.example:6379';
SET agentidp.redis_url = 'redis://user@cache.example';
SET agentidp.redis_url = 'redis://cache.example:99999';
SET agentidp.redis_url = 'redis://cache.example/zero';
SET agentidp.redis_url = 'redis://:pw%zz@cache.example';
-- an IPv6 address in brackets
SET agentidp.redis_url = 'redis://::1:6379';
SET agentidp.redis_url = 'redis://[::1';
SET agentidp.redis_url = 'redis://[cache.example]:6379';
SET agentidp.redis_url = 'redis://[::1]6379';
SET agentidp.redis_url = 'redis://:hunter2@[2001:db8::7]:6380/2';
SELECT backend FROM agentidp.rate_limit_status();
RESET agentidp.redis_url;
-- a Unix socket: an absolute path that fits sockaddr_un, then at most ?db=N
SET agentidp.redis_url = 'unix://redis.sock';
SET agentidp.redis_url = 'unix:///';
SET agentidp.redis_url = 'unix:///run/redis.sock?database=1';
SET agentidp.redis_url = 'unix:///run/redis.sock?db=1&db=2';
SET agentidp.redis_url = 'unix://:hunter2@/run/redis.sock?db=x';
SELECT set_config('agentidp.redis_url', 'unix:///' || repeat('d', 106), false) IS NOT NULL AS longest_path;
SELECT set_config('agentidp.redis_url', 'unix:///' || repeat('d', 107), false);
SET agentidp.redis_url = 'unix://:hunter2@/run/redis/redis.sock?db=3';
SELECT backend FROM agentidp.rate_limit_status();
RESET agentidp.redis_url;
SET ROLE regress_service;
SET agentidp.redis_url = 'redis://127.0.0.1:6379';
SET agentidp.token_rate_limit = 'unlimited';
SHOW agentidp.redis_url;
SHOW agentidp.token_rate_limit;
RESET ROLE;

--
-- Two tenants: lim-a with settings, lim-b without
--
SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('lim-a') AS ta \gset
SELECT agentidp.create_tenant('lim-b') AS tb \gset
SELECT agentidp.rotate_signing_key(:'ta') IS NOT NULL AND agentidp.rotate_signing_key(:'tb') IS NOT NULL AS keyed;
SELECT * FROM pg_temp.client(:'ta', 'worker') \gset w_
SELECT * FROM pg_temp.client(:'ta', 'helper') \gset h_
SELECT * FROM pg_temp.client(:'ta', 'free') \gset f_
SELECT * FROM pg_temp.client(:'ta', 'cycler') \gset c_
SELECT * FROM pg_temp.client(:'tb', 'plain') \gset p_
SELECT * FROM pg_temp.client(:'tb', 'web') \gset web_
SELECT * FROM pg_temp.client(:'tb', 'guc') \gset g_

-- an agent's own limit, set by an administrator of its tenant
SELECT agentidp.set_token_rate_limit(:'w_agent', '2/h');
SELECT agentidp.set_token_rate_limit(:'f_agent', 'unlimited');
SELECT agentidp.set_token_rate_limit(:'web_agent', '1/h');
SELECT agentidp.set_token_rate_limit(:'c_agent', '2/h');
SELECT name, token_rate_limit FROM agentidp.agents WHERE tenant_id IN (:'ta', :'tb') ORDER BY name;
SELECT agentidp.set_token_rate_limit(:'w_agent', '2 per hour');
SELECT agentidp.set_token_rate_limit(NULL, '2/h');
SELECT agentidp.set_token_rate_limit('00000000-0000-0000-0000-000000000000', '2/h');
-- the CHECK constraint, for a direct UPDATE
UPDATE agentidp.agents SET token_rate_limit = 'lots' WHERE agent_id = :'w_agent';
-- the tenant's: its clients' default, and all of them together
UPDATE agentidp.tenants SET settings = settings || '{"token_rate_limit": 100}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"tenant_token_rate_limit": "fast"}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = settings || '{"token_rate_limit": null}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants
   SET settings = settings || '{"token_rate_limit": "1/h", "tenant_token_rate_limit": "4/h"}'
 WHERE tenant_id = :'ta';
RESET ROLE;
-- only an administrator of the agent's tenant, and no other role
SET ROLE regress_admin_b;
SELECT pg_temp.attempt(format('SELECT agentidp.set_token_rate_limit(%L, %L)', :'w_agent', 'unlimited'));
RESET ROLE;
SET ROLE regress_service;
SELECT pg_temp.attempt(format('SELECT agentidp.set_token_rate_limit(%L, %L)', :'w_agent', 'unlimited'));
RESET ROLE;

--
-- Issuance in lim-a: the agent's own limit wins over the tenant's
-- default for clients, "unlimited" lifts it, and the tenant's limit counts
-- every client's tokens.  A request refused by one limit takes nothing
-- from the other.
--
SET ROLE regress_service;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'w_id', :'w_secret')) AS worker_1,
	   pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'w_id', :'w_secret')) AS worker_2;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'w_id', :'w_secret')) AS worker_3;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'h_id', :'h_secret')) AS helper_1;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'h_id', :'h_secret')) AS helper_2;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'f_id', :'f_secret')) AS free_1;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'f_id', :'f_secret')) AS free_2;
-- a direct call refused: 53400, rolled back with its transaction
\set VERBOSITY sqlstate
SELECT agentidp.issue_token(:'f_id', :'f_secret');
\set VERBOSITY default
RESET ROLE;

-- that refusal was queued, and reaches lim-a's audit log when drained
SELECT agentidp.drain_refusals() > 0 AS drained;
SELECT detail::jsonb ->> 'error' AS error, detail::jsonb ->> 'path' AS path,
	   regexp_replace(detail::jsonb ->> 'error_description', '[0-9a-f]{32}', '<client_id>') AS description
FROM agentidp.audit_events
WHERE tenant_id = :'ta' AND action = 'token.refused' ORDER BY seq;

-- the tenant's limit lifted: an unlimited client issues again
SET ROLE regress_admin_a;
UPDATE agentidp.tenants SET settings = settings || '{"tenant_token_rate_limit": "unlimited"}'
 WHERE tenant_id = :'ta';
RESET ROLE;
SET ROLE regress_service;
SELECT count(agentidp.issue_token(:'f_id', :'f_secret')) AS free_tokens FROM generate_series(1, 5);
RESET ROLE;

--
-- Refresh tokens count too; a refused refresh rolls back, so the refresh
-- token is still good once the limit allows
--
SET ROLE regress_admin_a;
UPDATE agentidp.tenants SET settings = settings || '{"refresh_tokens": true}' WHERE tenant_id = :'ta';
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.issue_token(:'c_id', :'c_secret') ->> 'refresh_token' AS rt \gset
SELECT agentidp.refresh_token(:'rt', :'c_id', :'c_secret') ->> 'refresh_token' AS rt2 \gset
SELECT pg_temp.attempt(format('SELECT agentidp.refresh_token(%L, %L, %L)', :'rt2', :'c_id', :'c_secret')) AS refresh;
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.set_token_rate_limit(:'c_agent', 'unlimited');
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.refresh_token(:'rt2', :'c_id', :'c_secret') ? 'access_token' AS refreshed_later;
RESET ROLE;

--
-- lim-b has no settings: agentidp.token_rate_limit applies (100/min by
-- default), or the agent's own.  The token endpoint answers a refusal
-- with 429, the OAuth error temporarily_unavailable and the headers, and
-- audits it.
--
SET ROLE regress_service;
SELECT r ->> 'status' AS status, (r -> 'headers') - 'RateLimit-Reset' AS headers,
	   (r #>> '{headers,RateLimit-Reset}')::int BETWEEN 1 AND 2 AS reset_in_a_second
FROM agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'p_id', 'client_secret', :'p_secret')) AS r;
SELECT r ->> 'status' AS status, r -> 'headers' AS headers
FROM agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'web_id', 'client_secret', :'web_secret')) AS r;
SELECT r ->> 'status' AS status,
	   replace((r -> 'body')::text, :'web_id', '<client_id>') AS body,
	   (r -> 'headers') - 'Retry-After' - 'RateLimit-Reset' AS headers,
	   round((r #>> '{headers,Retry-After}')::int, -1) AS retry_after,
	   round((r #>> '{headers,RateLimit-Reset}')::int, -1) AS reset
FROM agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'web_id', 'client_secret', :'web_secret')) AS r;
-- in a batch, each answer has its own headers
SELECT status, headers ? 'Retry-After' AS refused, headers ->> 'RateLimit-Limit' AS "limit"
FROM agentidp.token_endpoint_batch(jsonb_build_array(
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'web_id', 'client_secret', :'web_secret'),
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'p_id', 'client_secret', :'p_secret'),
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'p_id', 'client_secret', 'wrong')));
RESET ROLE;
SELECT action, result, detail::jsonb ->> 'error' AS error, detail::jsonb ->> 'client_id' = :'web_id' AS client,
	   regexp_replace(detail::jsonb ->> 'error_description', '[0-9a-f]{32}', '<client_id>') AS description
FROM agentidp.audit_events WHERE tenant_id = :'tb' AND action = 'token.refused' ORDER BY seq;
SELECT ok FROM agentidp.verify_audit_chain(:'tb');

-- the GUC, as in effect in the issuing session
SET agentidp.token_rate_limit = '1/h';
SET ROLE regress_service;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'g_id', :'g_secret')) AS guc_1,
	   pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'g_id', :'g_secret')) AS guc_2;
RESET ROLE;
SET agentidp.token_rate_limit = 'unlimited';
SET ROLE regress_service;
SELECT pg_temp.attempt(format('SELECT agentidp.issue_token(%L, %L)', :'g_id', :'g_secret')) AS guc_unlimited;
-- no limit, no headers
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'p_id', 'client_secret', :'p_secret')) ? 'headers' AS headers;
RESET ROLE;
RESET agentidp.token_rate_limit;

--
-- check_rate and require_rate: keys of the identity's tenant
--
SET ROLE regress_service;
SELECT agentidp.issue_token(:'f_id', :'f_secret') ->> 'access_token' AS tok_a \gset
SELECT agentidp.issue_token(:'p_id', :'p_secret') ->> 'access_token' AS tok_b \gset

-- no identity: no tenant to count the key in
SELECT pg_temp.attempt('SELECT agentidp.check_rate(''login'', 3, ''1 hour'')') AS no_identity;

BEGIN;
SELECT agentidp.authenticate(:'tok_a') ->> 'tenant_id' = :'ta' AS tenant_a;
SELECT i, agentidp.check_rate('login', 3, '1 hour') FROM generate_series(1, 5) AS i;
SELECT agentidp.check_rate('another key', 1, '1 hour') AS other_key;
-- require_rate: the second call within the minute is refused
SELECT pg_temp.attempt('SELECT agentidp.require_rate(''pay'', 1, ''1 min'') FROM generate_series(1, 2)') AS require;
SELECT pg_temp.attempt('SELECT agentidp.require_rate(''poll'', 5, ''500 ms'') FROM generate_series(1, 6)') AS require_ms;
\set VERBOSITY sqlstate
SELECT agentidp.require_rate('pay', 1, '1 min');
\set VERBOSITY default
ROLLBACK;

-- the same key in another tenant is another bucket; an aborted
-- transaction does not give back what it used
BEGIN;
SELECT agentidp.authenticate(:'tok_b') ->> 'tenant_id' = :'tb' AS tenant_b;
SELECT agentidp.check_rate('login', 3, '1 hour') AS login_in_b;
ROLLBACK;
BEGIN;
SELECT agentidp.authenticate(:'tok_a') IS NOT NULL AS again_a;
SELECT agentidp.check_rate('login', 3, '1 hour') AS login_in_a_still_refused;

-- argument errors
SELECT pg_temp.attempt(q) AS error FROM unnest(ARRAY[
	'SELECT agentidp.check_rate(NULL, 1, ''1 min'')',
	'SELECT agentidp.check_rate(''k'', NULL, ''1 min'')',
	'SELECT agentidp.require_rate(''k'', 1, NULL)',
	'SELECT agentidp.check_rate('''', 1, ''1 min'')',
	'SELECT agentidp.check_rate(repeat(''k'', 257), 1, ''1 min'')',
	'SELECT agentidp.check_rate(E''a\nb'', 1, ''1 min'')',
	'SELECT agentidp.check_rate(''k'', 0, ''1 min'')',
	'SELECT agentidp.check_rate(''k'', 1000000001, ''1 min'')',
	'SELECT agentidp.check_rate(''k'', 1, ''0'')',
	'SELECT agentidp.check_rate(''k'', 1, ''-1 min'')',
	'SELECT agentidp.check_rate(''k'', 1, ''0.5 ms'')',
	'SELECT agentidp.check_rate(''k'', 1, ''25 hours'')',
	'SELECT agentidp.check_rate(''k'', 1, ''1 month'')',
	'SELECT agentidp.check_rate(''k'', 2000, ''1 ms'')']) AS q;
SELECT length(repeat('k', 256)) AS longest_key, agentidp.check_rate(repeat('k', 256), 1, '1 day') AS accepted;
COMMIT;
RESET ROLE;

-- who may call what
SET ROLE regress_outsider;
\set VERBOSITY terse
SELECT agentidp.check_rate('k', 1, '1 min');
SELECT agentidp.rate_limit_status();
SELECT agentidp.set_token_rate_limit(:'w_agent', NULL);
\set VERBOSITY default
RESET ROLE;

-- the table holds this test's keys
SELECT backend, used >= 10 AS has_keys FROM agentidp.rate_limit_status();
