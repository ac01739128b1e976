/* agentidp--0.6--0.7.sql: what the HTTP front (agentidp-httpd, docs/http.md) calls */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.7'" to load this file. \quit

/*
 * The request of the HTTP front, for the audit rows of its transaction:
 * the client's address and the request id (src/audit.c).
 */
CREATE FUNCTION agentidp._set_request_context(client_addr inet, request_id text) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_set_request_context';
COMMENT ON FUNCTION agentidp._set_request_context(inet, text) IS
'the HTTP client''s address and the request id, for the audit rows of this transaction';

/* the front passes them in the request object: client_addr, request_id */
CREATE FUNCTION agentidp._request_context(request jsonb) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	addr inet;
BEGIN
	BEGIN
		addr := request ->> 'client_addr';
	EXCEPTION WHEN invalid_text_representation THEN
		addr := NULL;
	END;
	PERFORM agentidp._set_request_context(addr, left(request ->> 'request_id', 128));
END
$$;

/*
 * The token endpoint sets the request's context first; the grants are
 * what token_endpoint was in 0.6.
 */
ALTER FUNCTION agentidp.token_endpoint(jsonb) RENAME TO _token_grant;
COMMENT ON FUNCTION agentidp._token_grant(jsonb) IS
'the grants of the token endpoint: {"status", "body"} with the token response or the RFC 6749 error; refusals are audited';

