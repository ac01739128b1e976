--
-- The token service (src/tokens.c): the client-credentials grant, access
-- tokens (RFC 9068), verification and each of its refusals, revocation,
-- introspection, refresh rotation and reuse, what is audited.
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('tok-a') AS ta \gset
SELECT agentidp.rotate_signing_key(:'ta') AS kid_a \gset
SELECT agentidp.register_agent(:'ta', 'worker', '{read,write}') AS agent \gset
SELECT agentidp.create_role(:'ta', 'auditor', '{audit:read}') IS NOT NULL AS role_made;
SELECT agentidp.grant_role(:'agent', 'auditor');
SELECT client_id AS cid, client_secret AS secret FROM agentidp.create_client_secret(:'agent') \gset
SELECT issuer AS iss_a FROM agentidp.tenants WHERE tenant_id = :'ta' \gset
RESET ROLE;

-- the grant, as the service role
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret') AS r \gset
SELECT :'r'::jsonb - 'access_token' AS response,
	   jsonb_typeof(:'r'::jsonb -> 'access_token') AS access_token;
RESET ROLE;
SELECT h - 'kid' AS header, h ->> 'kid' = :'kid_a' AS kid_is_active_key
FROM agentidp._jws_header(:'r'::jsonb ->> 'access_token') AS h;
SET ROLE regress_service;
SELECT c ->> 'iss' = :'iss_a' AS iss, c ->> 'sub' = :'agent' AS sub, c ->> 'aud' = :'iss_a' AS aud,
	   c ->> 'client_id' = :'cid' AS client_id, c ->> 'tenant_id' = :'ta' AS tenant_id,
	   c ->> 'scope' AS scope, c -> 'roles' AS roles,
	   (c ->> 'exp')::bigint - (c ->> 'iat')::bigint AS lifetime,
	   c ->> 'nbf' = c ->> 'iat' AS nbf_is_iat, length(c ->> 'jti') AS jti_len
FROM agentidp.verify_token(:'r'::jsonb ->> 'access_token') AS c;
-- scopes: a subset, in sorted order without duplicates; an audience
SELECT agentidp.issue_token(:'cid', :'secret', 'write audit:read write') - 'access_token' AS narrowed;
SELECT agentidp.verify_token(agentidp.issue_token(:'cid', :'secret', 'read', 'https://api.example')
	->> 'access_token', 'https://api.example') ->> 'aud' AS aud;

-- client authentication failures all look the same
\set VERBOSITY sqlstate
SELECT agentidp.issue_token('nobody', :'secret');
SELECT agentidp.issue_token(:'cid', 'aidp_sk_' || repeat('A', 43));
SELECT agentidp.issue_token(:'cid', NULL);
SELECT agentidp.issue_token(NULL, NULL);
\set VERBOSITY default
SELECT agentidp.issue_token(:'cid', 'wrong');
-- scope and audience refusals
SELECT agentidp.issue_token(:'cid', :'secret', 'admin');
SELECT agentidp.issue_token(:'cid', :'secret', 'read  write');
SELECT agentidp.issue_token(:'cid', :'secret', 'read "x"');
SELECT agentidp.issue_token(:'cid', :'secret', '');
SELECT agentidp.issue_token(:'cid', :'secret', NULL, 'has space');
RESET ROLE;

-- an expired secret, a revoked secret, a suspended agent: the same failure
SET ROLE regress_admin_a;
SELECT client_secret AS short_secret FROM agentidp.create_client_secret(:'agent', interval '1 millisecond') \gset
SELECT pg_sleep(0.01);
SELECT client_secret AS revoked_secret FROM agentidp.create_client_secret(:'agent') \gset
SELECT secret_id AS revoked_id FROM agentidp.client_secrets
WHERE agent_id = :'agent' ORDER BY created_at DESC, secret_id LIMIT 1 \gset
SELECT agentidp.revoke_client_secret(:'cid', :'revoked_id');
RESET ROLE;
SET ROLE regress_service;
\set VERBOSITY sqlstate
SELECT agentidp.issue_token(:'cid', :'short_secret');
SELECT agentidp.issue_token(:'cid', :'revoked_secret');
\set VERBOSITY default
RESET ROLE;

