--
-- JWS sign and verify, JWKs, thumbprints (src/jose.c, jose_json.c, jwk.c):
-- each error path once, as the non-owner roles callers use.
--
\set SHOW_CONTEXT never

-- An HS256 signer written in SQL (HMAC from core sha256), independent of
-- the code under test, so tests can sign any bytes, malformed ones too.
CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT translate(rtrim(replace(encode(b, 'base64'), E'\n', ''), '='), '+/', '-_')
$$;
CREATE FUNCTION pg_temp.hs256(key bytea, msg text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	k bytea := key || decode(repeat('00', 64 - length(key)), 'hex');
	ipad bytea := k;
	opad bytea := k;
BEGIN
	FOR i IN 0..63 LOOP
		ipad := set_byte(ipad, i, get_byte(k, i) # 54);
		opad := set_byte(opad, i, get_byte(k, i) # 92);
	END LOOP;
	RETURN pg_temp.b64url(sha256(opad || sha256(ipad || convert_to(msg, 'UTF8'))));
END
$$;
-- a token from header and payload texts (or raw segments), signed with HS256
CREATE FUNCTION pg_temp.token(header text, payload text) RETURNS text LANGUAGE sql AS $$
	SELECT s || '.' || pg_temp.hs256(decode('0323354b2b0fa5bc837e0665777ba68f5ab328e6f054c928a90f84b2d2502ebfd3fb5a92d20647ef968ab4c377623d223d2e2172052e4f08c0cd9af567d080a3', 'hex'), s)
	FROM (SELECT pg_temp.b64url(convert_to(header, 'UTF8')) || '.' ||
				 pg_temp.b64url(convert_to(payload, 'UTF8')) AS s) AS x
$$;
CREATE FUNCTION pg_temp.raw_token(segments text) RETURNS text LANGUAGE sql AS $$
	SELECT segments || '.' || pg_temp.hs256(decode('0323354b2b0fa5bc837e0665777ba68f5ab328e6f054c928a90f84b2d2502ebfd3fb5a92d20647ef968ab4c377623d223d2e2172052e4f08c0cd9af567d080a3', 'hex'), segments)
$$;
-- RFC 7515 A.1's key, a second HMAC key, and RFC 7517 A.2's EC and RSA public keys
\set hs '{"kty":"oct","kid":"hs","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}'
\set hs2 '{"kty":"oct","kid":"hs2","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}'
\set ec '{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","kid":"1"}'
\set rsa '{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}'

SET ROLE regress_service;

-- the SQL signer and jws_sign agree, and a good token verifies
SELECT agentidp.jws_sign('{"sub":"a"}', :'hs', '{"typ":"JWT"}')
	 = pg_temp.token('{"alg":"HS256","kid":"hs","typ":"JWT"}', '{"sub":"a"}') AS same_token;
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","kid":"hs"}', '{"sub":"a","exp":1,"aud":["x","y"]}'),
						   :'hs', '{HS256}');
-- a key set, the key picked by kid
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","kid":"hs"}', '{"sub":"a"}'),
						   jsonb_build_object('keys', jsonb_build_array(:'hs2'::jsonb, :'hs'::jsonb)), '{HS256}');
-- thumbprints (RFC 7638 section 3.1)
SELECT agentidp.jwk_thumbprint(:'rsa');

-- arguments
SELECT agentidp.jws_verify(NULL, :'hs', '{HS256}');
SELECT agentidp.jws_verify('a.b.c', :'hs', '{}');
SELECT agentidp.jws_verify('a.b.c', :'hs', '{none}');
SELECT agentidp.jws_verify('a.b.c', :'hs', '{HS256,NULL}');
SELECT agentidp.jws_verify('a.b.c', :'hs', '{{HS256}}');
SELECT agentidp.jws_verify('a.b.c', '[]', '{HS256}');
SELECT agentidp.jws_verify('a.b.c', '{"keys":{}}', '{HS256}');
SELECT agentidp.jws_verify('a.b.c', '{"keys":[]}', '{HS256}');
SELECT agentidp.jws_verify('a.b.c', '{"keys":[1]}', '{HS256}');
SELECT agentidp.jws_verify('a.b.c', jsonb_build_object('keys', jsonb_build_array(:'hs'::jsonb, :'hs'::jsonb)), '{HS256}');
SELECT agentidp.jws_verify('a.b.c', jsonb_build_object('keys', jsonb_build_array(:'ec'::jsonb, :'hs'::jsonb)), '{HS256,ES256}');
SELECT agentidp.jws_verify('a.b.c', '{"kty":"RSA","n":"AQAB","e":"AQAB"}', '{RS256}');

-- structure and encoding (22023)
SELECT agentidp.jws_verify(repeat('a', 16385), :'hs', '{HS256}');
SELECT agentidp.jws_verify('a.b', :'hs', '{HS256}');
SELECT agentidp.jws_verify('a.b.c.d.e', :'hs', '{HS256}');
SELECT agentidp.jws_verify('eyJhbGciOiJIUzI1NiJ9=.e30.x', :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"} x', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('["alg"]', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","alg":"none"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","\u0061lg":"HS256"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.raw_token(pg_temp.b64url('\x7b22616c67223a22ff227d'::bytea) || '.e30'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","x":"a\u0000b"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","x":"\ud800"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","x":' || repeat('[', 40) || repeat(']', 40) || '}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","x":1e200000}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","x":1e4294967297}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":1}', '{}'), :'hs', '{HS256}');

