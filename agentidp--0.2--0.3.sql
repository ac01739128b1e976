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
	CONSTRAINT refresh_tokens_pkey PRIMARY KEY (tenant_id, token_id),
	CONSTRAINT refresh_tokens_hash_key UNIQUE (token_hash),
	CONSTRAINT refresh_tokens_agent_fkey FOREIGN KEY (tenant_id, agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id)
);
CREATE INDEX refresh_tokens_family_idx ON agentidp.refresh_tokens (tenant_id, family_id);
COMMENT ON TABLE agentidp.refresh_tokens IS 'refresh tokens (hashed), rotated on every use, in families';

SELECT pg_catalog.pg_extension_config_dump('agentidp.revoked_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.refresh_tokens', '');

DO $rls$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['revoked_tokens', 'refresh_tokens']
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
CREATE TRIGGER revoke_refresh AFTER UPDATE OF status ON agentidp.agents
	FOR EACH ROW WHEN (NEW.status <> 'active' AND OLD.status = 'active')
	EXECUTE FUNCTION agentidp._agents_revoke_refresh();

/* the grants and token functions (src/tokens.c) */
CREATE FUNCTION agentidp.issue_token(client_id text, client_secret text,
									 scope text DEFAULT NULL, audience text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_issue_token';
COMMENT ON FUNCTION agentidp.issue_token(text, text, text, text) IS
'OAuth2 client-credentials grant: an RFC 9068 access token (and a refresh token where the tenant enables them), as the RFC 6749 token response';

CREATE FUNCTION agentidp.refresh_token(refresh_token text, client_id text, client_secret text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_refresh_token';
COMMENT ON FUNCTION agentidp.refresh_token(text, text, text) IS
'OAuth2 refresh-token grant with rotation; a reused token revokes its family; grant errors come back as the RFC 6749 error object';

CREATE FUNCTION agentidp.verify_token(token text, audience text DEFAULT NULL) RETURNS jsonb
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'agentidp_verify_token';
COMMENT ON FUNCTION agentidp.verify_token(text, text) IS
'the claims of a valid access token of this database''s tenants; otherwise 28000 naming the reason';

CREATE FUNCTION agentidp.revoke_token(token text, client_id text DEFAULT NULL) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_revoke_token';
COMMENT ON FUNCTION agentidp.revoke_token(text, text) IS
'RFC 7009 revocation: an access token by its jti, a refresh token with its family';

CREATE FUNCTION agentidp.introspect_token(token text) RETURNS jsonb
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'agentidp_introspect_token';
COMMENT ON FUNCTION agentidp.introspect_token(text) IS
'RFC 7662 introspection: {"active": false}, or the token''s claims with "active": true';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	agentidp.issue_token(text, text, text, text),
	agentidp.refresh_token(text, text, text),
	agentidp.verify_token(text, text),
	agentidp.revoke_token(text, text),
	agentidp.introspect_token(text)
	TO agentidp_admin, agentidp_service;
GRANT SELECT ON agentidp.revoked_tokens TO agentidp_admin;
GRANT SELECT (tenant_id, token_id, family_id, agent_id, scope, audience, created_at,
			  expires_at, idle_expires_at, used_at, revoked_at)
	ON agentidp.refresh_tokens TO agentidp_admin;
