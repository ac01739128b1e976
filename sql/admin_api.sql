--
-- The admin REST API (agentidp--0.7--0.8.sql): admin_api() as the HTTP
-- front calls it, as agentidp_service.  Every route, paging and filters,
-- each refusal once, tokens of the wrong kind, and another tenant's rows
-- out of reach whatever the request names.  Ids, times and secrets change
-- from run to run: answers are shown through mask().
--
\set SHOW_CONTEXT never
SELECT agentidp.create_tenant('adm') AS t \gset
SELECT agentidp.create_tenant('adm-other') AS t2 \gset
SELECT agentidp.rotate_signing_key(:'t') IS NOT NULL AND agentidp.rotate_signing_key(:'t2') IS NOT NULL AS keyed;
SELECT agentidp.register_agent(:'t', 'boss', '{agentidp:admin,read}') AS boss_id \gset
SELECT client_id AS boss_cid, client_secret AS boss_secret FROM agentidp.create_client_secret(:'boss_id') \gset
SELECT agentidp.register_agent(:'t', 'deputy', '{agentidp:admin}') AS deputy_id \gset
SELECT client_id AS deputy_cid, client_secret AS deputy_secret FROM agentidp.create_client_secret(:'deputy_id') \gset
SELECT agentidp.register_agent(:'t', 'reader', '{read}') AS reader_id \gset
SELECT client_id AS reader_cid, client_secret AS reader_secret FROM agentidp.create_client_secret(:'reader_id') \gset
SELECT agentidp.register_agent(:'t2', 'stranger', '{agentidp:admin}') AS stranger_id \gset
SELECT client_id AS stranger_cid, client_secret AS stranger_secret FROM agentidp.create_client_secret(:'stranger_id') \gset
SELECT agentidp.create_role(:'t2', 'elsewhere', '{x}') IS NOT NULL AS other_role;

-- names for the ids the answers show, and the masks for the rest
CREATE TABLE admin_names (id text PRIMARY KEY, label text NOT NULL);
GRANT SELECT, INSERT ON admin_names TO PUBLIC;
INSERT INTO admin_names VALUES (:'boss_id', '<boss>'), (:'deputy_id', '<deputy>'), (:'reader_id', '<reader>'),
	(:'stranger_id', '<stranger>'), (:'boss_cid', '<boss_cid>');