-- trust (28000): algorithm, header parameters, keys, signature
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"none"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"NoNe"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","crit":["exp"]}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","b64":false}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","jku":"https://attacker.example/jwks"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","x5u":"https://attacker.example/c"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","x5c":["MII"]}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","jwk":' || :'ec' || '}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","enc":"A256GCM"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","cty":"jwt"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{}'), :'hs', '{ES256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","kid":"nope"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","kid":"../../dev/null\n"}', '{}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{}'),
						   jsonb_build_object('keys', jsonb_build_array(:'hs2'::jsonb, :'hs'::jsonb)), '{HS256}');
-- key confusion: HS256 keyed with an RSA public key
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256","kid":"2011-04-29"}', '{}'), :'rsa', '{HS256,RS256}');
-- the key's own alg binds it: an RS256 key does not verify PS256
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"PS256"}', '{}'), :'rsa', '{PS256}');
-- signatures: wrong, truncated, not base64url
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"sub":"a"}') || 'A', :'hs', '{HS256}');
SELECT agentidp.jws_verify(left(pg_temp.token('{"alg":"HS256"}', '{"sub":"a"}'), -2), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"sub":"a"}') || '=', :'hs', '{HS256}');
SELECT agentidp.jws_verify('eyJhbGciOiJFUzI1NiJ9.e30.' || repeat('A', 86), :'ec', '{ES256}');

-- the payload, parsed only once the signature holds
SELECT agentidp.jws_verify(pg_temp.raw_token('eyJhbGciOiJIUzI1NiJ9.e30='), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', 'foo'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"sub":"a","sub":"admin"}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"sub":1}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"scope":["a"]}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"exp":"1700000000"}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"exp":-1}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"nbf":1e400}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"iat":253402300800}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"aud":[]}'), :'hs', '{HS256}');
SELECT agentidp.jws_verify(pg_temp.token('{"alg":"HS256"}', '{"aud":["a",1]}'), :'hs', '{HS256}');

-- signing: bad arguments
SELECT agentidp.jws_sign(NULL, :'hs');
SELECT agentidp.jws_sign('[]', :'hs');
SELECT agentidp.jws_sign('{}', :'hs', '[]');
SELECT agentidp.jws_sign('{}', :'hs', '{"jku":"https://x"}');
SELECT agentidp.jws_sign('{}', :'hs', '{"alg":"none"}');
SELECT agentidp.jws_sign('{}', :'hs', '{"alg":"ES256"}');
SELECT agentidp.jws_sign('{}', :'hs', '{"jwk":{"kty":"oct","k":"AAAA"}}');
SELECT agentidp.jws_sign('{}', :'hs', '{"jwk":[1]}');
SELECT agentidp.jws_sign('{}', :'ec');

-- keys: malformed or unsupported
SELECT agentidp.jwk_thumbprint('{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4"}');
SELECT agentidp.jwk_thumbprint('{"kty":"XYZ"}');
SELECT agentidp.jws_verify('a.b.c', '{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}', '{ES256}');
SELECT agentidp.jws_verify('a.b.c', '{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyI"}', '{ES256}');
SELECT agentidp.jws_verify('a.b.c', '{"kty":"oct","k":"AAAA"}', '{HS256}');
SELECT agentidp.jws_verify('a.b.c', '{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"enc"}', '{ES256}');

-- private key material: generate_jwk is for superusers alone
SELECT agentidp.generate_jwk('ES256');
SELECT agentidp._verify_signature('HS256', :'hs', '', '');
SET ROLE regress_admin_a;
SELECT agentidp.generate_jwk('ES256');
RESET ROLE;
SELECT agentidp.generate_jwk('ES384');
SELECT k ?& ARRAY['kty', 'crv', 'x', 'y', 'd', 'kid', 'alg'] AS private_ec,
	   k ->> 'kid' = agentidp.jwk_thumbprint(k) AS kid_is_thumbprint
FROM agentidp.generate_jwk('ES256') AS k;
