/* agentidp--0.2--0.3.sql: the token service (docs/tokens.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.3'" to load this file. \quit

/*
 * Access tokens revoked before their expiry, by jti (RFC 7009).  A row is
 * needed only until the token's own expiry; the worker deletes older ones.
 */
CREATE TABLE agentidp.revoked_tokens (
	tenant_id	uuid NOT NULL,
	jti			text NOT NULL,
	expires_at	timestamptz NOT NULL,
	revoked_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT revoked_tokens_pkey PRIMARY KEY (tenant_id, jti)
);
COMMENT ON TABLE agentidp.revoked_tokens IS 'access tokens revoked before they expire, by jti';

/*
 * Refresh tokens, stored as SHA-256 hashes.  Each use marks the row used
 * and makes a new one of the same family; a used token presented again
 * revokes the family.
 */
CREATE TABLE agentidp.refresh_tokens (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants,
	token_id	uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	family_id	uuid NOT NULL,
	agent_id	uuid NOT NULL,
	token_hash	bytea NOT NULL,
	scope		text NOT NULL,
	audience	text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	expires_at	timestamptz NOT NULL,			-- the family's absolute end
	idle_expires_at timestamptz NOT NULL,		-- unused this long, it lapses
	used_at		timestamptz,
	revoked_at	timestamptz,
	dpop_jkt	text,							-- the family's DPoP key (RFC 9449 section 5)
	cred		text,							-- the credential that began it: s:<secret_id>, k:<key_id>
	CONSTRAINT refresh_tokens_pkey PRIMARY KEY (tenant_id, token_id),
	CONSTRAINT refresh_tokens_hash_key UNIQUE (token_hash),
	CONSTRAINT refresh_tokens_agent_fkey FOREIGN KEY (tenant_id, agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id)
);
CREATE INDEX refresh_tokens_family_idx ON agentidp.refresh_tokens (tenant_id, family_id);

-- keys are looked up by kid alone: a token's or an assertion's header names one
CREATE INDEX signing_keys_kid_idx ON agentidp.signing_keys (kid);
CREATE INDEX client_keys_kid_idx ON agentidp.client_keys (kid);

/*
 * The token settings of a tenant (docs/tokens.md), checked when written
 * rather than failing every grant later.
 */
