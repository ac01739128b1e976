--
-- The claim vectors of test/vectors/jose/jwt_claims.json (jwt-attacks.md
-- section D) and the attack tokens of negative_jws.json (sections A-C),
-- through verify_token's own path.
--
-- The claim vectors are written for an access token of tenant "acme"
-- (issuer https://idp.example/t/acme, audience https://api.example),
-- signed by the RFC 8037 Ed25519 key as kid "acme-ed25519-1", at the
-- time 1700000000.  agentidp's tokens name their tenant by id and their
-- subject by agent id, so each vector's payload gets the two substituted
-- ("tenant":"acme" by "tenant_id":<the tenant's id>, "sub":"agent:alpha"
-- by the agent's id) and is signed again over its exact bytes; everything
-- else is the vector's own.  _verify_token_at runs verify_token at the
-- vectors' time.
--
\getenv abs_srcdir PG_ABS_SRCDIR
\set vec :abs_srcdir '/test/vectors/'
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.vectors(name text) RETURNS jsonb
LANGUAGE sql AS $$ SELECT pg_read_file(current_setting('vec.dir') || name)::jsonb $$;
SELECT set_config('vec.dir', :'vec', false) IS NOT NULL AS ready;

CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT translate(rtrim(replace(encode(b, 'base64'), E'\n', ''), '='), '+/', '-_')
$$;

-- the tenant, its (public) key under the vectors' kid, the agent
SELECT agentidp.create_tenant('acme', 'https://idp.example/t/acme') AS t \gset
SELECT agentidp.register_agent(:'t', 'alpha', '{read}') AS a \gset
UPDATE agentidp.tenants SET settings = '{"audience": "https://api.example"}' WHERE tenant_id = :'t';
SELECT pg_temp.vectors('jose/keys.json') -> 'keys' -> 'rfc8037_a1_ed25519' AS ed_private \gset
-- only the public half is stored; verification reads nothing else
INSERT INTO agentidp.signing_keys (tenant_id, kid, alg, public_jwk, wrapped_key, kek_id, activates_at)
VALUES (:'t', 'acme-ed25519-1', 'EdDSA',
		(:'ed_private'::jsonb - 'd') || '{"kid": "acme-ed25519-1", "alg": "EdDSA", "use": "sig"}',
		'\x00', 'none', now());

CREATE FUNCTION pg_temp.resign(header text, payload bytea, jwk jsonb) RETURNS text
LANGUAGE sql AS $$
	SELECT s || '.' || pg_temp.b64url(agentidp._sign_signature('EdDSA', jwk, convert_to(s, 'UTF8')))
	FROM (SELECT pg_temp.b64url(convert_to(header, 'UTF8')) || '.' || pg_temp.b64url(payload) AS s) AS x
$$;

-- accepted: claims returned; refused: any error
CREATE FUNCTION pg_temp.accepts(token text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	RETURN agentidp._verify_token_at(token, 'https://api.example', 1700000000) IS NOT NULL;
EXCEPTION WHEN OTHERS THEN
	RETURN false;
END
$$;

CREATE TEMP TABLE outcome (file text, id text, expected text, accepted boolean);

INSERT INTO outcome
SELECT 'jwt_claims', v ->> 'id', v ->> 'expected',
	   pg_temp.accepts(pg_temp.resign(v ->> 'header_utf8',
		   decode(replace(replace(coalesce(v ->> 'payload_hex', encode(convert_to(v ->> 'payload_utf8', 'UTF8'), 'hex')),
			   encode('"tenant":"acme"', 'hex'), encode(convert_to('"tenant_id":"' || :'t' || '"', 'UTF8'), 'hex')),
			   encode('"sub":"agent:alpha"', 'hex'), encode(convert_to('"sub":"' || :'a' || '"', 'UTF8'), 'hex')),
			   'hex'),
		   :'ed_private'::jsonb))
FROM jsonb_array_elements(pg_temp.vectors('jose/jwt_claims.json') -> 'vectors') AS v;

-- the attack tokens, as they are: every one must be refused
INSERT INTO outcome
SELECT 'negative_jws', v ->> 'id', 'invalid', pg_temp.accepts(v ->> 'compact')
FROM jsonb_array_elements(pg_temp.vectors('jose/negative_jws.json') -> 'vectors') AS v;

/*
 * One claim vector expects acceptance that agentidp's token format rules
 * out, openly: sub-nfd-vs-nfc (a sub compared byte for byte) carries
 * "agent:café", which names no agent: an agentidp sub is an agent id.
 */
CREATE TEMP TABLE overridden (file text, id text, reason text);
INSERT INTO overridden VALUES
	('jwt_claims', 'sub-nfd-vs-nfc', 'sub must be the id of an active agent of the tenant');

SELECT file, count(*) AS vectors,
	   count(*) FILTER (WHERE expected = 'valid') AS valid,
	   count(*) FILTER (WHERE expected = 'invalid') AS invalid,
	   count(*) FILTER (WHERE expected = 'acceptable') AS acceptable,
	   count(*) FILTER (WHERE (expected = 'valid' AND NOT accepted) OR (expected = 'invalid' AND accepted)) AS failed
FROM outcome GROUP BY file ORDER BY file;

-- failures, apart from the overrides
SELECT o.file, o.id, o.expected, o.accepted FROM outcome o
WHERE ((o.expected = 'valid' AND NOT o.accepted) OR (o.expected = 'invalid' AND o.accepted))
  AND NOT EXISTS (SELECT FROM overridden x WHERE x.file = o.file AND x.id = o.id)
ORDER BY 1, 2;
-- the overrides, and what each vector did
SELECT x.file, x.id, o.expected, o.accepted, x.reason FROM overridden x JOIN outcome o USING (file, id);
-- how the acceptable ones went
SELECT id, accepted FROM outcome WHERE expected = 'acceptable' ORDER BY id;