CREATE FUNCTION agentidp.token_endpoint(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(request IS NOT NULL AND jsonb_typeof(request) = 'object', '22023',
		'the request must be a JSON object of the form parameters');
	PERFORM agentidp._request_context(request);
	RETURN agentidp._token_grant(request);
END
$$;
COMMENT ON FUNCTION agentidp.token_endpoint(jsonb) IS
'the OAuth2 token endpoint: {"status", "body"} with the token response or the RFC 6749 error; refusals are audited';

CREATE FUNCTION agentidp._authenticate_client_assertion(client_assertion text) RETURNS text
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_authenticate_client_assertion';
COMMENT ON FUNCTION agentidp._authenticate_client_assertion(text) IS
'private_key_jwt client authentication alone: the client_id the assertion authenticates';

/*
 * Client authentication of the revocation and introspection endpoints:
 * client_secret_basic or _post (the front puts the credentials in
 * client_id and client_secret) or private_key_jwt.  Returns the client's
 * client_id and its tenant's issuer; raises 28000 "client authentication
 * failed" for every failure.
 */
CREATE FUNCTION agentidp._authenticate_client(request jsonb, OUT client_id text, OUT issuer text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	agent uuid;
BEGIN
	IF request ? 'client_assertion' THEN
		PERFORM agentidp._require(request ->> 'client_assertion_type' IS NOT DISTINCT FROM
			'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', '22023',
			'invalid_request: client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
		client_id := agentidp._authenticate_client_assertion(request ->> 'client_assertion');
	ELSE
		agent := agentidp.check_client_secret(request ->> 'client_id', request ->> 'client_secret');
		client_id := request ->> 'client_id';
	END IF;
	SELECT t.issuer INTO issuer FROM agentidp.agents AS a JOIN agentidp.tenants AS t USING (tenant_id)
	WHERE a.client_id = _authenticate_client.client_id;
END
$$;

/* an RFC 6749 error response of the endpoints */
CREATE FUNCTION agentidp._endpoint_error(status integer, error text, description text) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('status', status,
	'body', jsonb_build_object('error', error, 'error_description', description));

/*
 * RFC 7009 revocation: the authenticated client revokes a token issued to
 * it; an invalid, expired or unknown token is no error (200).
 */
/*
 * What revocation and introspection begin with: the request's context,
 * the client's authentication, the token parameter.  Either the client
 * (its client_id and its tenant's issuer) or the error response.
 */
CREATE FUNCTION agentidp._token_request(request jsonb, OUT client_id text, OUT issuer text,
										OUT error jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	msg text;
BEGIN
	PERFORM agentidp._require(request IS NOT NULL AND jsonb_typeof(request) = 'object', '22023',
		'the request must be a JSON object of the form parameters');
	PERFORM agentidp._request_context(request);
	BEGIN
		SELECT c.client_id, c.issuer INTO client_id, issuer FROM agentidp._authenticate_client(request) AS c;
	EXCEPTION WHEN invalid_authorization_specification OR invalid_password THEN
		error := agentidp._endpoint_error(401, 'invalid_client', 'client authentication failed');
		RETURN;
	WHEN invalid_parameter_value OR null_value_not_allowed THEN
		GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
		error := agentidp._endpoint_error(400, 'invalid_request', msg);
		RETURN;
	END;
	IF request ->> 'token' IS NULL THEN
		error := agentidp._endpoint_error(400, 'invalid_request', 'token is missing');
	END IF;
END
$$;

CREATE FUNCTION agentidp.revocation_endpoint(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	req record;
	msg text;
BEGIN
	req := agentidp._token_request(request);
	IF req.error IS NOT NULL THEN
		RETURN req.error;
	END IF;
	BEGIN
		PERFORM agentidp.revoke_token(request ->> 'token', req.client_id);
	EXCEPTION WHEN invalid_authorization_specification THEN
		GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
		RETURN agentidp._endpoint_error(400, 'unauthorized_client', msg);
	END;
	RETURN jsonb_build_object('status', 200, 'body', '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION agentidp.revocation_endpoint(jsonb) IS
'the RFC 7009 revocation endpoint: {"status", "body"}; the client authenticates and revokes its own tokens';

/*
 * RFC 7662 introspection, for an authenticated client: tokens of its own
 * tenant only; anything else is {"active": false}.
 */
CREATE FUNCTION agentidp.introspection_endpoint(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	req record;
	r jsonb;
BEGIN
	req := agentidp._token_request(request);
	IF req.error IS NOT NULL THEN
		RETURN req.error;
	END IF;
	r := agentidp.introspect_token(request ->> 'token');
	IF (r ->> 'active')::boolean AND r ->> 'iss' IS DISTINCT FROM req.issuer THEN
		r := '{"active": false}';
	END IF;
	RETURN jsonb_build_object('status', 200, 'body', r);
END
$$;
COMMENT ON FUNCTION agentidp.introspection_endpoint(jsonb) IS
'the RFC 7662 introspection endpoint: {"status", "body"}; for authenticated clients, tokens of their own tenant only';

/*
 * What the front publishes for a tenant, by name: its RFC 8414 metadata
 * and its JWK Set; NULL for an unknown or suspended tenant.
 */
CREATE FUNCTION agentidp.http_metadata(tenant_name text) RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT jsonb_build_object(
		'issuer', t.issuer,
		'token_endpoint', t.issuer || '/oauth/token',
		'jwks_uri', t.issuer || '/.well-known/jwks.json',
		'revocation_endpoint', t.issuer || '/oauth/revoke',
		'introspection_endpoint', t.issuer || '/oauth/introspect',
		'grant_types_supported', jsonb_build_array('client_credentials', 'refresh_token',
			'urn:ietf:params:oauth:grant-type:token-exchange'),
		'response_types_supported', '[]'::jsonb,
		'token_endpoint_auth_methods_supported',
			jsonb_build_array('client_secret_basic', 'client_secret_post', 'private_key_jwt'),
		'token_endpoint_auth_signing_alg_values_supported', jsonb_build_array('ES256', 'RS256', 'PS256', 'EdDSA'),
		'revocation_endpoint_auth_methods_supported',
			jsonb_build_array('client_secret_basic', 'client_secret_post', 'private_key_jwt'),
		'introspection_endpoint_auth_methods_supported',
			jsonb_build_array('client_secret_basic', 'client_secret_post', 'private_key_jwt'),
		'dpop_signing_alg_values_supported', jsonb_build_array('ES256', 'RS256', 'PS256', 'EdDSA'))
	FROM agentidp.tenants AS t
	WHERE t.name = http_metadata.tenant_name AND t.status = 'active';
END;
COMMENT ON FUNCTION agentidp.http_metadata(text) IS
'the tenant''s RFC 8414 authorization server metadata, by tenant name; NULL when unknown or suspended';

CREATE FUNCTION agentidp.http_jwks(tenant_name text) RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT agentidp.jwks(t.tenant_id) FROM agentidp.tenants AS t
	WHERE t.name = http_jwks.tenant_name AND t.status = 'active';
END;
COMMENT ON FUNCTION agentidp.http_jwks(text) IS
'the tenant''s JWK Set, by tenant name; NULL when unknown or suspended';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	agentidp.token_endpoint(jsonb),
	agentidp._token_grant(jsonb),
	agentidp._request_context(jsonb),
	agentidp._set_request_context(inet, text),
	agentidp._authenticate_client(jsonb),
	agentidp._authenticate_client_assertion(text),
	agentidp._endpoint_error(integer, text, text),
	agentidp._token_request(jsonb),
	agentidp.revocation_endpoint(jsonb),
	agentidp.introspection_endpoint(jsonb),
	agentidp.http_metadata(text),
	agentidp.http_jwks(text)
	TO agentidp_service;