-- a tenant's allowed audiences
UPDATE agentidp.tenants SET settings = '{"audiences": ["https://api.example"], "access_token_lifetime": 300}'
WHERE tenant_id = :'ta';
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret', NULL, 'https://elsewhere.example');
SELECT (agentidp.issue_token(:'cid', :'secret', NULL, 'https://api.example') ->> 'expires_in') AS lifetime;
RESET ROLE;

--
-- Verification refusals.  Tokens with chosen claims are signed with the
-- tenant's key by _sign_with_tenant_key, which only superusers may call.
--
SET ROLE regress_admin_b;
SELECT agentidp.create_tenant('tok-b') AS tb \gset
SELECT agentidp.rotate_signing_key(:'tb') AS kid_b \gset
RESET ROLE;
CREATE FUNCTION pg_temp.forge(tenant uuid, changes jsonb, header jsonb DEFAULT '{"typ":"at+jwt"}')
RETURNS text LANGUAGE sql AS $$
	SELECT agentidp._sign_with_tenant_key(tenant,
		jsonb_build_object('iss', (SELECT issuer FROM agentidp.tenants WHERE tenant_id = $1),
			'sub', (SELECT agent_id::text FROM agentidp.agents WHERE name = 'worker'),
			'aud', (SELECT issuer FROM agentidp.tenants WHERE tenant_id = $1),
			'exp', extract(epoch FROM now())::bigint + 300, 'iat', extract(epoch FROM now())::bigint,
			'jti', md5(random()::text), 'client_id', 'x', 'tenant_id', $1) || changes, header)
$$;
-- (verified as a superuser: the service role may not read what forge reads)
-- a well-formed forged token verifies: the forge is faithful
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{}')) ->> 'client_id' AS forged_ok;
\set VERBOSITY terse
SELECT agentidp.verify_token(pg_temp.forge(:'ta', jsonb_build_object('exp', extract(epoch FROM now())::bigint - 120)));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', jsonb_build_object('nbf', extract(epoch FROM now())::bigint + 120)));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', jsonb_build_object('iat', extract(epoch FROM now())::bigint + 120)));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{"iss": "https://evil.example"}'));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{"aud": "https://other.example"}'));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{}'), 'https://other.example');
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{}', '{"typ": "JWT"}'));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{}', '{}'));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{}', '{"typ": "rt+jwt"}'));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{"sub": "not-an-agent"}'));
SELECT agentidp.verify_token(pg_temp.forge(:'ta', '{"exp": null}'));
-- tenant b's key over tenant a's claims; tenant a's token presented as b's
SELECT agentidp.verify_token(pg_temp.forge(:'tb', jsonb_build_object('tenant_id', :'ta')));
SELECT agentidp.verify_token(pg_temp.forge(:'tb', jsonb_build_object('iss', :'iss_a')));
-- a changed signature, an unknown key, none, garbage
SELECT agentidp.verify_token(left(:'r'::jsonb ->> 'access_token', -2) ||
	CASE WHEN right(:'r'::jsonb ->> 'access_token', 2) = 'AA' THEN 'BA' ELSE 'AA' END);
SELECT agentidp.verify_token(agentidp.jws_sign('{"sub":"x"}', agentidp.generate_jwk('ES256') || '{"kid":"unknown-kid"}', '{"typ":"at+jwt"}'));
SELECT agentidp.verify_token('eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.e30.');
SELECT agentidp.verify_token('not a token');
SELECT agentidp.verify_token(NULL);
\set VERBOSITY default
-- the attack catalogue's structural cases are covered by sql/jose_vectors.sql,
-- which runs every token of ../vectors/jwt-attacks.md through the same parser

