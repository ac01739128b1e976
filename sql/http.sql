--
-- What the HTTP front calls (agentidp--0.6--0.7.sql): the endpoints as
-- {"status", "body"}, the request's client address and id in the audit
-- rows, the metadata and key set by tenant name.  Run as the front's role.
--
\set SHOW_CONTEXT never
SELECT agentidp.create_tenant('front') AS t \gset
SELECT agentidp.create_tenant('other-front') AS t2 \gset
SELECT agentidp.rotate_signing_key(:'t') IS NOT NULL AND agentidp.rotate_signing_key(:'t2') IS NOT NULL AS keyed;
SELECT issuer AS iss FROM agentidp.tenants WHERE tenant_id = :'t' \gset
SELECT agentidp.register_agent(:'t', 'web', '{read}') AS a \gset
SELECT client_id AS cid, client_secret AS secret FROM agentidp.create_client_secret(:'a') \gset
SELECT agentidp.register_agent(:'t2', 'web2', '{read}') AS a2 \gset
SELECT client_id AS cid2, client_secret AS secret2 FROM agentidp.create_client_secret(:'a2') \gset

SET ROLE agentidp_service;
-- the token endpoint, with the client's address and the request id
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
	'client_secret', :'secret', 'client_addr', '203.0.113.7', 'request_id', 'req-1')) AS r \gset
SELECT (:'r'::jsonb ->> 'status') AS status, :'r'::jsonb -> 'body' ? 'access_token' AS token;
SELECT :'r'::jsonb #>> '{body,access_token}' AS tok \gset
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
	'client_secret', 'wrong', 'client_addr', '203.0.113.8', 'request_id', 'req-2'));
-- a proof the JWS layer refuses is an invalid DPoP proof (RFC 9449 section 5)
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
	'client_secret', :'secret', 'dpop', 'not-a-proof', 'htm', 'POST', 'htu', 'https://x/oauth/token')) AS malformed_proof;
-- a malformed address is left out, not an error
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'nope', 'client_addr', 'not an address'));
RESET ROLE;
SELECT action, result, client_addr, trace_id FROM agentidp.audit_events
WHERE tenant_id = :'t' AND action LIKE 'token.%' ORDER BY seq;

SET ROLE agentidp_service;
-- introspection: authenticated clients, tokens of their own tenant only
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid',
	'client_secret', :'secret')) #> '{body}' ->> 'active' AS active_for_own_tenant;
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid2',
	'client_secret', :'secret2')) AS for_another_tenant;
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid',
	'client_secret', 'wrong')) AS wrong_secret;
SELECT agentidp.introspection_endpoint(jsonb_build_object('client_id', :'cid', 'client_secret', :'secret')) AS no_token;
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', 'garbage', 'client_id', :'cid',
	'client_secret', :'secret')) AS garbage_token;
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', :'tok', 'client_assertion', 'x',
	'client_assertion_type', 'wrong')) AS wrong_assertion_type;
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', :'tok', 'client_assertion', 'x',
	'client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer')) AS bad_assertion;

-- revocation: the client's own tokens; unknown tokens are no error
SELECT agentidp.revocation_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid2',
	'client_secret', :'secret2')) AS another_clients_token;
SELECT agentidp.revocation_endpoint(jsonb_build_object('token', 'garbage', 'client_id', :'cid',
	'client_secret', :'secret')) AS unknown_token;
SELECT agentidp.revocation_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid',
	'client_secret', 'wrong')) AS wrong_secret;
SELECT agentidp.revocation_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid',
	'client_secret', :'secret', 'client_addr', '2001:db8::1', 'request_id', 'req-revoke')) AS revoked;
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid',
	'client_secret', :'secret')) -> 'body' AS after_revocation;
\set VERBOSITY terse
SELECT agentidp.revocation_endpoint('[]');
SELECT agentidp.token_endpoint(NULL);
\set VERBOSITY default

-- metadata and key set by tenant name
SELECT jsonb_pretty(agentidp.http_metadata('front') - 'issuer' - 'token_endpoint' - 'jwks_uri'
	- 'revocation_endpoint' - 'introspection_endpoint') AS metadata;
