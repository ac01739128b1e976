--
-- Trusted external issuers (src/issuers.c): a person's identity provider
-- whose tokens token exchange accepts as the subject an agent acts for.
-- The key set is put in the cache by hand here, as the maintenance task
-- would after fetching it (test/t/009_issuers.pl fetches it over HTTP).
--
\set SHOW_CONTEXT never
SELECT agentidp.create_tenant('people') AS t \gset
SELECT agentidp.rotate_signing_key(:'t') IS NOT NULL AS keyed;
SELECT issuer AS tiss FROM agentidp.tenants WHERE tenant_id = :'t' \gset
SELECT agentidp.register_agent(:'t', 'assistant', '{mail:read,mail:send,calendar:read}') AS agent \gset
SELECT client_id AS cid, client_secret AS secret FROM agentidp.create_client_secret(:'agent') \gset
SELECT agentidp.issue_token(:'cid', :'secret') ->> 'access_token' AS actor_tok \gset

-- trusting an issuer: validated, audited, its key set due for fetching
SELECT agentidp.trust_issuer(:'t', 'https://idp.example', 'https://idp.example/.well-known/jwks.json',
							 '{mail:read,calendar:read}');
SELECT issuer, jwks_uri, scopes FROM agentidp.trusted_issuers WHERE tenant_id = :'t';
SELECT issuer, jwks IS NULL AS not_fetched, next_fetch_at <= now() AS due FROM agentidp.issuer_keys
WHERE tenant_id = :'t';
SELECT action, resource FROM agentidp.audit_events WHERE tenant_id = :'t' ORDER BY seq DESC LIMIT 1;
\set VERBOSITY terse
SELECT agentidp.trust_issuer(:'t', 'ftp://idp.example', 'https://idp.example/jwks');
SELECT agentidp.trust_issuer(:'t', 'https://idp.example/?x', 'https://idp.example/jwks');
SELECT agentidp.trust_issuer(:'t', 'https://user@idp.example', 'https://idp.example/jwks');
SELECT agentidp.trust_issuer(:'t', 'https://idp.example', 'https://idp.example/jwks#k');
SELECT agentidp.trust_issuer(:'t', 'https://idp.example', NULL);
SELECT agentidp.trust_issuer(:'t', :'tiss', 'https://idp.example/jwks');
SELECT agentidp.trust_issuer(:'t', 'https://idp.example', 'https://idp.example/jwks', '{"no spaces"}');
SELECT agentidp.untrust_issuer(:'t', 'https://other.example');
\set VERBOSITY default

-- the key set: only public signing keys agentidp can use are kept
SELECT agentidp.generate_jwk('ES256') AS person_key \gset
SELECT agentidp.generate_jwk('RS256') AS other_key \gset
SELECT jsonb_array_length(agentidp._public_key_set(jsonb_build_object('keys', jsonb_build_array(
	:'person_key'::jsonb - 'd',
	(:'other_key'::jsonb - '{d,p,q,dp,dq,qi}'::text[]) || '{"use": "enc"}',
	'{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}'::jsonb,
	'"not a key"'::jsonb))) -> 'keys') AS kept;
\set VERBOSITY terse
SELECT agentidp._public_key_set('{"keys": []}');
SELECT agentidp._public_key_set('[]');
SELECT agentidp._public_key_set(jsonb_build_object('keys', jsonb_build_array(:'person_key'::jsonb)));
\set VERBOSITY default
UPDATE agentidp.issuer_keys SET jwks = agentidp._public_key_set(jsonb_build_object('keys',
	jsonb_build_array(:'person_key'::jsonb - 'd'))), fetched_at = now()
WHERE tenant_id = :'t';

