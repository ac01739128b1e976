--
-- Tenants' signing keys (src/keys.c): generation, sealing under the KEK,
-- rotation states, the JWKS, signing with the active key, and that no
-- non-superuser reaches private key material.
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT tenant_id AS ta FROM agentidp.tenants WHERE name = 'tenant-a' \gset

-- the first key is active at once; the next one is published first
SELECT agentidp.rotate_signing_key(:'ta') AS k1 \gset
SELECT agentidp.rotate_signing_key(:'ta', 'EdDSA') AS k2 \gset
SELECT kid = :'k1' AS first, alg, state, published, kek_id,
	   kid = agentidp.jwk_thumbprint(public_jwk) AS kid_is_thumbprint,
	   public_jwk ? 'd' AS has_private
FROM agentidp.signing_key_states WHERE tenant_id = :'ta' ORDER BY activates_at;
SELECT jsonb_array_length(agentidp.jwks(:'ta') -> 'keys') AS published;

-- bad arguments
SELECT agentidp.rotate_signing_key(:'ta', 'HS256');
SELECT agentidp.rotate_signing_key(:'ta', 'ES384');
SELECT agentidp.rotate_signing_key(NULL);
\set VERBOSITY terse
SELECT agentidp.rotate_signing_key('00000000-0000-0000-0000-000000000000');
\set VERBOSITY default

-- administrators see public halves only, and cannot write keys
SELECT wrapped_key FROM agentidp.signing_keys;
SELECT * FROM agentidp.signing_keys;
UPDATE agentidp.signing_keys SET activates_at = now();
SHOW agentidp.kek_file;
RESET ROLE;

-- the database signs with the active key; the JWKS verifies it
SELECT agentidp._sign_with_tenant_key(:'ta', '{"sub":"agent"}') AS t1 \gset
SELECT agentidp.jws_verify(:'t1', agentidp.jwks(:'ta'), '{ES256,EdDSA}');
SELECT agentidp.jws_verify(:'t1', agentidp.jwks(:'ta'), '{EdDSA}');

-- time passes: the next key takes over, the old one stays published
UPDATE agentidp.signing_keys SET activates_at = now() - interval '1 minute'
WHERE tenant_id = :'ta' AND kid = :'k2';
UPDATE agentidp.signing_keys SET activates_at = now() - interval '2 minutes'
WHERE tenant_id = :'ta' AND kid = :'k1';
SELECT kid = :'k1' AS first, state, published FROM agentidp.signing_key_states
WHERE tenant_id = :'ta' ORDER BY activates_at;
SELECT agentidp._sign_with_tenant_key(:'ta', '{"sub":"agent"}') AS t2 \gset
SELECT agentidp.jws_verify(:'t2', agentidp.jwks(:'ta'), '{EdDSA}');
-- a token of the retired key still verifies while published ...
SELECT agentidp.jws_verify(:'t1', agentidp.jwks(:'ta'), '{ES256}');
-- ... and not once every token it signed has expired
UPDATE agentidp.signing_keys SET activates_at = now() - interval '1 hour'
WHERE tenant_id = :'ta' AND kid = :'k2';
UPDATE agentidp.signing_keys SET activates_at = now() - interval '2 hours'
WHERE tenant_id = :'ta' AND kid = :'k1';
SELECT kid = :'k1' AS first, state, published FROM agentidp.signing_key_states
WHERE tenant_id = :'ta' ORDER BY activates_at;
-- (28000, no key with that kid; the kid varies, so only the SQLSTATE shows)
\set VERBOSITY sqlstate
SELECT agentidp.jws_verify(:'t1', agentidp.jwks(:'ta'), '{ES256}');
\set VERBOSITY default

-- a sealed key is bound to its row: moved to another tenant, it does not open
SET ROLE regress_admin_b;
SELECT tenant_id AS tb FROM agentidp.tenants WHERE name = 'tenant-b' \gset
SELECT agentidp.rotate_signing_key(:'tb') AS kb \gset
RESET ROLE;
UPDATE agentidp.signing_keys SET wrapped_key = (SELECT wrapped_key FROM agentidp.signing_keys
												 WHERE tenant_id = :'ta' AND kid = :'k1')
WHERE tenant_id = :'tb';
-- (XX001 data_corrupted: signing key "<kid>" does not decrypt)
\set VERBOSITY sqlstate
SELECT agentidp._sign_with_tenant_key(:'tb', '{}');
\set VERBOSITY default
-- bad arguments to the signer
SELECT agentidp._sign_with_tenant_key(NULL, '{}');
SELECT agentidp._sign_with_tenant_key(:'ta', '[]');
SELECT agentidp._sign_with_tenant_key(:'ta', '{}', '"x"');
-- two keys activating at the same instant: the higher kid signs, and is
-- the one the view calls active
UPDATE agentidp.signing_keys SET activates_at = '2020-01-01' WHERE tenant_id = :'ta';
SELECT count(*) FILTER (WHERE state = 'active') AS active,
	   max(kid) FILTER (WHERE state = 'active') = max(kid) AS higher_kid_active
FROM agentidp.signing_key_states WHERE tenant_id = :'ta';
SELECT (convert_from(decode(translate(split_part(agentidp._sign_with_tenant_key(:'ta', '{}'), '.', 1), '-_', '+/') || '==', 'base64'), 'UTF8')::jsonb ->> 'kid')
	   = (SELECT max(kid) FROM agentidp.signing_keys WHERE tenant_id = :'ta') AS signs_with_higher_kid;
-- a tenant without keys
SELECT agentidp.create_tenant('tenant-keyless') AS tk \gset
SELECT agentidp._sign_with_tenant_key(:'tk', '{}');
SELECT agentidp.jwks(:'tk');

-- every key is already under the current KEK
SELECT agentidp.rewrap_keys();

-- no role but superusers reaches private key material or the KEK
SET ROLE regress_service;
SELECT jsonb_array_length(agentidp.jwks(:'ta') -> 'keys') AS service_reads_jwks;
SELECT agentidp.rotate_signing_key(:'ta');
SELECT agentidp._sign_with_tenant_key(:'ta', '{}');
SELECT agentidp.rewrap_keys();
SELECT agentidp._aes_gcm_open('', '', '', '', '');
SELECT count(*) FROM agentidp.signing_keys;
SHOW agentidp.kek_file;
RESET ROLE;
-- what each role may execute, so that a new function shows up here
SELECT r.rolname, p.proname
FROM pg_proc p CROSS JOIN (VALUES ('agentidp_admin'), ('agentidp_service')) AS r(rolname)
WHERE p.pronamespace = 'agentidp'::regnamespace
  AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')
  AND p.proname !~ '^_(valid|require|check|visible|insert|set_agent)'
ORDER BY 1, 2;