--
-- Revocation, suspension: fail on the next statement
--
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret', 'read', 'https://api.example') ->> 'access_token' AS tok \gset
SELECT agentidp.verify_token(:'tok', 'https://api.example') ->> 'scope' AS before_revocation;
SELECT agentidp.revoke_token(:'tok', 'another-client');
SELECT agentidp.revoke_token(:'tok', :'cid');
\set VERBOSITY terse
SELECT agentidp.verify_token(:'tok', 'https://api.example');
\set VERBOSITY default
SELECT agentidp.introspect_token(:'tok');
-- revoking again, or revoking garbage, is no error (RFC 7009)
SELECT agentidp.revoke_token(:'tok');
SELECT agentidp.revoke_token('garbage');
SELECT agentidp.issue_token(:'cid', :'secret', 'read', 'https://api.example') ->> 'access_token' AS tok2 \gset
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.suspend_agent(:'agent');
RESET ROLE;
SET ROLE regress_service;
\set VERBOSITY terse
SELECT agentidp.verify_token(:'tok2', 'https://api.example');
\set VERBOSITY default
-- a suspended agent gets no token either: the same client failure
\set VERBOSITY sqlstate
SELECT agentidp.issue_token(:'cid', :'secret');
\set VERBOSITY default
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.reactivate_agent(:'agent');
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.verify_token(:'tok2', 'https://api.example') ->> 'sub' = :'agent' AS valid_again;

-- revoking the secret a token was obtained with ends the token, and the
-- refresh families it began
RESET ROLE;
UPDATE agentidp.tenants SET settings = '{"refresh_tokens": true}' WHERE tenant_id = :'ta';
SET ROLE regress_admin_a;
SELECT client_secret AS secret2 FROM agentidp.create_client_secret(:'agent') \gset
SELECT secret_id AS secret2_id FROM agentidp.client_secrets
WHERE agent_id = :'agent' ORDER BY created_at DESC, secret_id LIMIT 1 \gset
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret2') AS r_s2 \gset
SELECT agentidp.verify_token(:'r_s2'::jsonb ->> 'access_token') ->> 'cred' = 's:' || :'secret2_id' AS cred_claim;
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.revoke_client_secret(:'cid', :'secret2_id');
RESET ROLE;
SET ROLE regress_service;
\set VERBOSITY terse
SELECT agentidp.verify_token(:'r_s2'::jsonb ->> 'access_token');
\set VERBOSITY default
SELECT agentidp.refresh_token(:'r_s2'::jsonb ->> 'refresh_token', :'cid', :'secret') ->> 'error_description' AS family;
RESET ROLE;
UPDATE agentidp.tenants SET settings = '{}' WHERE tenant_id = :'ta';

-- a token revoked while its agent is suspended stays revoked
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret', 'read', 'https://api.example') ->> 'access_token' AS tok3 \gset
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.suspend_agent(:'agent');
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.revoke_token(:'tok3');
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.reactivate_agent(:'agent');
RESET ROLE;
SET ROLE regress_service;
\set VERBOSITY terse
SELECT agentidp.verify_token(:'tok3', 'https://api.example');
\set VERBOSITY default
RESET ROLE;

-- settings are checked when written
\set VERBOSITY terse
UPDATE agentidp.tenants SET settings = '{"access_token_lifetime": 300.5}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = '{"refresh_tokens": "yes"}' WHERE tenant_id = :'ta';
UPDATE agentidp.tenants SET settings = '{"audiences": ["a", 1]}' WHERE tenant_id = :'ta';
\set VERBOSITY default

-- a deleted key (say, a compromised one) ends its tokens at once, though
-- this session remembers their signatures as verified
RESET ROLE;
SELECT agentidp.create_tenant('tok-c') AS tc \gset
SELECT agentidp.rotate_signing_key(:'tc') IS NOT NULL AS keyed;
SELECT agentidp.register_agent(:'tc', 'c-worker') AS cagent \gset
SELECT client_id AS ccid, client_secret AS csecret FROM agentidp.create_client_secret(:'cagent') \gset
SELECT agentidp.issue_token(:'ccid', :'csecret') ->> 'access_token' AS ctok \gset
SELECT agentidp.verify_token(:'ctok') ->> 'sub' = :'cagent' AS verified;
DELETE FROM agentidp.signing_keys WHERE tenant_id = :'tc';
\set VERBOSITY terse
SELECT agentidp.verify_token(:'ctok');
SET agentidp.verified_token_cache = 0;
SELECT agentidp.verify_token(:'ctok');
RESET agentidp.verified_token_cache;
\set VERBOSITY default
SET ROLE regress_service;