SELECT m ->> 'issuer' = :'iss' AS issuer, m ->> 'token_endpoint' = :'iss' || '/oauth/token' AS token_endpoint,
	   m ->> 'jwks_uri' = :'iss' || '/.well-known/jwks.json' AS jwks_uri
FROM agentidp.http_metadata('front') AS m;
SELECT jsonb_array_length(agentidp.http_jwks('front') -> 'keys') AS keys,
	   agentidp.http_jwks('no such tenant') AS unknown, agentidp.http_metadata('no such tenant') AS unknown_metadata;
RESET ROLE;
SELECT action, client_addr, trace_id FROM agentidp.audit_events
WHERE tenant_id = :'t' AND action = 'token.revoke';
UPDATE agentidp.tenants SET status = 'suspended' WHERE tenant_id = :'t2';
SELECT agentidp.http_jwks('other-front') AS suspended_tenant;

-- token requests in one transaction (the front's group commit, 0.8): each
-- answered and audited as alone, with its own client address and request id
UPDATE agentidp.tenants SET status = 'active' WHERE tenant_id = :'t2';
SET ROLE agentidp_service;
SELECT status, body::jsonb ? 'access_token' AS token, body::jsonb ->> 'error' AS error
FROM agentidp.token_endpoint_batch(jsonb_build_array(
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
		'client_secret', :'secret', 'client_addr', '198.51.100.1', 'request_id', 'batch-1'),
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
		'client_secret', 'wrong', 'client_addr', '198.51.100.2', 'request_id', 'batch-2'),
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid2',
		'client_secret', :'secret2', 'scope', 'write', 'request_id', 'batch-3'),
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid2',
		'client_secret', :'secret2', 'client_addr', '198.51.100.4', 'request_id', 'batch-4')));
RESET ROLE;
SELECT tenant_id = :'t' AS first_tenant, action, result, client_addr, trace_id FROM agentidp.audit_events
WHERE trace_id LIKE 'batch-%' AND action LIKE 'token.%' ORDER BY trace_id;
SET ROLE agentidp_service;
\set VERBOSITY terse
-- not a request array; a request that is not an object fails the whole call
SELECT * FROM agentidp.token_endpoint_batch('{}');
SELECT * FROM agentidp.token_endpoint_batch('[]');
SELECT * FROM agentidp.token_endpoint_batch(jsonb_build_array(
	jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
		'client_secret', :'secret', 'request_id', 'batch-rolled-back'), 'x'));
\set VERBOSITY default
RESET ROLE;
SELECT count(*) AS rolled_back_rows FROM agentidp.audit_events WHERE trace_id = 'batch-rolled-back';

-- the route's tenant (0.8): a client of another tenant is not known there,
-- an unknown tenant is 404; revocation and introspection likewise
SET ROLE agentidp_service;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
	'client_secret', :'secret', 'tenant', 'other-front', 'request_id', 'route-1')) AS other_tenant;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
	'client_secret', :'secret', 'tenant', 'no-such-tenant')) AS unknown_tenant;
SELECT agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials', 'client_id', :'cid',
	'client_secret', :'secret', 'tenant', 'front')) -> 'status' AS own_tenant;
SELECT agentidp.introspection_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid',
	'client_secret', :'secret', 'tenant', 'other-front')) AS introspect_other_tenant;
SELECT agentidp.revocation_endpoint(jsonb_build_object('token', :'tok', 'client_id', :'cid',
	'client_secret', :'secret', 'tenant', 'no-such-tenant')) AS revoke_unknown_tenant;
RESET ROLE;
SELECT tenant_id = :'t' AS client_tenant, action, result FROM agentidp.audit_events WHERE trace_id = 'route-1';

-- only the front's role may call them
SET ROLE regress_admin_a;
\set VERBOSITY terse
SELECT agentidp.token_endpoint('{}');
SELECT * FROM agentidp.token_endpoint_batch('[{}]');
SELECT agentidp._set_request_context('192.0.2.1', 'forged');
\set VERBOSITY default
RESET ROLE;
