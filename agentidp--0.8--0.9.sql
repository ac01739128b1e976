/* agentidp--0.8--0.9.sql: rate limits (docs/limits.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.9'" to load this file. \quit

/*
 * Rate limits are token buckets (GCRA, src/ratelimit.c) kept in shared
 * memory, or in Redis where several servers share them.  Keys are
 * counted per tenant.  check_rate and require_rate guard any action;
 * the grants count every token against the client's limit and its
 * tenant's, in the same transaction, and raise 53400 past them.
 */
CREATE FUNCTION agentidp._valid_rate_limit(rate_limit text) RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_valid_rate_limit';
COMMENT ON FUNCTION agentidp._valid_rate_limit(text) IS
'true when the text is a rate limit setting: "unlimited" or "<count>/<period>" such as "100/min"';

CREATE FUNCTION agentidp.check_rate(key text, "limit" integer, per interval) RETURNS boolean
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_check_rate';
COMMENT ON FUNCTION agentidp.check_rate(text, integer, interval) IS
'whether one more request under key passes "limit" per "per" in the current identity''s tenant; true counts it';

CREATE FUNCTION agentidp.require_rate(key text, "limit" integer, per interval) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_require_rate';
COMMENT ON FUNCTION agentidp.require_rate(text, integer, interval) IS
'check_rate that raises 53400 (configuration_limit_exceeded) with the seconds to wait instead of returning false';

CREATE FUNCTION agentidp.rate_limit_status(OUT backend text, OUT slots integer, OUT used bigint,
										   OUT evicted_recovered bigint, OUT evicted_active bigint,
										   OUT redis_failures bigint, OUT unchecked_passed bigint,
										   OUT unchecked_refused bigint)
RETURNS record
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_rate_limit_status';
COMMENT ON FUNCTION agentidp.rate_limit_status() IS
'where rate limits are kept (shared memory, redis or none), the shared-memory table''s size and use, evictions, and checks Redis did not answer';

CREATE FUNCTION agentidp._token_rate_headers() RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_token_rate_headers';
COMMENT ON FUNCTION agentidp._token_rate_headers() IS
'the RateLimit and Retry-After headers of this session''s last token issuance check, once; NULL when no limit applied';

/*
 * Limits as settings: an agent's own token rate limit (NULL: its
 * tenant's), and in the tenant's settings object the default of its
 * clients ("token_rate_limit") and the limit of all of them together
 * ("tenant_token_rate_limit").
 */
ALTER TABLE agentidp.agents ADD COLUMN token_rate_limit text
	CONSTRAINT agents_token_rate_limit_valid CHECK (agentidp._valid_rate_limit(token_rate_limit));
COMMENT ON COLUMN agentidp.agents.token_rate_limit IS
'the agent''s token issuance rate limit ("unlimited", "<count>/<period>"); NULL: its tenant''s, else agentidp.token_rate_limit';