CREATE FUNCTION agentidp._valid_token_settings(settings jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (NOT settings ? 'access_token_lifetime'
		OR (jsonb_typeof(settings -> 'access_token_lifetime') = 'number'
			AND (settings ->> 'access_token_lifetime') ~ '^[0-9]{1,9}$'))
	AND (NOT settings ? 'refresh_tokens' OR jsonb_typeof(settings -> 'refresh_tokens') = 'boolean')
	AND (NOT settings ? 'refresh_token_lifetime'
		 OR (jsonb_typeof(settings -> 'refresh_token_lifetime') = 'number'
			 AND (settings ->> 'refresh_token_lifetime') ~ '^[0-9]{1,9}$'))
	AND (NOT settings ? 'refresh_token_idle'
		 OR (jsonb_typeof(settings -> 'refresh_token_idle') = 'number'
			 AND (settings ->> 'refresh_token_idle') ~ '^[0-9]{1,9}$'))
	AND (NOT settings ? 'audience' OR jsonb_typeof(settings -> 'audience') = 'string')
	AND (NOT settings ? 'audiences'
		 OR (jsonb_typeof(settings -> 'audiences') = 'array'
			 AND NOT EXISTS (SELECT FROM jsonb_array_elements(settings -> 'audiences') AS e
							 WHERE jsonb_typeof(e) <> 'string')));
COMMENT ON FUNCTION agentidp._valid_token_settings(jsonb) IS
'true when a tenant''s token settings have their types: whole seconds, booleans, strings';
ALTER TABLE agentidp.tenants ADD CONSTRAINT tenants_token_settings_valid
	CHECK (agentidp._valid_token_settings(settings));

/*
 * A client key is a public key, named by its thumbprint, whether it comes
 * through add_client_key or a direct INSERT of an administrator.
 */
CREATE FUNCTION agentidp._client_keys_before_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.kid := agentidp._public_jwk_kid(NEW.public_jwk);
	NEW.public_jwk := (NEW.public_jwk - 'kid') || jsonb_build_object('kid', NEW.kid);
	RETURN NEW;
END
$$;
CREATE TRIGGER client_keys_before_insert BEFORE INSERT ON agentidp.client_keys
	FOR EACH ROW EXECUTE FUNCTION agentidp._client_keys_before_insert();
COMMENT ON TABLE agentidp.refresh_tokens IS 'refresh tokens (hashed), rotated on every use, in families';

/*
 * jtis that must not be seen twice until they expire: client assertions
 * (private_key_jwt) and, later, DPoP proofs.
 */
CREATE TABLE agentidp.used_jtis (
	tenant_id	uuid NOT NULL,
	kind		text NOT NULL CONSTRAINT used_jtis_kind_valid CHECK (kind IN ('client_assertion', 'dpop_proof')),
	jti			text NOT NULL,
	expires_at	timestamptz NOT NULL,
	CONSTRAINT used_jtis_pkey PRIMARY KEY (tenant_id, kind, jti)
);
COMMENT ON TABLE agentidp.used_jtis IS 'jtis of client assertions (and DPoP proofs) seen, kept until they expire, to refuse replays';

SELECT pg_catalog.pg_extension_config_dump('agentidp.used_jtis', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.revoked_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.refresh_tokens', '');

DO $rls$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['revoked_tokens', 'refresh_tokens', 'used_jtis']
	LOOP
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I FORCE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format(
			'CREATE POLICY tenant_admin ON agentidp.%I '
			'USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]))', t);
	END LOOP;
END
$rls$;

-- deleting or suspending an agent ends its refresh tokens too
CREATE FUNCTION agentidp._agents_revoke_refresh() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE agentidp.refresh_tokens SET revoked_at = now()
	WHERE tenant_id = NEW.tenant_id AND agent_id = NEW.agent_id AND revoked_at IS NULL;
	RETURN NULL;
END
$$;
-- revoking a credential ends the refresh families it began (access tokens
-- carry it in their "cred" claim, which verification checks)
CREATE FUNCTION agentidp._credentials_revoke_refresh() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c text;
BEGIN
	-- each table's own id column: NEW is read only where it has one
	IF TG_TABLE_NAME = 'client_secrets' THEN
		c := 's:' || (to_jsonb(NEW) ->> 'secret_id');
	ELSE
		c := 'k:' || (to_jsonb(NEW) ->> 'key_id');
	END IF;
	UPDATE agentidp.refresh_tokens SET revoked_at = now()
	WHERE tenant_id = NEW.tenant_id AND revoked_at IS NULL AND cred = c;
	RETURN NULL;
END
$$;
CREATE TRIGGER revoke_refresh AFTER UPDATE OF revoked_at ON agentidp.client_secrets
	FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
	EXECUTE FUNCTION agentidp._credentials_revoke_refresh();
CREATE TRIGGER revoke_refresh AFTER UPDATE OF revoked_at ON agentidp.client_keys
	FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
	EXECUTE FUNCTION agentidp._credentials_revoke_refresh();

CREATE TRIGGER revoke_refresh AFTER UPDATE OF status ON agentidp.agents
	FOR EACH ROW WHEN (NEW.status <> 'active' AND OLD.status = 'active')
	EXECUTE FUNCTION agentidp._agents_revoke_refresh();

/*
 * Delegation policy (RFC 8693 "may_act" as data): which agent may act for
 * which, optionally within scopes.  Audited like the other policy tables.
 */
CREATE TABLE agentidp.may_act (
	tenant_id	uuid NOT NULL,
	subject_agent_id uuid NOT NULL,
	actor_agent_id uuid NOT NULL,
	scopes		text[] CONSTRAINT may_act_scopes_valid CHECK (scopes IS NULL OR agentidp._valid_scopes(scopes)),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT may_act_pkey PRIMARY KEY (tenant_id, subject_agent_id, actor_agent_id),
	CONSTRAINT may_act_subject_fkey FOREIGN KEY (tenant_id, subject_agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id) ON DELETE CASCADE,
	CONSTRAINT may_act_actor_fkey FOREIGN KEY (tenant_id, actor_agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id) ON DELETE CASCADE
);
COMMENT ON TABLE agentidp.may_act IS 'delegation policy: the actor may act for the subject (within scopes, when given)';
SELECT pg_catalog.pg_extension_config_dump('agentidp.may_act', '');
ALTER TABLE agentidp.may_act ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.may_act FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.may_act
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]))
	WITH CHECK (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));