-- introspection of a valid token: its claims plus active and token_type
SELECT i ->> 'active' AS active, i ->> 'token_type' AS token_type, i ->> 'scope' AS scope,
	   i ->> 'client_id' = :'cid' AS client_id
FROM agentidp.introspect_token(:'tok2') AS i;
SELECT agentidp.introspect_token('garbage'), agentidp.introspect_token(NULL);
RESET ROLE;

--
-- Refresh tokens: rotation, reuse revokes the family
--
UPDATE agentidp.tenants SET settings = '{"refresh_tokens": true}' WHERE tenant_id = :'ta';
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret', 'read') AS r1 \gset
SELECT :'r1'::jsonb ->> 'refresh_token' AS rt1 \gset
SELECT left(:'rt1', 8) AS prefix, length(:'rt1') AS length;
SELECT i ->> 'active' AS active, i ->> 'token_type' AS token_type, i ->> 'scope' AS scope
FROM agentidp.introspect_token(:'rt1') AS i;
SELECT agentidp.refresh_token(:'rt1', :'cid', :'secret') AS r2 \gset
SELECT :'r2'::jsonb - 'access_token' - 'refresh_token' AS rotated,
	   :'r2'::jsonb ->> 'refresh_token' <> :'rt1' AS new_refresh_token;
SELECT :'r2'::jsonb ->> 'refresh_token' AS rt2 \gset
SELECT agentidp.verify_token(:'r2'::jsonb ->> 'access_token') ->> 'scope' AS refreshed_scope;
-- the used token again: the family is revoked, rt2 with it
SELECT agentidp.refresh_token(:'rt1', :'cid', :'secret');
SELECT agentidp.refresh_token(:'rt2', :'cid', :'secret');
SELECT agentidp.introspect_token(:'rt2');
-- malformed, unknown, and another client's refresh token
SELECT agentidp.refresh_token('aidp_rt_short', :'cid', :'secret');
SELECT agentidp.refresh_token('aidp_rt_' || repeat('A', 43), :'cid', :'secret');
\set VERBOSITY sqlstate
SELECT agentidp.refresh_token(:'rt2', :'cid', 'wrong');
\set VERBOSITY default
-- revoking a refresh token revokes its family
SELECT agentidp.issue_token(:'cid', :'secret') ->> 'refresh_token' AS rt3 \gset
SELECT agentidp.revoke_token(:'rt3');
SELECT agentidp.refresh_token(:'rt3', :'cid', :'secret');
RESET ROLE;
SET ROLE regress_admin_a;
SELECT count(*) AS tokens, count(used_at) AS used, count(revoked_at) AS revoked
FROM agentidp.refresh_tokens WHERE tenant_id = :'ta';
-- hashes stay unreadable
SELECT token_hash FROM agentidp.refresh_tokens;
RESET ROLE;

--
-- private_key_jwt: a registered public key, a signed assertion, no replay
--
SELECT agentidp.generate_jwk('ES256') AS client_jwk \gset
SELECT :'client_jwk'::jsonb - 'd' AS client_pub \gset
SET ROLE regress_admin_a;
SELECT agentidp.add_client_key(:'agent', :'client_jwk');
SELECT agentidp.add_client_key(:'agent', '{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}');
SELECT agentidp.add_client_key(:'agent', :'client_pub') AS ckid \gset
SELECT :'ckid' = agentidp.jwk_thumbprint(:'client_pub') AS kid_is_thumbprint;
-- a direct INSERT gets the same checks: public key, kid its thumbprint
INSERT INTO agentidp.client_keys (tenant_id, agent_id, kid, public_jwk) VALUES (:'ta', :'agent', 'mine', :'client_jwk');
\set VERBOSITY terse
SELECT agentidp.add_client_key(:'agent', :'client_pub');
\set VERBOSITY default
RESET ROLE;
CREATE FUNCTION pg_temp.assertion(jwk jsonb, changes jsonb DEFAULT '{}', header jsonb DEFAULT '{}')
RETURNS text LANGUAGE sql AS $$
	SELECT agentidp.jws_sign(jsonb_build_object(
		'iss', (SELECT client_id FROM agentidp.agents WHERE name = 'worker'),
		'sub', (SELECT client_id FROM agentidp.agents WHERE name = 'worker'),
		'aud', (SELECT issuer || '/oauth/token' FROM agentidp.tenants WHERE name = 'tok-a'),
		'exp', extract(epoch FROM now())::bigint + 60,
		'jti', md5(random()::text)) || changes,
		jwk || jsonb_build_object('kid', agentidp.jwk_thumbprint(jwk - 'd')), header)