-- a constraint of its own, beside tenants_token_settings_valid
CREATE FUNCTION agentidp._valid_rate_limit_settings(settings jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN NOT EXISTS (SELECT FROM unnest('{token_rate_limit,tenant_token_rate_limit}'::text[]) AS k
				   WHERE settings ? k
					 AND (jsonb_typeof(settings -> k) <> 'string'
						  OR NOT agentidp._valid_rate_limit(settings ->> k)));
COMMENT ON FUNCTION agentidp._valid_rate_limit_settings(jsonb) IS
'true when the rate limits of a tenant''s settings (token_rate_limit, tenant_token_rate_limit) are strings that are rate limits';
ALTER TABLE agentidp.tenants ADD CONSTRAINT tenants_rate_limit_settings_valid
	CHECK (agentidp._valid_rate_limit_settings(settings));

CREATE FUNCTION agentidp.set_token_rate_limit(agent_id uuid, rate_limit text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
BEGIN
	a := agentidp._visible_agent(agent_id);
	PERFORM agentidp._require(rate_limit IS NULL OR agentidp._valid_rate_limit(rate_limit), '22023',
		format('invalid rate limit "%s"', left(rate_limit, 64)),
		'A rate limit is "unlimited" or "<count>/<period>", such as "100/min", "10/s" or "20/15min", for a period of at most a day.');
	UPDATE agentidp.agents AS x SET token_rate_limit = rate_limit
		WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id;
END
$$;
COMMENT ON FUNCTION agentidp.set_token_rate_limit(uuid, text) IS
'sets an agent''s token issuance rate limit ("unlimited", "<count>/<period>"), or with NULL gives it its tenant''s';

/*
 * The grants of the token endpoint, as in 0.3, and now a refused rate
 * limit: 429 when the limit is exhausted, 503 when it could not be
 * checked (Redis did not answer, agentidp.rate_limit_fail_open off), both
 * OAuth error temporarily_unavailable, audited like every refusal.
 * token_endpoint adds the Retry-After and RateLimit headers.
 */
CREATE FUNCTION agentidp._oauth_error(sqlstate text, message text, grant_type text) RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_oauth_error';
COMMENT ON FUNCTION agentidp._oauth_error(text, text, text) IS
'the OAuth error (RFC 6749 section 5.2) of a refused grant, by its SQLSTATE and message';

CREATE OR REPLACE FUNCTION agentidp._token_grant(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g text := request ->> 'grant_type';
	r jsonb;
	state text;
	msg text;
	err text;
	status int;
BEGIN
	PERFORM agentidp._require(request IS NOT NULL AND jsonb_typeof(request) = 'object', '22023',
		'the request must be a JSON object of the form parameters');
	BEGIN
		IF g = 'client_credentials' AND request ? 'client_assertion' THEN
			PERFORM agentidp._require(request ->> 'client_assertion_type' IS NOT DISTINCT FROM
				'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', '22023',
				'invalid_request: client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
			r := agentidp.issue_token_jwt(request ->> 'client_assertion', request ->> 'scope',
										  request ->> 'audience');
		ELSIF g = 'client_credentials' THEN
			r := agentidp.issue_token(request ->> 'client_id', request ->> 'client_secret',
									  request ->> 'scope', request ->> 'audience',
									  request ->> 'dpop', request ->> 'htm', request ->> 'htu');
		ELSIF g = 'refresh_token' THEN
			r := agentidp.refresh_token(request ->> 'refresh_token', request ->> 'client_id',
										request ->> 'client_secret', request ->> 'dpop',
										request ->> 'htm', request ->> 'htu');
		ELSIF g = 'urn:ietf:params:oauth:grant-type:token-exchange' THEN
			r := agentidp.exchange_token(request ->> 'subject_token', request ->> 'actor_token',
										 request ->> 'scope', request ->> 'audience');
		ELSE
			r := jsonb_build_object('error', CASE WHEN g IS NULL THEN 'invalid_request' ELSE 'unsupported_grant_type' END,
				'error_description', CASE WHEN g IS NULL THEN 'grant_type is missing'
									 ELSE 'grant_type is not supported' END);
		END IF;
	EXCEPTION
		WHEN invalid_authorization_specification OR invalid_password OR insufficient_privilege
			OR invalid_parameter_value OR null_value_not_allowed OR invalid_text_representation
			OR configuration_limit_exceeded THEN
		GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		-- the mapping the grants' audited refusals use too (src/tokens.c)
		err := agentidp._oauth_error(state, msg, g);
		status := CASE
			WHEN err = 'invalid_client' THEN 401
			WHEN state = '53400' AND msg = 'rate limit could not be checked' THEN 503
			WHEN state = '53400' THEN 429
			ELSE 400 END;
		PERFORM agentidp._audit_refusal(request ->> 'client_id', g, err, msg);
		RETURN jsonb_build_object('status', status,
			'body', jsonb_build_object('error', err, 'error_description', msg));
	END;
	IF r ? 'error' THEN
		RETURN jsonb_build_object('status', 400, 'body', r);
	END IF;
	RETURN jsonb_build_object('status', 200, 'body', r);
END
$$;

/*
 * The token endpoint's answer now has "headers" when a rate limit
 * applied: RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset,
 * RateLimit-Policy, and Retry-After on a refusal.  The 0.8 function (the
 * request's context and route, then the grants) does the rest.
 */
ALTER FUNCTION agentidp.token_endpoint(jsonb) RENAME TO _token_routed;
COMMENT ON FUNCTION agentidp._token_routed(jsonb) IS
'the token endpoint without its headers: the request''s context and route, then the grants (token_endpoint of 0.8)';

CREATE FUNCTION agentidp.token_endpoint(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	response jsonb;
	headers jsonb;
BEGIN
	-- what an earlier grant of this session left is not this request's
	PERFORM agentidp._token_rate_headers();
	response := agentidp._token_routed(request);
	headers := agentidp._token_rate_headers();
	IF headers IS NOT NULL THEN
		response := response || jsonb_build_object('headers', headers);
	END IF;
	RETURN response;
END
$$;
COMMENT ON FUNCTION agentidp.token_endpoint(jsonb) IS
'the OAuth2 token endpoint: {"status", "body", "headers"} with the token response or the RFC 6749 error, and the rate limit''s headers; refusals are audited';

/* token_endpoint_batch passes each answer's headers on */
DROP FUNCTION agentidp.token_endpoint_batch(jsonb);
CREATE FUNCTION agentidp.token_endpoint_batch(requests jsonb)
RETURNS TABLE(status integer, body text, headers jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	request jsonb;
	response jsonb;
BEGIN
	PERFORM agentidp._require(jsonb_typeof(requests) = 'array'
		AND jsonb_array_length(requests) BETWEEN 1 AND 1000, '22023',
		'the requests must be a JSON array of 1 to 1000 request objects');
	FOR request IN SELECT e FROM jsonb_array_elements(requests) AS e LOOP
		response := agentidp.token_endpoint(request);
		status := (response ->> 'status')::integer;
		body := (response -> 'body')::text;
		headers := response -> 'headers';
		RETURN NEXT;
	END LOOP;
END
$$;
COMMENT ON FUNCTION agentidp.token_endpoint_batch(jsonb) IS
'token_endpoint() for each request object of the array, in one transaction: one row (status, body, headers) per request, in order';

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	agentidp.check_rate(text, integer, interval),
	agentidp.require_rate(text, integer, interval)
	TO agentidp_agent, agentidp_admin, agentidp_service;
-- the CHECK constraints run as whoever writes an agent or a tenant
GRANT EXECUTE ON FUNCTION
	agentidp._valid_rate_limit(text),
	agentidp._valid_rate_limit_settings(jsonb),
	agentidp.rate_limit_status()
	TO agentidp_admin, agentidp_service;
GRANT EXECUTE ON FUNCTION agentidp.set_token_rate_limit(uuid, text) TO agentidp_admin;
GRANT UPDATE (token_rate_limit) ON agentidp.agents TO agentidp_admin;
GRANT EXECUTE ON FUNCTION
	agentidp._token_rate_headers(),
	agentidp._oauth_error(text, text, text),
	agentidp.token_endpoint(jsonb),
	agentidp.token_endpoint_batch(jsonb)
	TO agentidp_service;