CREATE TRIGGER agentidp_audit AFTER INSERT OR UPDATE OR DELETE ON agentidp.may_act
	FOR EACH ROW EXECUTE FUNCTION agentidp.audit_trigger();
CREATE TRIGGER agentidp_audit_truncate BEFORE TRUNCATE ON agentidp.may_act
	FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audited_truncate_refused();

CREATE FUNCTION agentidp.allow_delegation(subject_agent uuid, actor_agent uuid, scopes text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s agentidp.agents;
	a agentidp.agents;
BEGIN
	s := agentidp._visible_agent(subject_agent);
	a := agentidp._visible_agent(actor_agent);
	PERFORM agentidp._require(s.tenant_id = a.tenant_id, '22023',
		'the subject and the actor must belong to one tenant');
	PERFORM agentidp._require(s.agent_id <> a.agent_id, '22023', 'an agent does not act for itself');
	IF scopes IS NOT NULL THEN
		PERFORM agentidp._check_scopes(scopes);
	END IF;
	INSERT INTO agentidp.may_act AS m (tenant_id, subject_agent_id, actor_agent_id, scopes)
	VALUES (s.tenant_id, s.agent_id, a.agent_id,
			CASE WHEN scopes IS NOT NULL THEN ARRAY(SELECT DISTINCT x FROM unnest(scopes) AS x ORDER BY x) END)
	ON CONFLICT (tenant_id, subject_agent_id, actor_agent_id) DO UPDATE SET scopes = excluded.scopes;
END
$$;
COMMENT ON FUNCTION agentidp.allow_delegation(uuid, uuid, text[]) IS
'lets the actor agent exchange the subject agent''s tokens for delegated ones (within scopes, when given)';

CREATE FUNCTION agentidp.disallow_delegation(subject_agent uuid, actor_agent uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(subject_agent IS NOT NULL AND actor_agent IS NOT NULL, '22004',
		'subject_agent and actor_agent must not be null');
	DELETE FROM agentidp.may_act AS m
	WHERE m.subject_agent_id = disallow_delegation.subject_agent
	  AND m.actor_agent_id = disallow_delegation.actor_agent;
	PERFORM agentidp._require(FOUND, '42704', 'no such delegation');
END
$$;
COMMENT ON FUNCTION agentidp.disallow_delegation(uuid, uuid) IS
'ends an allow_delegation; tokens already exchanged stay valid until they expire';

CREATE FUNCTION agentidp.exchange_token(subject_token text, actor_token text DEFAULT NULL,
										scope text DEFAULT NULL, audience text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_exchange_token';
COMMENT ON FUNCTION agentidp.exchange_token(text, text, text, text) IS
'RFC 8693 token exchange for delegation: the subject''s token with an act claim naming the actor; scope only narrows';

/* the grants and token functions (src/tokens.c) */
CREATE FUNCTION agentidp.issue_token(client_id text, client_secret text,
									 scope text DEFAULT NULL, audience text DEFAULT NULL,
									 dpop_proof text DEFAULT NULL, htm text DEFAULT NULL,
									 htu text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_issue_token';
COMMENT ON FUNCTION agentidp.issue_token(text, text, text, text, text, text, text) IS
'OAuth2 client-credentials grant: an RFC 9068 access token (and a refresh token where the tenant enables them), as the RFC 6749 token response; with a DPoP proof the token is bound to its key';

CREATE FUNCTION agentidp.issue_token_jwt(client_assertion text, scope text DEFAULT NULL,
										 audience text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_issue_token_jwt';
COMMENT ON FUNCTION agentidp.issue_token_jwt(text, text, text) IS
'OAuth2 client-credentials grant with private_key_jwt client authentication (RFC 7523): the assertion is verified with the agent''s registered key and its jti is refused a second time';

CREATE FUNCTION agentidp._public_jwk_kid(jwk jsonb) RETURNS text
LANGUAGE c IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'agentidp_public_jwk_kid';
COMMENT ON FUNCTION agentidp._public_jwk_kid(jsonb) IS
'the RFC 7638 thumbprint of a valid public JWK; a private key is refused';

CREATE FUNCTION agentidp.add_client_key(agent_id uuid, public_jwk jsonb) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	k text;
BEGIN
	PERFORM agentidp._require(public_jwk IS NOT NULL, '22004', 'public_jwk must not be null');
	a := agentidp._visible_agent(agent_id);
	k := agentidp._public_jwk_kid(public_jwk);
	PERFORM agentidp._require(NOT EXISTS (SELECT FROM agentidp.client_keys AS x
		WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id AND x.kid = k), '23505',
		'the agent has this key already', format('Key "%s".', k));
	INSERT INTO agentidp.client_keys (tenant_id, agent_id, kid, public_jwk)
	VALUES (a.tenant_id, a.agent_id, k, (public_jwk - 'kid') || jsonb_build_object('kid', k));
	RETURN k;
END
$$;
COMMENT ON FUNCTION agentidp.add_client_key(uuid, jsonb) IS
'registers a public JWK an agent authenticates with (private_key_jwt); returns its kid, the RFC 7638 thumbprint';

CREATE FUNCTION agentidp.refresh_token(refresh_token text, client_id text, client_secret text DEFAULT NULL,
									   dpop_proof text DEFAULT NULL, htm text DEFAULT NULL,
									   htu text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_refresh_token';
COMMENT ON FUNCTION agentidp.refresh_token(text, text, text, text, text, text) IS
'OAuth2 refresh-token grant with rotation; a reused token revokes its family; grant errors come back as the RFC 6749 error object';

CREATE FUNCTION agentidp.verify_token(token text, audience text DEFAULT NULL) RETURNS jsonb
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'agentidp_verify_token';
COMMENT ON FUNCTION agentidp.verify_token(text, text) IS
'the claims of a valid access token of this database''s tenants; otherwise 28000 naming the reason';

CREATE FUNCTION agentidp.verify_dpop(access_token text, proof text, htm text, htu text,
									 audience text DEFAULT NULL) RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_verify_dpop';
COMMENT ON FUNCTION agentidp.verify_dpop(text, text, text, text, text) IS
'the claims of a DPoP-bound access token presented with a valid, unreplayed proof of its key for this request (RFC 9449)';

CREATE FUNCTION agentidp._verify_token_at(token text, audience text, now bigint) RETURNS jsonb
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'agentidp_verify_token_at';
COMMENT ON FUNCTION agentidp._verify_token_at(text, text, bigint) IS
'verify_token as if the time were now (Unix seconds), for claim test vectors; superusers only';

CREATE FUNCTION agentidp.revoke_token(token text, client_id text DEFAULT NULL) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_revoke_token';
COMMENT ON FUNCTION agentidp.revoke_token(text, text) IS
'RFC 7009 revocation: an access token by its jti, a refresh token with its family';

CREATE FUNCTION agentidp.introspect_token(token text) RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_introspect_token';
COMMENT ON FUNCTION agentidp.introspect_token(text) IS
'RFC 7662 introspection: {"active": false}, or the token''s claims with "active": true';

/*
 * The token endpoint as one function, for the HTTP front: the grant's
 * response, or the RFC 6749 section 5.2 error with its HTTP status, never
 * an exception for a refused request.  The refused grant's work rolls back
 * (a subtransaction) and its refusal is audited in the client's tenant, so
 * that a burst of failed attempts shows in the audit log.  Direct SQL
 * callers of the grant functions get errors instead, which roll back with
 * their transaction, audit row included.
 */
CREATE FUNCTION agentidp._audit_refusal(client_id text, grant_type text, error text, description text)
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_audit_refusal';
COMMENT ON FUNCTION agentidp._audit_refusal(text, text, text, text) IS
'audits a refused token request in the client''s tenant (token_endpoint calls it)';

CREATE FUNCTION agentidp.token_endpoint(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g text := request ->> 'grant_type';
	r jsonb;
	state text;
	msg text;
	err text;
	status int := 400;
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
			OR invalid_parameter_value OR null_value_not_allowed OR invalid_text_representation THEN
		GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		err := CASE
			WHEN msg = 'client authentication failed' THEN 'invalid_client'
			WHEN msg LIKE 'invalid DPoP proof%' THEN 'invalid_dpop_proof'
			WHEN msg LIKE 'invalid_scope%' THEN 'invalid_scope'
			WHEN msg LIKE 'invalid_target%' THEN 'invalid_target'
			-- RFC 8693 2.2.2: an invalid subject or actor token is invalid_request
			WHEN g = 'urn:ietf:params:oauth:grant-type:token-exchange' THEN 'invalid_request'
			WHEN state IN ('28000', '28P01') THEN 'invalid_grant'
			ELSE 'invalid_request' END;
		IF err = 'invalid_client' THEN
			status := 401;
		END IF;
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
COMMENT ON FUNCTION agentidp.token_endpoint(jsonb) IS
'the OAuth2 token endpoint: {"status", "body"} with the token response or the RFC 6749 error; refusals are audited';

CREATE FUNCTION agentidp.drain_refusals(max integer DEFAULT 1000) RETURNS integer
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_drain_refusals';
COMMENT ON FUNCTION agentidp.drain_refusals(integer) IS
'writes refusals of direct SQL token calls, queued in shared memory when their transactions rolled back, to the audit log; for the background worker or pg_cron; superusers only';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
-- the tenants' CHECK constraint runs as whoever writes a tenant
GRANT EXECUTE ON FUNCTION agentidp._valid_token_settings(jsonb) TO agentidp_admin, agentidp_service;

-- the HTTP front's: a refusal row names any client, so no one else may write one
GRANT EXECUTE ON FUNCTION
	agentidp.token_endpoint(jsonb),
	agentidp._audit_refusal(text, text, text, text),
	agentidp._require(boolean, text, text, text, text)
	TO agentidp_service;
GRANT EXECUTE ON FUNCTION
	agentidp._public_jwk_kid(jsonb),
	agentidp.add_client_key(uuid, jsonb),
	agentidp.allow_delegation(uuid, uuid, text[]),
	agentidp.disallow_delegation(uuid, uuid)
	TO agentidp_admin;
GRANT SELECT, INSERT, UPDATE (scopes), DELETE ON agentidp.may_act TO agentidp_admin;
GRANT INSERT (tenant_id, agent_id, kid, public_jwk) ON agentidp.client_keys TO agentidp_admin;
GRANT EXECUTE ON FUNCTION
	agentidp.issue_token(text, text, text, text, text, text, text),
	agentidp.issue_token_jwt(text, text, text),
	agentidp.exchange_token(text, text, text, text),
	agentidp.refresh_token(text, text, text, text, text, text),
	agentidp.verify_dpop(text, text, text, text, text),
	agentidp.verify_token(text, text),
	agentidp.revoke_token(text, text),
	agentidp.introspect_token(text)
	TO agentidp_admin, agentidp_service;
GRANT SELECT ON agentidp.revoked_tokens, agentidp.used_jtis TO agentidp_admin;
GRANT SELECT (tenant_id, token_id, family_id, agent_id, scope, audience, created_at,
			  expires_at, idle_expires_at, used_at, revoked_at, dpop_jkt, cred)
	ON agentidp.refresh_tokens TO agentidp_admin;