$$;
SELECT pg_temp.assertion(:'client_jwk') AS assertion \gset
SET ROLE regress_service;
SELECT agentidp.issue_token_jwt(:'assertion', 'read') - 'access_token' - 'refresh_token' AS via_jwt;
-- the same assertion again is a replay
\set VERBOSITY sqlstate
SELECT agentidp.issue_token_jwt(:'assertion', 'read');
\set VERBOSITY default
RESET ROLE;
-- every refusal is the one client-authentication failure
SELECT pg_temp.assertion(:'client_jwk', jsonb_build_object('aud', 'https://elsewhere.example')) AS a_aud,
	   pg_temp.assertion(:'client_jwk', '{"iss": "someone-else"}') AS a_iss,
	   pg_temp.assertion(:'client_jwk', jsonb_build_object('exp', extract(epoch FROM now())::bigint - 120)) AS a_expired,
	   pg_temp.assertion(:'client_jwk', jsonb_build_object('exp', extract(epoch FROM now())::bigint + 3600)) AS a_long,
	   pg_temp.assertion(:'client_jwk', '{"jti": null}') AS a_nojti,
	   pg_temp.assertion(:'client_jwk', '{}', '{"typ": "at+jwt"}') AS a_typ,
	   pg_temp.assertion(agentidp.generate_jwk('ES256')) AS a_unknown_key,
	   pg_temp.assertion(:'client_jwk') AS a_later \gset
SET ROLE regress_service;
\set VERBOSITY sqlstate
SELECT agentidp.issue_token_jwt(:'a_aud');
SELECT agentidp.issue_token_jwt(:'a_iss');
SELECT agentidp.issue_token_jwt(:'a_expired');
SELECT agentidp.issue_token_jwt(:'a_long');
SELECT agentidp.issue_token_jwt(:'a_nojti');
SELECT agentidp.issue_token_jwt(:'a_typ');
SELECT agentidp.issue_token_jwt(:'a_unknown_key');
SELECT agentidp.issue_token_jwt(left(:'a_later', -3) || 'AAA');
SELECT agentidp.issue_token_jwt(NULL);
\set VERBOSITY default
RESET ROLE;
-- a revoked key authenticates no more
SET ROLE regress_admin_a;
UPDATE agentidp.client_keys SET revoked_at = now() WHERE kid = :'ckid';
RESET ROLE;
SET ROLE regress_service;
\set VERBOSITY sqlstate
SELECT agentidp.issue_token_jwt(:'a_later');
\set VERBOSITY default
RESET ROLE;
SELECT kind, count(*) FROM agentidp.used_jtis GROUP BY kind;

--
-- Token exchange (RFC 8693): delegation under a policy, scope only narrows
--
UPDATE agentidp.tenants SET settings = '{}' WHERE tenant_id = :'ta';
SET ROLE regress_admin_a;
SELECT agentidp.register_agent(:'ta', 'helper', '{read,write}') AS helper \gset
SELECT agentidp.register_agent(:'ta', 'second', '{read}') AS second \gset
SELECT client_id AS hcid, client_secret AS hsecret FROM agentidp.create_client_secret(:'helper') \gset
SELECT client_id AS scid, client_secret AS ssecret FROM agentidp.create_client_secret(:'second') \gset
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret', 'read audit:read') ->> 'access_token' AS subject_tok \gset
SELECT agentidp.issue_token(:'hcid', :'hsecret') ->> 'access_token' AS actor_tok \gset
SELECT agentidp.issue_token(:'scid', :'ssecret') ->> 'access_token' AS second_tok \gset
-- no policy yet
SELECT agentidp.exchange_token(:'subject_tok', :'actor_tok');
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.allow_delegation(:'agent', :'helper');
SELECT agentidp.allow_delegation(:'agent', :'second', '{read}');
SELECT agentidp.allow_delegation(:'agent', :'agent');
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.exchange_token(:'subject_tok', :'actor_tok') AS x \gset
SELECT :'x'::jsonb - 'access_token' AS exchanged;
SELECT c ->> 'sub' = :'agent' AS sub_is_subject, c -> 'act' ->> 'sub' = :'helper' AS act_is_actor,
	   c ->> 'client_id' = :'hcid' AS client_is_actor, c ->> 'scope' AS scope