CREATE FUNCTION mask(r jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	s text := r::text;
	n record;
BEGIN
	FOR n IN SELECT * FROM admin_names LOOP
		s := replace(s, n.id, n.label);
	END LOOP;
	s := regexp_replace(s, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
	s := regexp_replace(s, '\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?\+00(:00)?', '<time>', 'g');
	s := regexp_replace(s, 'aidp_sk_[A-Za-z0-9_-]{43}', '<secret>', 'g');
	s := regexp_replace(s, '"hint": "[^"]{4}"', '"hint": "<hint>"', 'g');
	s := regexp_replace(s, '"[0-9a-f]{32}"', '"<hex32>"', 'g');
	s := regexp_replace(s, '"[0-9a-f]{64}"', '"<hex64>"', 'g');
	RETURN s::jsonb;
END
$$;
-- one request as the front makes it; raw() keeps what mask() hides
CREATE FUNCTION raw(method text, path text, token text, body text DEFAULT NULL, query jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE sql AS $$
	SELECT agentidp.admin_api(method, path, query, body, 'Bearer ' || token, '198.51.100.7', 'req-admin')
$$;
CREATE FUNCTION api(method text, path text, token text, body text DEFAULT NULL, query jsonb DEFAULT '{}',
					OUT status int, OUT headers jsonb, OUT body jsonb)
LANGUAGE sql AS $$
	SELECT (m ->> 'status')::int, m -> 'headers', m -> 'body'
	FROM mask(raw(method, path, token, body, query)) AS m
$$;
-- a list's item names, sorted, and its cursor
CREATE FUNCTION names(r jsonb) RETURNS text[]
LANGUAGE sql AS $$
	SELECT array_agg(x ->> 'name' ORDER BY x ->> 'name') FROM jsonb_array_elements(r #> '{body,items}') AS x
$$;
-- tokens with chosen claims, signed with the tenant's key (superusers only)
CREATE FUNCTION forge(tenant uuid, agent uuid, changes jsonb) RETURNS text
LANGUAGE sql AS $$
	SELECT agentidp._sign_with_tenant_key(tenant,
		jsonb_build_object('iss', (SELECT issuer FROM agentidp.tenants WHERE tenant_id = tenant),
			'sub', agent, 'aud', (SELECT issuer FROM agentidp.tenants WHERE tenant_id = tenant),
			'exp', extract(epoch FROM now())::bigint + 300, 'iat', extract(epoch FROM now())::bigint,
			'jti', md5(random()::text), 'client_id', 'x', 'tenant_id', tenant,
			'scope', 'agentidp:admin') || changes, '{"typ": "at+jwt"}')
$$;
SELECT forge(:'t', :'boss_id', jsonb_build_object('exp', extract(epoch FROM now())::bigint - 3600)) AS expired \gset

SET ROLE agentidp_service;
SELECT agentidp.issue_token(:'boss_cid', :'boss_secret') ->> 'access_token' AS boss \gset
SELECT agentidp.issue_token(:'boss_cid', :'boss_secret', 'read') ->> 'access_token' AS boss_read \gset
SELECT agentidp.issue_token(:'boss_cid', :'boss_secret', NULL, 'https://api.example.com') ->> 'access_token' AS boss_api \gset
SELECT agentidp.issue_token(:'deputy_cid', :'deputy_secret') ->> 'access_token' AS deputy \gset
SELECT agentidp.issue_token(:'reader_cid', :'reader_secret') ->> 'access_token' AS reader \gset
SELECT agentidp.issue_token(:'stranger_cid', :'stranger_secret') ->> 'access_token' AS stranger \gset

--
-- Who may call: a Bearer token of an agent with agentidp:admin, verified
-- as everywhere, for the tenant's default audience
--
SELECT * FROM api('GET', '/agents', NULL);
SELECT m -> 'status' AS status, m #>> '{body,detail}' AS detail, m #>> '{headers,WWW-Authenticate}' AS challenge
FROM agentidp.admin_api('GET', '/agents', '{}', NULL, 'Basic eDp5', NULL, NULL) AS m;
SELECT m -> 'status' AS status, m #>> '{body,detail}' AS detail, m #>> '{headers,WWW-Authenticate}' AS challenge
FROM agentidp.admin_api('GET', '/agents', '{}', NULL, 'Bearer', NULL, NULL) AS m;
SELECT m -> 'status' AS status, m #>> '{body,detail}' AS detail, m #>> '{headers,WWW-Authenticate}' AS challenge
FROM agentidp.admin_api('GET', '/agents', '{}', NULL, 'Bearer not.a.token', NULL, NULL) AS m;
SELECT m -> 'status' AS status, m #>> '{body,detail}' AS detail
FROM agentidp.admin_api('GET', '/agents', '{}', NULL, 'DPoP ' || :'boss', NULL, NULL) AS m;
-- the scheme is case-insensitive
SELECT m -> 'status' AS status FROM agentidp.admin_api('GET', '/agents', '{}', NULL, 'bEaReR ' || :'boss', NULL, NULL) AS m;
-- without the scope
SELECT status, headers, body ->> 'detail' AS detail FROM api('GET', '/agents', :'reader');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss_read');
-- a token for another audience, an expired one
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss_api');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'expired');
-- each 403 is audited (0.15) in the tenant's chain, naming the agent that
-- asked, its client and request; a 401 has no identity, and is not
SELECT x ->> 'action' AS action, x ->> 'result' AS result, x ->> 'resource' AS resource,
	   CASE x #>> '{actor,agent}' WHEN :'reader_id' THEN 'reader' WHEN :'boss_id' THEN 'boss' END AS actor,
	   x ->> 'client_addr' AS client_addr, x ->> 'trace_id' AS trace_id, x -> 'detail' AS detail
FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL, '{"action": "admin.refused"}') #> '{body,items}') AS x
ORDER BY (x ->> 'seq')::bigint;

--
-- Routing
--
SELECT status, body FROM api('GET', '/nothing', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents/', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents/not-a-uuid', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents/' || upper(:'boss_id'), :'boss');
SELECT status, headers, body FROM api('PUT', '/agents', :'boss');
SELECT status, headers ->> 'Allow' AS allow FROM api('POST', '/audit', :'boss', '{}');
SELECT status, headers ->> 'Allow' AS allow FROM api('GET', '/agents/' || :'boss_id' || '/secrets', :'boss');
SELECT status, headers ->> 'Allow' AS allow FROM api('get', '/roles', :'boss');
-- query parameters only for lists, bodies only for POST and PATCH
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents/' || :'boss_id', :'boss', NULL, '{"x": "1"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', '{}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', NULL, '["limit"]');

--
-- Agents
--
SELECT status, names(raw('GET', '/agents', :'boss')) FROM api('GET', '/agents', :'boss');
SELECT raw('HEAD', '/agents', :'boss') = raw('GET', '/agents', :'boss') AS head_is_get;
SELECT * FROM api('POST', '/agents', :'boss',
	'{"name": "worker", "allowed_scopes": ["write", "read", "read"], "metadata": {"team": "ops"}}');
SELECT raw('GET', '/agents', :'boss', NULL, '{"limit": "500"}') #>> '{body,items}' LIKE '%worker%' AS listed;
SELECT x ->> 'id' AS worker FROM jsonb_array_elements(raw('GET', '/agents', :'boss') #> '{body,items}') AS x
WHERE x ->> 'name' = 'worker' \gset
INSERT INTO admin_names VALUES (:'worker', '<worker>');
SELECT * FROM api('GET', '/agents/' || :'worker', :'boss');
-- refused creations
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": "worker"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": " padded"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": 7}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"display_name": "x"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"allowed_scopes": []}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": "a", "allowed_scopes": "read"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": "a", "allowed_scopes": ["a b"]}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": "a", "metadata": [1]}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', NULL);
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": "a"');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '["name"]');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": "a", "name": "b"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss',
	'{"name": "a", "metadata": {"x": {"y": 1, "y": 2}}}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss',
	'{"name": "a", "metadata": {"x": ' || repeat('[', 40) || repeat(']', 40) || '}}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss', '{"name": "a\u0000"}');
-- changes
SELECT * FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"allowed_scopes": ["read"], "metadata": {"team": "dev"}, "status": "suspended"}');
SELECT status, body ->> 'status' AS agent_status FROM api('PATCH', '/agents/' || :'worker', :'boss', '{"status": "active"}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss', '{"status": "deleted"}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss', '{"name": "renamed"}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss', '{"metadata": null}');
-- a refused change changes nothing: the scopes stay as they were
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"allowed_scopes": ["admin"], "status": "gone"}');
SELECT body -> 'allowed_scopes' AS unchanged FROM api('GET', '/agents/' || :'worker', :'boss');
-- limits (0.14): what set_token_rate_limit and set_daily_caps set; what a
-- patch does not name stays; a refused limit changes nothing
SELECT status, body -> 'limits' AS limits FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"token_rate_limit": "10/min", "daily_action_cap": 100, "daily_spend_limit": 25.50, "spend_currency": "EUR"}}');
SELECT status, body -> 'limits' AS limits FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"daily_action_cap": null, "token_rate_limit": "unlimited"}}');
SELECT status, body -> 'limits' AS limits FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"token_rate_limit": null, "daily_spend_limit": null, "spend_currency": "USD"}}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"token_rate_limit": "fast"}, "metadata": {"team": "limits"}}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"daily_action_cap": -1}}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"daily_action_cap": 1.5}}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"daily_spend_limit": "5"}}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"spend_currency": "euro"}}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limits": {"monthly_token_quota": 5}}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss', '{"limits": []}');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss',
	'{"limit": {}}');