-- a person's token for the tenant: the agent acts for the person
SELECT :'person_key'::jsonb ->> 'kid' AS pkid \gset
CREATE FUNCTION pg_temp.person_token(claims jsonb, key jsonb DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$
	SELECT agentidp.jws_sign(
		jsonb_build_object('iss', 'https://idp.example', 'sub', 'alice@example.com',
						   'aud', (SELECT issuer FROM agentidp.tenants WHERE name = 'people'),
						   'iat', floor(extract(epoch FROM now()))::bigint,
						   'exp', floor(extract(epoch FROM now()))::bigint + 300) || claims,
		COALESCE(key, current_setting('test.person_key')::jsonb),
		jsonb_build_object('typ', 'JWT', 'kid', COALESCE(key, current_setting('test.person_key')::jsonb) ->> 'kid'))
$$;
SELECT set_config('test.person_key', :'person_key', false) IS NOT NULL AS set;
SELECT agentidp.exchange_token(pg_temp.person_token('{}'), :'actor_tok') AS x \gset
SELECT :'x'::jsonb - 'access_token' AS response;
SELECT claims ->> 'sub' AS sub, claims ->> 'subject_issuer' AS subject_issuer, claims ->> 'scope' AS scope,
	   claims -> 'roles' AS roles, claims #>> '{act,sub}' = :'agent' AS actor,
	   claims ->> 'client_id' = :'cid' AS client, claims ? 'cred' AS cred
FROM agentidp.verify_token(:'x'::jsonb ->> 'access_token') AS claims;
SELECT action, actor_agent = :'agent' AS by_actor, detail ->> 'subject' AS subject,
	   detail ->> 'subject_issuer' AS subject_issuer
FROM agentidp.audit_events WHERE tenant_id = :'t' ORDER BY seq DESC LIMIT 1;
-- the person's own scope narrows further; asking for more than allowed is refused
SELECT agentidp.exchange_token(pg_temp.person_token('{"scope": "mail:read mail:send"}'), :'actor_tok')
	->> 'scope' AS narrowed;
SELECT agentidp.exchange_token(pg_temp.person_token('{}'), :'actor_tok', 'mail:send');

-- as an identity: the agent acts, for a person who is no agent here
BEGIN;
SELECT agentidp.authenticate(:'x'::jsonb ->> 'access_token') IS NOT NULL AS authenticated;
SELECT agentidp.current_agent() = :'agent' AS current_agent, agentidp.acting_for() AS acting_for,
	   agentidp.current_claims() ->> 'sub' AS person, agentidp.has_scope('calendar:read') AS reads;
COMMIT;

-- refused: wrong audience, issuer, expiry, algorithm, signature, unknown key
\set VERBOSITY terse
SELECT agentidp.exchange_token(pg_temp.person_token('{"aud": "https://elsewhere.example"}'), :'actor_tok');
SELECT agentidp.exchange_token(pg_temp.person_token('{"iss": "https://evil.example"}'), :'actor_tok');
SELECT agentidp.exchange_token(pg_temp.person_token(jsonb_build_object('exp',
	floor(extract(epoch FROM now()))::bigint - 3600)), :'actor_tok');
SELECT agentidp.exchange_token(pg_temp.person_token('{"sub": ""}'), :'actor_tok');
-- an RS256 token naming the EC key's kid (the message names the key: show the SQLSTATE)
\set VERBOSITY sqlstate
SELECT agentidp.exchange_token(pg_temp.person_token('{}', :'other_key'::jsonb || jsonb_build_object('kid', :'pkid')),
	:'actor_tok');
\set VERBOSITY terse
-- signed by another key under the trusted key's kid
SELECT agentidp.exchange_token(pg_temp.person_token('{}', agentidp.generate_jwk('ES256') || jsonb_build_object('kid', :'pkid')),
	:'actor_tok');
SELECT agentidp.exchange_token(pg_temp.person_token('{}', :'other_key'), :'actor_tok');
-- HS256 with the public key as the secret (jwt-attacks.md): no symmetric algorithm from outside
SELECT agentidp.exchange_token(agentidp.jws_sign(jsonb_build_object('iss', 'https://idp.example',
	'sub', 'alice@example.com', 'aud', :'tiss', 'exp', floor(extract(epoch FROM now()))::bigint + 300),
	agentidp.generate_jwk('HS256') || jsonb_build_object('kid', :'pkid'),
	jsonb_build_object('kid', :'pkid')), :'actor_tok');
-- a key no trusted issuer has
SELECT agentidp.exchange_token(pg_temp.person_token('{}', agentidp.generate_jwk('ES256')), :'actor_tok');
-- a person's token is the subject, never the actor, and is not exchanged again
SELECT agentidp.exchange_token(:'actor_tok', pg_temp.person_token('{}'));
SELECT agentidp.exchange_token(:'x'::jsonb ->> 'access_token', :'actor_tok');
\set VERBOSITY default

-- untrusting the issuer ends the tokens exchanged for its people
SELECT agentidp.untrust_issuer(:'t', 'https://idp.example');
\set VERBOSITY terse
SELECT agentidp.verify_token(:'x'::jsonb ->> 'access_token');
SELECT agentidp.exchange_token(pg_temp.person_token('{}'), :'actor_tok');
\set VERBOSITY default
SELECT count(*) AS cached_keys FROM agentidp.issuer_keys WHERE tenant_id = :'t';

-- administrators of the tenant only
SET ROLE regress_admin_b;
\set VERBOSITY terse
SELECT agentidp.trust_issuer(:'t', 'https://idp.example', 'https://idp.example/jwks');
\set VERBOSITY default
RESET ROLE;
-- an administrator (not a superuser) trusts and untrusts for a tenant of theirs
SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('people-a') AS ta \gset
SELECT agentidp.trust_issuer(:'ta', 'https://idp.a.example', 'https://idp.a.example/jwks');
SELECT issuer, jwks IS NULL AS not_fetched FROM agentidp.issuer_keys WHERE tenant_id = :'ta';
-- the cache is not theirs to write
\set VERBOSITY terse
UPDATE agentidp.issuer_keys SET next_fetch_at = now() WHERE tenant_id = :'ta';
\set VERBOSITY default
SELECT agentidp.untrust_issuer(:'ta', 'https://idp.a.example');
SELECT count(*) AS trusts FROM agentidp.trusted_issuers WHERE tenant_id = :'ta';
RESET ROLE;