FROM agentidp.verify_token(:'x'::jsonb ->> 'access_token') AS c;
-- scope only narrows: the helper holds no audit:read; asking more is invalid_scope
SELECT agentidp.exchange_token(:'subject_tok', :'actor_tok', 'write');
SELECT agentidp.exchange_token(:'subject_tok', :'actor_tok', 'audit:read');
-- a chain: the second agent acts on the delegated token; act nests
SELECT agentidp.exchange_token(:'x'::jsonb ->> 'access_token', :'second_tok') ->> 'access_token' AS x2 \gset
SELECT c ->> 'sub' = :'agent' AS sub_is_subject, c -> 'act' ->> 'sub' = :'second' AS act_is_second,
	   c -> 'act' -> 'act' ->> 'sub' = :'helper' AS prior_actor_is_helper, c ->> 'scope' AS scope
FROM agentidp.verify_token(:'x2') AS c;
SELECT (agentidp.introspect_token(:'x2') -> 'act') IS NOT NULL AS introspection_shows_act;
-- the delegated token ends with its actor
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.suspend_agent(:'second');
RESET ROLE;
SET ROLE regress_service;
\set VERBOSITY terse
SELECT agentidp.verify_token(:'x2');
\set VERBOSITY default
RESET ROLE;
SET ROLE regress_admin_a;
SELECT agentidp.reactivate_agent(:'second');
RESET ROLE;
SET ROLE regress_service;
-- refusals
SELECT agentidp.exchange_token(:'subject_tok');
SELECT agentidp.exchange_token(:'subject_tok', :'subject_tok');
\set VERBOSITY terse
SELECT agentidp.exchange_token(:'subject_tok', 'garbage.token.here');
\set VERBOSITY default
RESET ROLE;
SELECT action, actor_agent = :'helper' AS by_helper, detail::jsonb ->> 'grant_type' AS grant_type
FROM agentidp.audit_events WHERE tenant_id = :'ta' AND action = 'token.exchange' ORDER BY seq LIMIT 1;
SET ROLE regress_admin_a;
SELECT agentidp.disallow_delegation(:'agent', :'helper');
SELECT agentidp.disallow_delegation(:'agent', :'helper');
RESET ROLE;
SET ROLE regress_service;
SELECT agentidp.exchange_token(:'subject_tok', :'actor_tok');
RESET ROLE;

--
-- DPoP (RFC 9449): a proof binds the token to a key; the token is then
-- valid only with a fresh proof of that key for the request
--
SELECT agentidp.generate_jwk('ES256') AS dpop_jwk, agentidp.generate_jwk('ES256') AS other_jwk \gset
CREATE FUNCTION pg_temp.proof(jwk jsonb, htm text, htu text, changes jsonb DEFAULT '{}',
							  header jsonb DEFAULT '{"typ": "dpop+jwt"}')
RETURNS text LANGUAGE sql AS $$
	SELECT agentidp.jws_sign(jsonb_build_object('jti', md5(random()::text), 'htm', htm, 'htu', htu,
		'iat', extract(epoch FROM now())::bigint) || changes, jwk - 'kid',
		header || jsonb_build_object('jwk', jwk - 'd' - 'kid'))
$$;
CREATE FUNCTION pg_temp.ath(token text) RETURNS text LANGUAGE sql AS $$
	SELECT rtrim(translate(encode(sha256(convert_to(token, 'UTF8')), 'base64'), '+/', '-_'), '=')