SELECT body -> 'metadata' AS metadata_unchanged, body -> 'limits' AS limits_unchanged
FROM api('GET', '/agents/' || :'worker', :'boss');
-- created with limits; a refused limit creates nothing
SELECT status, body ->> 'name' AS name, body -> 'limits' AS limits FROM api('POST', '/agents', :'boss',
	'{"name": "capped", "limits": {"daily_action_cap": 3}}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents', :'boss',
	'{"name": "never", "limits": {"token_rate_limit": "0/min"}}');
SELECT 'never' = ANY (names(raw('GET', '/agents', :'boss', NULL, '{"limit": "500"}'))) AS never_created;
-- an admin suspends another admin, whose token then fails, and back
SELECT status FROM api('PATCH', '/agents/' || :'deputy_id', :'boss', '{"status": "suspended"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'deputy');
SELECT status FROM api('PATCH', '/agents/' || :'deputy_id', :'boss', '{"status": "active"}');
SELECT status FROM api('GET', '/agents', :'deputy');
-- deletion
SELECT * FROM api('DELETE', '/agents/' || :'worker', :'boss');
SELECT status, body ->> 'status' AS agent_status, body -> 'deleted_at' IS NOT NULL AS dated
FROM api('GET', '/agents/' || :'worker', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('DELETE', '/agents/' || :'worker', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('PATCH', '/agents/' || :'worker', :'boss', '{"status": "active"}');

-- lists: without deleted agents unless asked, paged in id order
SELECT names(raw('GET', '/agents', :'boss')) AS live,
	   names(raw('GET', '/agents', :'boss', NULL, '{"status": "deleted"}')) AS deleted,
	   names(raw('GET', '/agents', :'boss', NULL, '{"status": "active"}')) AS active;
SELECT raw('GET', '/agents', :'boss', NULL, '{"limit": "2"}') AS p1 \gset
SELECT raw('GET', '/agents', :'boss', NULL, jsonb_build_object('limit', '2', 'cursor', :'p1'::jsonb #>> '{body,next_cursor}')) AS p2 \gset
SELECT jsonb_array_length(:'p1'::jsonb #> '{body,items}') AS page1,
	   :'p1'::jsonb #>> '{body,next_cursor}' = :'p1'::jsonb #>> '{body,items,1,id}' AS cursor_is_last_id,
	   jsonb_array_length(:'p2'::jsonb #> '{body,items}') AS page2,
	   :'p2'::jsonb #> '{body,next_cursor}' AS end_of_list,
	   (SELECT array_agg(n ORDER BY n) FROM unnest(names(:'p1') || names(:'p2')) AS n) AS both_pages;
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', NULL, '{"status": "gone"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', NULL, '{"limit": "0"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', NULL, '{"limit": "501"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', NULL, '{"limit": "ten"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', NULL, '{"cursor": "x"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'boss', NULL, '{"order": "name"}');

--
-- Credentials
--
SELECT raw('POST', '/agents/' || :'reader_id' || '/secrets', :'boss') AS sec \gset
SELECT * FROM mask(:'sec');
SELECT :'sec'::jsonb #>> '{body,client_secret}' AS new_secret, :'sec'::jsonb #>> '{body,id}' AS secret_id \gset
INSERT INTO admin_names VALUES (:'secret_id', '<secret_id>');
-- the new secret authenticates
SELECT agentidp.check_client_secret(:'reader_cid', :'new_secret') = :'reader_id' AS authenticates;
SELECT status, body ->> 'expires_at' IS NOT NULL AS expires
FROM api('POST', '/agents/' || :'reader_id' || '/secrets', :'boss', '{"expires_in": 3600}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/secrets', :'boss', '{"expires_in": 0}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/secrets', :'boss', '{"expires_in": "1h"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/secrets', :'boss', '{"scope": "x"}');
-- a public key: its kid is its RFC 7638 thumbprint (RFC 7515 A.3's key)
SELECT * FROM api('POST', '/agents/' || :'reader_id' || '/keys', :'boss',
	'{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/keys', :'boss',
	'{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/keys', :'boss',
	'{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/keys', :'boss', '{"kty": "EC"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/keys', :'boss');
-- listed: secrets by hint, never a hash
SELECT status, jsonb_pretty(body) FROM api('GET', '/agents/' || :'reader_id' || '/credentials', :'boss');
SELECT raw('GET', '/agents/' || :'reader_id' || '/credentials', :'boss')::text LIKE '%' || :'new_secret' || '%' AS secret_listed;
SELECT status, body FROM api('GET', '/agents/' || :'reader_id' || '/credentials/' || :'secret_id', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents/' || :'reader_id' || '/credentials/' || :'t', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents/' || :'reader_id' || '/credentials/x', :'boss');
-- revocation
SELECT x ->> 'id' AS key_id FROM jsonb_array_elements(raw('GET', '/agents/' || :'reader_id' || '/credentials', :'boss') #> '{body,items}') AS x
WHERE x ->> 'kind' = 'key' \gset
SELECT * FROM api('DELETE', '/agents/' || :'reader_id' || '/credentials/' || :'secret_id', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('DELETE', '/agents/' || :'reader_id' || '/credentials/' || :'secret_id', :'boss');
SELECT status FROM api('DELETE', '/agents/' || :'reader_id' || '/credentials/' || :'key_id', :'boss');
SELECT x ->> 'kind' AS kind, x -> 'active' AS active, x ->> 'revoked_at' IS NOT NULL AS revoked
FROM jsonb_array_elements(raw('GET', '/agents/' || :'reader_id' || '/credentials', :'boss') #> '{body,items}') AS x
ORDER BY 1, 2;
\set VERBOSITY terse
SELECT agentidp.check_client_secret(:'reader_cid', :'new_secret');
\set VERBOSITY default
-- a suspended agent gets no secret
SELECT status FROM api('PATCH', '/agents/' || :'reader_id', :'boss', '{"status": "suspended"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/agents/' || :'reader_id' || '/secrets', :'boss');
SELECT status FROM api('PATCH', '/agents/' || :'reader_id', :'boss', '{"status": "active"}');

--
-- Roles
--
SELECT * FROM api('POST', '/roles', :'boss', '{"name": "ops", "scopes": ["deploy"], "description": "operators"}');
SELECT status FROM api('POST', '/roles', :'boss', '{"name": "auditors"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/roles', :'boss', '{"name": "ops"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/roles', :'boss', '{"name": "Not A Slug"}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/roles', :'boss', '{"name": "x", "description": 1}');
SELECT status, body ->> 'detail' AS detail FROM api('POST', '/roles', :'boss', '{"name": "x", "members": []}');
SELECT status, names(raw('GET', '/roles', :'boss')), body -> 'next_cursor' AS next_cursor FROM api('GET', '/roles', :'boss');
SELECT names(raw('GET', '/roles', :'boss', NULL, '{"limit": "1"}')) AS page1,
	   raw('GET', '/roles', :'boss', NULL, '{"limit": "1"}') #>> '{body,next_cursor}' AS cursor,
	   names(raw('GET', '/roles', :'boss', NULL, '{"limit": "1", "cursor": "auditors"}')) AS page2;
SELECT status, body FROM api('GET', '/roles/ops', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/roles/nope', :'boss');
-- granted: the agent's tokens may carry the role's scopes
SELECT * FROM api('PUT', '/agents/' || :'reader_id' || '/roles/ops', :'boss');
SELECT status FROM api('PUT', '/agents/' || :'reader_id' || '/roles/ops', :'boss');
SELECT body -> 'roles' AS roles FROM api('GET', '/agents/' || :'reader_id', :'boss');
SELECT agentidp.issue_token(:'reader_cid', :'reader_secret', 'deploy') ->> 'scope' AS granted_scope;
SELECT status, body ->> 'detail' AS detail FROM api('PUT', '/agents/' || :'reader_id' || '/roles/nope', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('PUT', '/agents/' || :'reader_id' || '/roles/ops', :'boss', '{}');
SELECT status FROM api('DELETE', '/agents/' || :'reader_id' || '/roles/ops', :'boss');
SELECT status FROM api('DELETE', '/agents/' || :'reader_id' || '/roles/ops', :'boss');
SELECT body -> 'roles' AS roles FROM api('GET', '/agents/' || :'reader_id', :'boss');
SELECT status FROM api('DELETE', '/roles/ops', :'boss');
SELECT status, body ->> 'detail' AS detail FROM api('DELETE', '/roles/ops', :'boss');

--
-- Another tenant: its agents and roles are unknown here, whatever the path
-- names, and nothing of it changes
--
SELECT n AS request, (api(m, p, :'boss', b)).status
FROM (VALUES (1, 'GET', '/agents/' || :'stranger_id', NULL),
			 (2, 'PATCH', '/agents/' || :'stranger_id', '{"status": "suspended"}'),
			 (3, 'DELETE', '/agents/' || :'stranger_id', NULL),
			 (4, 'GET', '/agents/' || :'stranger_id' || '/credentials', NULL),
			 (5, 'POST', '/agents/' || :'stranger_id' || '/secrets', NULL),
			 (6, 'POST', '/agents/' || :'stranger_id' || '/keys', '{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}'),
			 (7, 'PUT', '/agents/' || :'stranger_id' || '/roles/elsewhere', NULL),
			 (8, 'PUT', '/agents/' || :'reader_id' || '/roles/elsewhere', NULL),
			 (9, 'GET', '/roles/elsewhere', NULL),
			 (10, 'DELETE', '/roles/elsewhere', NULL)) AS v(n, m, p, b)
ORDER BY 1;
SELECT names(raw('GET', '/agents', :'stranger')) AS strangers_agents,
	   names(raw('GET', '/roles', :'stranger')) AS strangers_roles;
SELECT status, body ->> 'status' AS agent_status, body -> 'roles' AS roles FROM api('GET', '/agents/' || :'stranger_id', :'stranger');
SELECT (api('GET', '/agents/' || :'boss_id', :'stranger')).status AS boss_from_elsewhere;

--
-- The audit log: the tenant's events, newest first, each change naming
-- the agent that made it, the client's address and the request id
--
SELECT x ->> 'action' AS action, x ->> 'resource' AS resource, x ->> 'result' AS result,
	   mask(x -> 'actor') AS actor, x ->> 'client_addr' AS client_addr, x ->> 'trace_id' AS trace_id
FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL, '{"limit": "6"}') #> '{body,items}') AS x;
SELECT raw('GET', '/audit', :'boss', NULL, '{"limit": "500"}') AS all_events \gset
SELECT count(*) > 30 AS many, bool_and((x ->> 'seq')::bigint < lag_seq) AS newest_first
FROM (SELECT x, lag((x ->> 'seq')::bigint) OVER () AS lag_seq
	  FROM jsonb_array_elements(:'all_events'::jsonb #> '{body,items}') AS x) AS s;
SELECT jsonb_object_keys(:'all_events'::jsonb #> '{body,items,0}') AS member ORDER BY 1;
-- filters
SELECT count(*) AS boss_updates, count(*) FILTER (WHERE x -> 'actor' ->> 'agent' = :'boss_id') AS all_by_boss
FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL,
	jsonb_build_object('agent', :'boss_id', 'action', 'update', 'limit', '500')) #> '{body,items}') AS x;
SELECT count(*) AS deputy_rows
FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL, jsonb_build_object('agent', :'deputy_id')) #> '{body,items}');
SELECT DISTINCT x ->> 'action' AS action, mask(x -> 'actor' -> 'agent') AS agent
FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL, jsonb_build_object('agent', :'boss_id', 'limit', '500')) #> '{body,items}') AS x
ORDER BY 1;
SELECT count(*) AS token_issues
FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL, '{"action": "token.issue"}') #> '{body,items}');
SELECT jsonb_array_length(raw('GET', '/audit', :'boss', NULL, '{"since": "2999-01-01T00:00:00Z"}') #> '{body,items}') AS future,
	   jsonb_array_length(raw('GET', '/audit', :'boss', NULL, '{"until": "2000-01-01T00:00:00+00:00"}') #> '{body,items}') AS past,
	   jsonb_array_length(raw('GET', '/audit', :'boss', NULL,
			jsonb_build_object('since', now() - interval '1 hour', 'until', now() + interval '1 hour', 'limit', '500')) #> '{body,items}')
		= jsonb_array_length(:'all_events'::jsonb #> '{body,items}') AS this_hour;
-- paging by seq
SELECT raw('GET', '/audit', :'boss', NULL, '{"limit": "3"}') AS a1 \gset
SELECT (:'a1'::jsonb #>> '{body,next_cursor}')::bigint = (:'a1'::jsonb #>> '{body,items,2,seq}')::bigint AS cursor_is_last_seq,
	   (SELECT bool_and((x ->> 'seq')::bigint < (:'a1'::jsonb #>> '{body,next_cursor}')::bigint)
		FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL,
			jsonb_build_object('cursor', :'a1'::jsonb #>> '{body,next_cursor}')) #> '{body,items}') AS x) AS older;
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/audit', :'boss', NULL, '{"agent": "boss"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/audit', :'boss', NULL, '{"since": "last week"}');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/audit', :'boss', NULL, '{"cursor": "-1"}');
-- another tenant's log holds none of this
SELECT count(*) FILTER (WHERE x -> 'actor' ->> 'agent' = :'boss_id') AS boss_rows_elsewhere
FROM jsonb_array_elements(raw('GET', '/audit', :'stranger', NULL, '{"limit": "500"}') #> '{body,items}') AS x;
-- refusals write nothing, but for a 403's own row (0.15)
SELECT :'all_events'::jsonb #>> '{body,items,0,seq}' AS head \gset
SELECT (api('POST', '/agents', :'boss', '{"name": "boss"}')).status AS refused;
SELECT raw('GET', '/audit', :'boss', NULL, '{"limit": "1"}') #>> '{body,items,0,seq}' = :'head' AS nothing_written;
SELECT (api('GET', '/agents', :'reader')).status AS refused;
SELECT x ->> 'action' AS action, (x ->> 'seq')::bigint - :'head'::bigint AS rows_written
FROM jsonb_array_elements(raw('GET', '/audit', :'boss', NULL, '{"limit": "1"}') #> '{body,items}') AS x;
RESET ROLE;
-- as the table has it
SELECT actor_agent = :'boss_id' AS by_boss, actor_role, action, resource, client_addr, trace_id
FROM agentidp.audit_events WHERE tenant_id = :'t' AND resource = 'agentidp.roles' ORDER BY seq;

-- revoked: the token fails at once
SET ROLE agentidp_service;
SELECT agentidp.issue_token(:'deputy_cid', :'deputy_secret') ->> 'access_token' AS deputy2 \gset
SELECT agentidp.revoke_token(:'deputy');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'deputy');
-- an admin may delete itself; its other token then fails too
SELECT status FROM api('DELETE', '/agents/' || :'deputy_id', :'deputy2');
SELECT status, body ->> 'detail' AS detail FROM api('GET', '/agents', :'deputy2');
RESET ROLE;

--
-- Only the front's role may call it; the helpers are nobody's
--
SET ROLE regress_admin_a;
\set VERBOSITY terse
SELECT agentidp.admin_api('GET', '/agents', '{}', NULL, NULL, NULL, NULL);
RESET ROLE;
SET ROLE agentidp_service;
SELECT agentidp._admin_agents(:'t', 'GET', NULL, '{}', NULL);
SELECT agentidp._admin_audit(:'t', '{}');
\set VERBOSITY default
RESET ROLE;
SELECT p.proname FROM pg_proc p
WHERE p.pronamespace = 'agentidp'::regnamespace AND p.proname LIKE '\_admin%'
  AND has_function_privilege('agentidp_service', p.oid, 'EXECUTE')
ORDER BY 1;