$$;
SELECT pg_temp.proof(:'dpop_jwk', 'POST', 'https://idp.example/oauth/token') AS p_issue \gset
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret', 'read', NULL, :'p_issue', 'POST', 'https://idp.example/oauth/token') AS d \gset
SELECT :'d'::jsonb - 'access_token' AS dpop_response;
\set VERBOSITY terse
-- the same proof again, and a bound token without its proof
SELECT agentidp.issue_token(:'cid', :'secret', 'read', NULL, :'p_issue', 'POST', 'https://idp.example/oauth/token');
SELECT agentidp.verify_token(:'d'::jsonb ->> 'access_token');
\set VERBOSITY default
SELECT i ->> 'active' AS active, i -> 'cnf' ->> 'jkt' = agentidp.jwk_thumbprint(:'dpop_jwk'::jsonb - 'd' - 'kid') AS cnf_is_key
FROM agentidp.introspect_token(:'d'::jsonb ->> 'access_token') AS i;
RESET ROLE;
SELECT :'d'::jsonb ->> 'access_token' AS dtok \gset
SELECT pg_temp.proof(:'dpop_jwk', 'GET', 'https://api.example/things?page=2', jsonb_build_object('ath', pg_temp.ath(:'dtok'))) AS p_ok,
	   pg_temp.proof(:'dpop_jwk', 'POST', 'https://api.example/things', jsonb_build_object('ath', pg_temp.ath(:'dtok'))) AS p_htm,
	   pg_temp.proof(:'dpop_jwk', 'GET', 'https://api.example/other', jsonb_build_object('ath', pg_temp.ath(:'dtok'))) AS p_htu,
	   pg_temp.proof(:'dpop_jwk', 'GET', 'https://api.example/things') AS p_noath,
	   pg_temp.proof(:'other_jwk', 'GET', 'https://api.example/things', jsonb_build_object('ath', pg_temp.ath(:'dtok'))) AS p_key,
	   pg_temp.proof(:'dpop_jwk', 'GET', 'https://api.example/things', jsonb_build_object('ath', pg_temp.ath(:'dtok'),
		   'iat', extract(epoch FROM now())::bigint - 600)) AS p_old,
	   pg_temp.proof(:'dpop_jwk', 'GET', 'https://api.example/things', jsonb_build_object('ath', pg_temp.ath(:'dtok')),
		   '{"typ": "JWT"}') AS p_typ \gset
SET ROLE regress_service;
SELECT agentidp.verify_dpop(:'dtok', :'p_ok', 'GET', 'https://api.example/things') ->> 'scope' AS dpop_verified;
\set VERBOSITY terse
SELECT agentidp.verify_dpop(:'dtok', :'p_ok', 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'dtok', :'p_htm', 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'dtok', :'p_htu', 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'dtok', :'p_noath', 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'dtok', :'p_key', 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'dtok', :'p_old', 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'dtok', :'p_typ', 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'dtok', NULL, 'GET', 'https://api.example/things');
SELECT agentidp.verify_dpop(:'subject_tok', :'p_ok', 'GET', 'https://api.example/things');
\set VERBOSITY default
RESET ROLE;
-- a family issued with a proof is refreshed only with a proof of that key
UPDATE agentidp.tenants SET settings = '{"refresh_tokens": true}' WHERE tenant_id = :'ta';
SELECT pg_temp.proof(:'dpop_jwk', 'POST', 'https://idp.example/oauth/token') AS p_rt1,
	   pg_temp.proof(:'dpop_jwk', 'POST', 'https://idp.example/oauth/token') AS p_rt2,
	   pg_temp.proof(:'other_jwk', 'POST', 'https://idp.example/oauth/token') AS p_rt_other \gset
SET ROLE regress_service;
SELECT agentidp.issue_token(:'cid', :'secret', 'read', NULL, :'p_rt1', 'POST', 'https://idp.example/oauth/token')
	->> 'refresh_token' AS bound_rt \gset
\set VERBOSITY terse
SELECT agentidp.refresh_token(:'bound_rt', :'cid', :'secret');
SELECT agentidp.refresh_token(:'bound_rt', :'cid', :'secret', :'p_rt_other', 'POST', 'https://idp.example/oauth/token');
\set VERBOSITY default
SELECT agentidp.refresh_token(:'bound_rt', :'cid', :'secret', :'p_rt2', 'POST', 'https://idp.example/oauth/token')
	->> 'token_type' AS refreshed_type;
RESET ROLE;
UPDATE agentidp.tenants SET settings = '{}' WHERE tenant_id = :'ta';

--
-- The token endpoint: errors as RFC 6749 objects with their status, and
-- every refusal audited, even though the refused grant rolled back
--
SET ROLE regress_service;
SELECT (agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'cid', 'client_secret', :'secret', 'scope', 'read')) -> 'body') - 'access_token' AS ok;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'cid', 'client_secret', 'wrong')) AS bad_secret;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', :'cid', 'client_secret', :'secret', 'scope', 'admin')) AS bad_scope;
SELECT agentidp.token_endpoint('{"grant_type": "password"}') AS unsupported;
SELECT agentidp.token_endpoint('{}') AS no_grant;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'urn:ietf:params:oauth:grant-type:token-exchange',
	'subject_token', 'x.y.z', 'actor_token', 'x.y.z', 'client_id', :'cid')) -> 'body' ->> 'error' AS exchange_error;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'refresh_token',
	'refresh_token', 'aidp_rt_nope', 'client_id', :'cid', 'client_secret', :'secret')) AS refresh_error;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
	'client_id', 'unknown-client', 'client_secret', 'wrong')) -> 'status' AS unknown_client;
-- a burst of failures from one client
SELECT count(*) FROM generate_series(1, 5) AS i,
	LATERAL agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
		'client_id', :'cid', 'client_secret', 'wrong' || i)) AS r
WHERE r ->> 'status' = '401';
RESET ROLE;
SELECT detail::jsonb ->> 'error' AS error, count(*) FROM agentidp.audit_events
WHERE tenant_id = :'ta' AND action = 'token.refused' GROUP BY 1 ORDER BY 1;
SELECT count(*) AS secrets_in_refusals FROM agentidp.audit_events
WHERE action = 'token.refused' AND detail::text LIKE '%wrong%';

-- a token issued in a rolled-back transaction leaves no trace
SET ROLE regress_service;
BEGIN;
SELECT agentidp.issue_token(:'cid', :'secret') IS NOT NULL AS issued;
ROLLBACK;
RESET ROLE;

-- the audit log: every issuance, refresh and revocation; never a secret
SELECT action, result, count(*) FROM agentidp.audit_events
WHERE tenant_id = :'ta' AND action LIKE 'token.%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS secrets_in_log FROM agentidp.audit_events
WHERE detail::text ~ 'aidp_(sk|rt)_' OR resource_key::text ~ 'aidp_(sk|rt)_';
SELECT DISTINCT actor_agent = :'agent' AS actor_is_agent, actor_role FROM agentidp.audit_events
WHERE tenant_id = :'ta' AND action = 'token.issue' AND detail::jsonb ->> 'client_id' = :'cid';
SELECT ok FROM agentidp.verify_audit_chain(:'ta');

-- refusals of direct calls rolled back with their transactions; they
-- were queued in shared memory, and reach the audit log when drained
SELECT agentidp.drain_refusals() > 0 AS drained;
SELECT detail::jsonb ->> 'error' AS error, detail::jsonb ->> 'grant_type' AS grant_type,
	   count(*) > 0 AS recorded
FROM agentidp.audit_events
WHERE tenant_id = :'ta' AND action = 'token.refused' AND detail::jsonb ->> 'path' = 'sql'
GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS secrets_in_queue_rows FROM agentidp.audit_events
WHERE action = 'token.refused' AND detail::text ~ 'aidp_(sk|rt)_';
SELECT agentidp.drain_refusals(0);
SET ROLE regress_service;
SELECT agentidp.drain_refusals();
RESET ROLE;

-- who may call what
SET ROLE regress_outsider;
\set VERBOSITY terse
SELECT agentidp.issue_token(:'cid', :'secret');
\set VERBOSITY default
RESET ROLE;
