/* agentidp--0.1.sql: tenants, agents, client credentials, roles */

\echo Use "CREATE EXTENSION agentidp" to load this file. \quit

/*
 * Database roles.  Roles are cluster-wide and outlive the extension, so
 * they are created only when missing (a second database reuses them).
 *   agentidp_admin    manages tenants it administers and their agents
 *   agentidp_service  what the HTTP front or PostgREST connects as: checks
 *                     client credentials, sees no table directly
 */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'agentidp_admin') THEN
		CREATE ROLE agentidp_admin NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'agentidp_service') THEN
		CREATE ROLE agentidp_service NOLOGIN;
	END IF;
END
$roles$;

/*
 * Validators.  Immutable SQL so the planner can inline them; the table
 * constraints use them, and so do the API functions, which raise a friendly
 * error before the constraint would.  Limits are documented in
 * docs/reference.md.
 */

-- tenant and role names: also used in URLs and cache keys
CREATE FUNCTION agentidp._valid_slug(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN name OPERATOR(pg_catalog.~) '^[a-z0-9][a-z0-9._-]{0,62}$';
COMMENT ON FUNCTION agentidp._valid_slug(text) IS
'true when the text is a valid tenant or role name: 1 to 63 characters of a-z, 0-9, ".", "_", "-", starting with a letter or digit';

CREATE FUNCTION agentidp._valid_agent_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.char_length(name) OPERATOR(pg_catalog.>=) 1
	AND pg_catalog.char_length(name) OPERATOR(pg_catalog.<=) 128
	AND name OPERATOR(pg_catalog.!~) '[[:cntrl:]]'
	AND name OPERATOR(pg_catalog.!~) '^[[:space:]]|[[:space:]]$';
COMMENT ON FUNCTION agentidp._valid_agent_name(text) IS
'true when the text is a valid agent name: 1 to 128 characters, no control characters, no leading or trailing white space';

-- RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
CREATE FUNCTION agentidp._valid_scope(scope text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN scope OPERATOR(pg_catalog.~) '^[\x21\x23-\x5b\x5d-\x7e]{1,128}$';
COMMENT ON FUNCTION agentidp._valid_scope(text) IS
'true when the text is a valid scope: 1 to 128 printable ASCII characters other than space, double quote and backslash (RFC 6749 section 3.3)';

CREATE FUNCTION agentidp._valid_scopes(scopes text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.cardinality(scopes) OPERATOR(pg_catalog.<=) 100
	AND COALESCE(pg_catalog.array_ndims(scopes), 1) OPERATOR(pg_catalog.=) 1
	AND NOT pg_catalog.array_position(scopes, NULL) IS NOT NULL
	AND (SELECT pg_catalog.bool_and(agentidp._valid_scope(s)) IS NOT FALSE
		 FROM pg_catalog.unnest(scopes) AS s);
COMMENT ON FUNCTION agentidp._valid_scopes(text[]) IS
'true when the array is a one-dimensional list of at most 100 valid scopes without NULLs';

CREATE FUNCTION agentidp._valid_issuer(issuer text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.char_length(issuer) OPERATOR(pg_catalog.<=) 255
	AND issuer OPERATOR(pg_catalog.~) '^https?://[^/?#[:space:][:cntrl:]]+(/[^?#[:space:][:cntrl:]]*)?$'
	AND issuer OPERATOR(pg_catalog.!~) '/$';
COMMENT ON FUNCTION agentidp._valid_issuer(text) IS
'true when the text is a valid issuer: an http or https URL of at most 255 characters with no query, fragment or trailing slash';

CREATE FUNCTION agentidp._valid_metadata(metadata jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.jsonb_typeof(metadata) OPERATOR(pg_catalog.=) 'object'
	AND pg_catalog.octet_length(metadata::text) OPERATOR(pg_catalog.<=) 16384;
COMMENT ON FUNCTION agentidp._valid_metadata(jsonb) IS
'true when the value is a JSON object of at most 16384 bytes as text';

/*
 * Tables.  Every table carries tenant_id, which leads its primary key, so
 * that a distributed engine can shard by tenant.  Row-level security is
 * enabled and forced on each, keyed on agentidp.admin_tenants().
 */
CREATE TABLE agentidp.tenants (
	tenant_id	uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	name		text NOT NULL CONSTRAINT tenants_name_valid CHECK (agentidp._valid_slug(name)),
	issuer		text NOT NULL CONSTRAINT tenants_issuer_valid CHECK (agentidp._valid_issuer(issuer)),
	status		text NOT NULL DEFAULT 'active'
				CONSTRAINT tenants_status_valid CHECK (status IN ('active', 'suspended')),
	settings	jsonb NOT NULL DEFAULT '{}'
				CONSTRAINT tenants_settings_valid CHECK (pg_catalog.jsonb_typeof(settings) OPERATOR(pg_catalog.=) 'object'),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT tenants_pkey PRIMARY KEY (tenant_id),
	CONSTRAINT tenants_name_key UNIQUE (name),
	CONSTRAINT tenants_issuer_key UNIQUE (issuer)
);
COMMENT ON TABLE agentidp.tenants IS 'tenants: each one an issuer with its own agents, keys and audit chain';

-- which database roles administer which tenant; membership is inherited
CREATE TABLE agentidp.tenant_admins (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants ON DELETE CASCADE,
	member		regrole NOT NULL,
	-- the role's name when bound: a binding counts only while oid and name
	-- both match, so a dropped role's oid, reused later, inherits nothing
	member_name name NOT NULL,
	granted_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT tenant_admins_pkey PRIMARY KEY (tenant_id, member)
);
COMMENT ON TABLE agentidp.tenant_admins IS 'database roles (and their members) that administer a tenant';

CREATE TABLE agentidp.agents (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants,
	agent_id	uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	-- the OAuth2 client_id: public, random, unique across tenants
	client_id	text NOT NULL DEFAULT pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''),
	name		text NOT NULL CONSTRAINT agents_name_valid CHECK (agentidp._valid_agent_name(name)),
	status		text NOT NULL DEFAULT 'active'
				CONSTRAINT agents_status_valid CHECK (status IN ('active', 'suspended', 'deleted')),
	allowed_scopes text[] NOT NULL DEFAULT '{}'
				CONSTRAINT agents_allowed_scopes_valid CHECK (agentidp._valid_scopes(allowed_scopes)),
	metadata	jsonb NOT NULL DEFAULT '{}'
				CONSTRAINT agents_metadata_valid CHECK (agentidp._valid_metadata(metadata)),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	suspended_at timestamptz,
	deleted_at	timestamptz,
	CONSTRAINT agents_pkey PRIMARY KEY (tenant_id, agent_id),
	CONSTRAINT agents_agent_id_key UNIQUE (agent_id),
	CONSTRAINT agents_client_id_key UNIQUE (client_id)
);
-- a deleted agent frees its name
CREATE UNIQUE INDEX agents_tenant_name_key ON agentidp.agents (tenant_id, name)
	WHERE status OPERATOR(pg_catalog.<>) 'deleted';
COMMENT ON TABLE agentidp.agents IS 'AI agents: OAuth2 clients of a tenant; deleted agents are kept, with their credentials revoked';

CREATE TABLE agentidp.client_secrets (
	tenant_id	uuid NOT NULL,
	secret_id	uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	agent_id	uuid NOT NULL,
	-- SHA-256 of the secret (src/credentials.c); the secret itself is never stored
	secret_hash bytea NOT NULL
				CONSTRAINT client_secrets_hash_length CHECK (pg_catalog.octet_length(secret_hash) OPERATOR(pg_catalog.=) 32),
	-- last characters of the secret, to tell secrets apart in listings
	hint		text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	expires_at	timestamptz,
	revoked_at	timestamptz,
	CONSTRAINT client_secrets_pkey PRIMARY KEY (tenant_id, secret_id),
	CONSTRAINT client_secrets_agent_fkey FOREIGN KEY (tenant_id, agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id),
	CONSTRAINT client_secrets_expiry_valid CHECK (expires_at IS NULL OR expires_at OPERATOR(pg_catalog.>) created_at)
);
CREATE INDEX client_secrets_agent_idx ON agentidp.client_secrets (tenant_id, agent_id);
COMMENT ON TABLE agentidp.client_secrets IS 'client secrets of agents, stored as SHA-256 hashes';

-- public-key credentials (private_key_jwt, RFC 7523); functions come with the token service
CREATE TABLE agentidp.client_keys (
	tenant_id	uuid NOT NULL,
	key_id		uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	agent_id	uuid NOT NULL,
	kid			text NOT NULL,
	public_jwk	jsonb NOT NULL
				CONSTRAINT client_keys_jwk_valid CHECK (pg_catalog.jsonb_typeof(public_jwk) OPERATOR(pg_catalog.=) 'object'),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	expires_at	timestamptz,
	revoked_at	timestamptz,
	CONSTRAINT client_keys_pkey PRIMARY KEY (tenant_id, key_id),
	CONSTRAINT client_keys_agent_fkey FOREIGN KEY (tenant_id, agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id),
	CONSTRAINT client_keys_kid_key UNIQUE (tenant_id, agent_id, kid)
);
COMMENT ON TABLE agentidp.client_keys IS 'public keys that agents authenticate with (private_key_jwt)';

CREATE TABLE agentidp.roles (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants,
	role_id		uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	name		text NOT NULL CONSTRAINT roles_name_valid CHECK (agentidp._valid_slug(name)),
	scopes		text[] NOT NULL DEFAULT '{}'
				CONSTRAINT roles_scopes_valid CHECK (agentidp._valid_scopes(scopes)),
	description text
				CONSTRAINT roles_description_valid CHECK (pg_catalog.char_length(description) OPERATOR(pg_catalog.<=) 1000),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT roles_pkey PRIMARY KEY (tenant_id, role_id),
	CONSTRAINT roles_name_key UNIQUE (tenant_id, name)
);
COMMENT ON TABLE agentidp.roles IS 'named sets of scopes that agents of a tenant can be granted';

CREATE TABLE agentidp.agent_roles (
	tenant_id	uuid NOT NULL,
	agent_id	uuid NOT NULL,
	role_id		uuid NOT NULL,
	granted_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT agent_roles_pkey PRIMARY KEY (tenant_id, agent_id, role_id),
	CONSTRAINT agent_roles_agent_fkey FOREIGN KEY (tenant_id, agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id) ON DELETE CASCADE,
	CONSTRAINT agent_roles_role_fkey FOREIGN KEY (tenant_id, role_id)
		REFERENCES agentidp.roles (tenant_id, role_id) ON DELETE CASCADE
);
CREATE INDEX agent_roles_role_idx ON agentidp.agent_roles (tenant_id, role_id);
COMMENT ON TABLE agentidp.agent_roles IS 'roles granted to agents';

-- pg_dump keeps the rows of extension tables only when told to
SELECT pg_catalog.pg_extension_config_dump('agentidp.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.tenant_admins', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.agents', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.client_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.client_keys', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.roles', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.agent_roles', '');

/*
 * Row-level security.  admin_tenants() reads tenant_admins as the extension
 * owner (src/tenants.c), so the policy on tenant_admins itself does not
 * recurse.  The sub-select makes it an init plan: evaluated once per query,
 * not once per row.
 */
CREATE FUNCTION agentidp.admin_tenants() RETURNS uuid[]
LANGUAGE c STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'agentidp_admin_tenants';
COMMENT ON FUNCTION agentidp.admin_tenants() IS
'tenants the current role administers, directly or through role membership';

DO $rls$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['tenants', 'tenant_admins', 'agents', 'client_secrets',
							 'client_keys', 'roles', 'agent_roles']
	LOOP
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I FORCE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format(
			'CREATE POLICY tenant_admin ON agentidp.%I '
			'USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[])) '
			'WITH CHECK (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]))', t);
	END LOOP;
END
$rls$;

/*
 * Invariants, kept by triggers so that they hold for direct writes (which
 * administrators may make within their column privileges) as for the API.
 */

-- timestamps are the database's to set; a deleted agent is final, and
-- deleting one revokes its credentials and roles (AFTER trigger below)
CREATE FUNCTION agentidp._agents_before_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF OLD.status = 'deleted' THEN
		RAISE EXCEPTION 'a deleted agent cannot be changed'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('Agent "%s" was deleted at %s.', OLD.agent_id, OLD.deleted_at),
				  HINT = 'Register a new agent instead.';
	END IF;
	NEW.updated_at := now();
	IF NEW.status IS DISTINCT FROM OLD.status THEN
		NEW.suspended_at := CASE WHEN NEW.status = 'suspended' THEN now() END;
		NEW.deleted_at := CASE WHEN NEW.status = 'deleted' THEN now() END;
	ELSE
		NEW.suspended_at := OLD.suspended_at;
		NEW.deleted_at := OLD.deleted_at;
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION agentidp._agents_before_update() IS
'trigger: keeps agents'' timestamps and refuses changes to deleted agents';
CREATE TRIGGER agents_before_update BEFORE UPDATE ON agentidp.agents
	FOR EACH ROW EXECUTE FUNCTION agentidp._agents_before_update();

CREATE FUNCTION agentidp._agents_after_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE agentidp.client_secrets AS s SET revoked_at = now()
		WHERE s.tenant_id = NEW.tenant_id AND s.agent_id = NEW.agent_id AND s.revoked_at IS NULL;
	UPDATE agentidp.client_keys AS k SET revoked_at = now()
		WHERE k.tenant_id = NEW.tenant_id AND k.agent_id = NEW.agent_id AND k.revoked_at IS NULL;
	DELETE FROM agentidp.agent_roles AS r
		WHERE r.tenant_id = NEW.tenant_id AND r.agent_id = NEW.agent_id;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION agentidp._agents_after_delete() IS
'trigger: an agent marked deleted loses every credential and role';
CREATE TRIGGER agents_after_delete AFTER UPDATE OF status ON agentidp.agents
	FOR EACH ROW WHEN (NEW.status = 'deleted' AND OLD.status <> 'deleted')
	EXECUTE FUNCTION agentidp._agents_after_delete();

-- revocation is final and dated by the database
CREATE FUNCTION agentidp._credentials_before_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF OLD.revoked_at IS NOT NULL THEN
		IF NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
			RAISE EXCEPTION 'a revoked credential cannot be changed'
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Create a new credential instead.';
		END IF;
	ELSIF NEW.revoked_at IS NOT NULL THEN
		NEW.revoked_at := now();
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION agentidp._credentials_before_update() IS
'trigger: revoked_at is set once, to the time of revocation, and never cleared';
CREATE TRIGGER client_secrets_before_update BEFORE UPDATE ON agentidp.client_secrets
	FOR EACH ROW EXECUTE FUNCTION agentidp._credentials_before_update();
CREATE TRIGGER client_keys_before_update BEFORE UPDATE ON agentidp.client_keys
	FOR EACH ROW EXECUTE FUNCTION agentidp._credentials_before_update();

CREATE FUNCTION agentidp._touch_updated_at() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.updated_at := now();
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION agentidp._touch_updated_at() IS
'trigger: sets updated_at to the time of the change';
CREATE TRIGGER tenants_before_update BEFORE UPDATE ON agentidp.tenants
	FOR EACH ROW EXECUTE FUNCTION agentidp._touch_updated_at();

-- a binding records the role's true name, checked by admin_tenants(); on
-- UPDATE too, so re-binding a renamed role can refresh it and nothing else
CREATE FUNCTION agentidp._tenant_admins_record_name() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.member_name := (SELECT r.rolname FROM pg_catalog.pg_roles AS r WHERE r.oid = NEW.member);
	IF NEW.member_name IS NULL THEN
		RAISE EXCEPTION 'role with OID % does not exist', NEW.member::oid
			USING ERRCODE = 'undefined_object';
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION agentidp._tenant_admins_record_name() IS
'trigger: records the current name of a role bound to a tenant';
CREATE TRIGGER tenant_admins_record_name BEFORE INSERT OR UPDATE ON agentidp.tenant_admins
	FOR EACH ROW EXECUTE FUNCTION agentidp._tenant_admins_record_name();

-- while a tenant exists, someone administers it.  SECURITY DEFINER: the
-- rule is global, and under row-level security a deleter who has just
-- removed its own binding would no longer see the tenant nor its admins.
CREATE FUNCTION agentidp._tenant_admins_before_delete() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- the tenant row lock serialises concurrent removals of its admins; a
	-- tenant being deleted (cascade) is gone already and needs no admin
	PERFORM FROM agentidp.tenants AS t WHERE t.tenant_id = OLD.tenant_id FOR NO KEY UPDATE;
	-- only live bindings count (see admin_tenants() in src/tenants.c)
	IF FOUND AND NOT EXISTS (
		SELECT FROM agentidp.tenant_admins AS a
		JOIN pg_catalog.pg_roles AS r ON r.oid = a.member::oid AND r.rolname = a.member_name
		WHERE a.tenant_id = OLD.tenant_id AND a.member <> OLD.member) THEN
		RAISE EXCEPTION 'cannot remove the last administrator of a tenant'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add another administrator with agentidp.add_tenant_admin() first.';
	END IF;
	RETURN OLD;
END
$$;
COMMENT ON FUNCTION agentidp._tenant_admins_before_delete() IS
'trigger: refuses to remove the last live administrator binding of an existing tenant';
CREATE TRIGGER tenant_admins_before_delete BEFORE DELETE ON agentidp.tenant_admins
	FOR EACH ROW EXECUTE FUNCTION agentidp._tenant_admins_before_delete();

/*
 * Internal helpers of the API functions below.
 */
CREATE FUNCTION agentidp._require(ok boolean, sqlstate text, message text,
								  detail text DEFAULT NULL, hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- RAISE takes no NULL option, and an empty one would still print
	IF ok IS TRUE THEN
		RETURN;
	ELSIF detail IS NULL AND hint IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message;
	ELSIF hint IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail;
	ELSIF detail IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, HINT = hint;
	ELSE
		RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail, HINT = hint;
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._require(boolean, text, text, text, text) IS
'raises the given error unless ok is true';

CREATE FUNCTION agentidp._check_scopes(scopes text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s text;
BEGIN
	PERFORM agentidp._require(scopes IS NOT NULL, '22004', 'scopes must not be null',
		hint => 'Pass an empty array for no scopes.');
	PERFORM agentidp._require(coalesce(array_ndims(scopes), 1) = 1, '22023',
		'scopes must be a one-dimensional array');
	PERFORM agentidp._require(cardinality(scopes) <= 100, '22023', 'too many scopes',
		format('%s scopes were given; at most 100 are allowed.', cardinality(scopes)));
	FOREACH s IN ARRAY scopes LOOP
		PERFORM agentidp._require(s IS NOT NULL, '22004', 'scope must not be null');
		PERFORM agentidp._require(agentidp._valid_scope(s), '22023',
			format('invalid scope "%s"', left(s, 64)),
			'A scope is 1 to 128 printable ASCII characters other than space, double quote and backslash (RFC 6749, section 3.3).');
	END LOOP;
	-- a set, not a list: sorted and without duplicates
	RETURN ARRAY(SELECT DISTINCT u FROM unnest(scopes) AS u ORDER BY u);
END
$$;
COMMENT ON FUNCTION agentidp._check_scopes(text[]) IS
'validates a list of scopes and returns it sorted and without duplicates';

CREATE FUNCTION agentidp._check_agent_name(name text) RETURNS void
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT agentidp._require(name IS NOT NULL, '22004', 'agent name must not be null');
	SELECT agentidp._require(agentidp._valid_agent_name(name), '22023', 'invalid agent name',
		'Agent names are 1 to 128 characters, with no control characters and no leading or trailing white space.');
END;
COMMENT ON FUNCTION agentidp._check_agent_name(text) IS
'raises an error unless the text is a valid agent name';

CREATE FUNCTION agentidp._check_metadata(metadata jsonb) RETURNS void
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT agentidp._require(metadata IS NOT NULL, '22004', 'metadata must not be null',
		hint => 'Pass ''{}'' for no metadata.');
	SELECT agentidp._require(pg_catalog.jsonb_typeof(metadata) OPERATOR(pg_catalog.=) 'object',
		'22023', 'metadata must be a JSON object');
	SELECT agentidp._require(agentidp._valid_metadata(metadata), '22023', 'metadata is too large',
		'Metadata may be at most 16384 bytes as JSON text.');
END;
COMMENT ON FUNCTION agentidp._check_metadata(jsonb) IS
'raises an error unless the value is valid agent metadata';

-- a tenant the caller administers; locked against concurrent changes
CREATE FUNCTION agentidp._visible_tenant(tenant_id uuid) RETURNS agentidp.tenants
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t agentidp.tenants;
BEGIN
	PERFORM agentidp._require(tenant_id IS NOT NULL, '22004', 'tenant_id must not be null');
	SELECT * INTO t FROM agentidp.tenants AS x WHERE x.tenant_id = _visible_tenant.tenant_id
		FOR KEY SHARE;
	PERFORM agentidp._require(FOUND, '42704', 'tenant does not exist',
		format('No tenant with id "%s" is visible to role "%s".', tenant_id, current_user));
	RETURN t;
END
$$;
COMMENT ON FUNCTION agentidp._visible_tenant(uuid) IS
'the tenant row if the current role administers it, else an error';

-- an agent (not deleted) of a tenant the caller administers, locked for update
CREATE FUNCTION agentidp._visible_agent(agent_id uuid) RETURNS agentidp.agents
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
BEGIN
	PERFORM agentidp._require(agent_id IS NOT NULL, '22004', 'agent_id must not be null');
	SELECT * INTO a FROM agentidp.agents AS x
		WHERE x.agent_id = _visible_agent.agent_id AND x.status <> 'deleted'
		FOR NO KEY UPDATE;
	PERFORM agentidp._require(FOUND, '42704', 'agent does not exist',
		format('No agent with id "%s" is visible to role "%s".', agent_id, current_user));
	RETURN a;
END
$$;
COMMENT ON FUNCTION agentidp._visible_agent(uuid) IS
'the agent row, locked, if it is not deleted and the current role administers its tenant, else an error';

/*
 * Tenants.
 */
CREATE FUNCTION agentidp._insert_tenant(name text, issuer text) RETURNS uuid
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_insert_tenant';
COMMENT ON FUNCTION agentidp._insert_tenant(text, text) IS
'inserts a tenant and makes the current role its administrator; called by create_tenant()';

CREATE FUNCTION agentidp.create_tenant(name text, issuer text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(name IS NOT NULL, '22004', 'tenant name must not be null');
	PERFORM agentidp._require(agentidp._valid_slug(name), '22023', 'invalid tenant name',
		'Tenant names are 1 to 63 characters: lower-case letters, digits, ".", "_" and "-", starting with a letter or digit.');
	PERFORM agentidp._require(issuer IS NULL OR agentidp._valid_issuer(issuer), '22023', 'invalid issuer',
		'An issuer is an http or https URL of at most 255 characters with no query, fragment or trailing slash.',
		'Pass NULL to derive the issuer from agentidp.issuer_base.');
	RETURN agentidp._insert_tenant(name, issuer);
END
$$;
COMMENT ON FUNCTION agentidp.create_tenant(text, text) IS
'creates a tenant and makes the current role its administrator; returns the tenant id';

CREATE FUNCTION agentidp.add_tenant_admin(tenant_id uuid, member regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._visible_tenant(tenant_id);
	PERFORM agentidp._require(member IS NOT NULL, '22004', 'member must not be null');
	-- binding again refreshes the recorded name of a renamed role
	INSERT INTO agentidp.tenant_admins AS t (tenant_id, member)
		VALUES (add_tenant_admin.tenant_id, add_tenant_admin.member)
		ON CONFLICT ON CONSTRAINT tenant_admins_pkey
		DO UPDATE SET member_name = EXCLUDED.member_name;
END
$$;
COMMENT ON FUNCTION agentidp.add_tenant_admin(uuid, regrole) IS
'lets a database role (and its members) administer a tenant the current role administers';

CREATE FUNCTION agentidp.remove_tenant_admin(tenant_id uuid, member regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._visible_tenant(tenant_id);
	PERFORM agentidp._require(member IS NOT NULL, '22004', 'member must not be null');
	-- the last administrator is kept by trigger _tenant_admins_before_delete
	DELETE FROM agentidp.tenant_admins AS t
		WHERE t.tenant_id = remove_tenant_admin.tenant_id AND t.member = remove_tenant_admin.member;
	PERFORM agentidp._require(FOUND, '42704', 'role is not an administrator of this tenant',
		format('Role "%s" does not administer this tenant.', member));
END
$$;
COMMENT ON FUNCTION agentidp.remove_tenant_admin(uuid, regrole) IS
'stops a database role from administering a tenant; the last administrator cannot be removed';

/*
 * Agents.
 */
CREATE FUNCTION agentidp.register_agent(tenant_id uuid, name text,
										allowed_scopes text[] DEFAULT '{}',
										metadata jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t agentidp.tenants;
	scopes text[];
	id uuid;
BEGIN
	t := agentidp._visible_tenant(tenant_id);
	PERFORM agentidp._require(t.status = 'active', '55000', 'tenant is suspended',
		format('Tenant "%s" is suspended.', t.name));
	PERFORM agentidp._check_agent_name(name);
	scopes := agentidp._check_scopes(allowed_scopes);
	PERFORM agentidp._check_metadata(metadata);
	BEGIN
		INSERT INTO agentidp.agents AS a (tenant_id, name, allowed_scopes, metadata)
			VALUES (register_agent.tenant_id, register_agent.name, scopes, register_agent.metadata)
			RETURNING a.agent_id INTO id;
	EXCEPTION WHEN unique_violation THEN
		RAISE EXCEPTION 'an agent named "%" already exists in tenant "%"', name, t.name
			USING ERRCODE = 'unique_violation',
				  HINT = 'Agent names are unique within a tenant until the agent is deleted.';
	END;
	RETURN id;
END
$$;
COMMENT ON FUNCTION agentidp.register_agent(uuid, text, text[], jsonb) IS
'registers an agent in a tenant the current role administers; returns the agent id';

-- suspend, reactivate and delete differ only in the status they set;
-- the triggers on agents keep timestamps and revoke what deletion revokes
CREATE FUNCTION agentidp._set_agent_status(agent_id uuid, status text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
BEGIN
	a := agentidp._visible_agent(agent_id);
	IF a.status <> _set_agent_status.status THEN
		UPDATE agentidp.agents AS x SET status = _set_agent_status.status
			WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id;
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._set_agent_status(uuid, text) IS
'sets the status of an agent the current role administers, if it differs';

CREATE FUNCTION agentidp.suspend_agent(agent_id uuid) RETURNS void
LANGUAGE sql
BEGIN ATOMIC
	SELECT agentidp._set_agent_status(agent_id, 'suspended');
END;
COMMENT ON FUNCTION agentidp.suspend_agent(uuid) IS
'suspends an agent: its credentials stop authenticating until it is reactivated';

CREATE FUNCTION agentidp.reactivate_agent(agent_id uuid) RETURNS void
LANGUAGE sql
BEGIN ATOMIC
	SELECT agentidp._set_agent_status(agent_id, 'active');
END;
COMMENT ON FUNCTION agentidp.reactivate_agent(uuid) IS
'reactivates a suspended agent';

CREATE FUNCTION agentidp.delete_agent(agent_id uuid) RETURNS void
LANGUAGE sql
BEGIN ATOMIC
	SELECT agentidp._set_agent_status(agent_id, 'deleted');
END;
COMMENT ON FUNCTION agentidp.delete_agent(uuid) IS
'deletes an agent: revokes all its credentials and roles and frees its name; the row is kept for the record';

CREATE FUNCTION agentidp.set_allowed_scopes(agent_id uuid, allowed_scopes text[]) RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	scopes text[];
BEGIN
	a := agentidp._visible_agent(agent_id);
	scopes := agentidp._check_scopes(allowed_scopes);
	UPDATE agentidp.agents AS x SET allowed_scopes = scopes
		WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id;
	RETURN scopes;
END
$$;
COMMENT ON FUNCTION agentidp.set_allowed_scopes(uuid, text[]) IS
'replaces the scopes an agent may be granted directly; returns them normalised';

/*
 * Client credentials.
 */
CREATE FUNCTION agentidp.create_client_secret(agent_id uuid, expires_in interval DEFAULT NULL)
RETURNS TABLE(client_id text, client_secret text)
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_create_client_secret';
COMMENT ON FUNCTION agentidp.create_client_secret(uuid, interval) IS
'creates a client secret for an active agent; the secret is returned this once and stored only as a hash';

CREATE FUNCTION agentidp.revoke_client_secret(client_id text, secret_id uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	n integer;
BEGIN
	PERFORM agentidp._require(client_id IS NOT NULL, '22004', 'client_id must not be null');
	SELECT * INTO a FROM agentidp.agents AS x
		WHERE x.client_id = revoke_client_secret.client_id AND x.status <> 'deleted'
		FOR NO KEY UPDATE;
	PERFORM agentidp._require(FOUND, '42704', 'client does not exist',
		format('No client with client_id "%s" is visible to role "%s".', left(client_id, 128), current_user));
	UPDATE agentidp.client_secrets AS s SET revoked_at = now()
		WHERE s.tenant_id = a.tenant_id AND s.agent_id = a.agent_id
		  AND (revoke_client_secret.secret_id IS NULL OR s.secret_id = revoke_client_secret.secret_id)
		  AND s.revoked_at IS NULL;
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM agentidp._require(n > 0 OR secret_id IS NULL, '42704', 'client secret does not exist',
		format('Client "%s" has no unrevoked secret with id "%s".', client_id, secret_id));
	RETURN n;
END
$$;
COMMENT ON FUNCTION agentidp.revoke_client_secret(text, uuid) IS
'revokes one secret of a client, or all of them when secret_id is NULL; returns how many were revoked';

CREATE FUNCTION agentidp.check_client_secret(client_id text, client_secret text) RETURNS uuid
LANGUAGE c
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'agentidp_check_client_secret';
COMMENT ON FUNCTION agentidp.check_client_secret(text, text) IS
'returns the agent id if the secret is a current secret of an active client; otherwise raises 28000 with one message for every failure';

/*
 * Roles: named sets of scopes.
 */
CREATE FUNCTION agentidp.create_role(tenant_id uuid, name text, scopes text[] DEFAULT '{}',
									 description text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t agentidp.tenants;
	id uuid;
	normalised text[];
BEGIN
	t := agentidp._visible_tenant(tenant_id);
	PERFORM agentidp._require(name IS NOT NULL, '22004', 'role name must not be null');
	PERFORM agentidp._require(agentidp._valid_slug(name), '22023', 'invalid role name',
		'Role names are 1 to 63 characters: lower-case letters, digits, ".", "_" and "-", starting with a letter or digit.');
	normalised := agentidp._check_scopes(scopes);
	PERFORM agentidp._require(description IS NULL OR char_length(description) <= 1000, '22023',
		'role description is too long', 'Descriptions are at most 1000 characters.');
	BEGIN
		INSERT INTO agentidp.roles AS r (tenant_id, name, scopes, description)
			VALUES (create_role.tenant_id, create_role.name, normalised, create_role.description)
			RETURNING r.role_id INTO id;
	EXCEPTION WHEN unique_violation THEN
		RAISE EXCEPTION 'a role named "%" already exists in tenant "%"', name, t.name
			USING ERRCODE = 'unique_violation';
	END;
	RETURN id;
END
$$;
COMMENT ON FUNCTION agentidp.create_role(uuid, text, text[], text) IS
'creates a named set of scopes in a tenant; returns the role id';

-- a role of a tenant the caller administers
CREATE FUNCTION agentidp._visible_role(tenant_id uuid, name text) RETURNS agentidp.roles
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r agentidp.roles;
BEGIN
	PERFORM agentidp._require(name IS NOT NULL, '22004', 'role name must not be null');
	SELECT * INTO r FROM agentidp.roles AS x
		WHERE x.tenant_id = _visible_role.tenant_id AND x.name = _visible_role.name;
	PERFORM agentidp._require(FOUND, '42704', format('role "%s" does not exist', left(name, 63)));
	RETURN r;
END
$$;
COMMENT ON FUNCTION agentidp._visible_role(uuid, text) IS
'the role row of a tenant the current role administers, else an error';

CREATE FUNCTION agentidp.drop_role(tenant_id uuid, name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r agentidp.roles;
BEGIN
	PERFORM agentidp._visible_tenant(tenant_id);
	r := agentidp._visible_role(tenant_id, name);
	DELETE FROM agentidp.roles AS x WHERE x.tenant_id = r.tenant_id AND x.role_id = r.role_id;
END
$$;
COMMENT ON FUNCTION agentidp.drop_role(uuid, text) IS
'drops a role; agents that held it lose its scopes';

CREATE FUNCTION agentidp.grant_role(agent_id uuid, role_name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	r agentidp.roles;
BEGIN
	a := agentidp._visible_agent(agent_id);
	r := agentidp._visible_role(a.tenant_id, role_name);
	INSERT INTO agentidp.agent_roles (tenant_id, agent_id, role_id)
		VALUES (a.tenant_id, a.agent_id, r.role_id)
		ON CONFLICT ON CONSTRAINT agent_roles_pkey DO NOTHING;
END
$$;
COMMENT ON FUNCTION agentidp.grant_role(uuid, text) IS
'grants a role of the agent''s tenant to the agent';

CREATE FUNCTION agentidp.revoke_role(agent_id uuid, role_name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	r agentidp.roles;
BEGIN
	a := agentidp._visible_agent(agent_id);
	r := agentidp._visible_role(a.tenant_id, role_name);
	DELETE FROM agentidp.agent_roles AS x
		WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id AND x.role_id = r.role_id;
END
$$;
COMMENT ON FUNCTION agentidp.revoke_role(uuid, text) IS
'revokes a role from an agent';

CREATE FUNCTION agentidp.effective_scopes(agent_id uuid) RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
BEGIN
	PERFORM agentidp._require(agent_id IS NOT NULL, '22004', 'agent_id must not be null');
	SELECT * INTO a FROM agentidp.agents AS x
		WHERE x.agent_id = effective_scopes.agent_id AND x.status <> 'deleted';
	PERFORM agentidp._require(FOUND, '42704', 'agent does not exist',
		format('No agent with id "%s" is visible to role "%s".', agent_id, current_user));
	RETURN ARRAY(
		SELECT DISTINCT s FROM (
			SELECT unnest(a.allowed_scopes) AS s
			UNION ALL
			SELECT unnest(r.scopes) FROM agentidp.agent_roles AS ar
				JOIN agentidp.roles AS r ON r.tenant_id = ar.tenant_id AND r.role_id = ar.role_id
				WHERE ar.tenant_id = a.tenant_id AND ar.agent_id = a.agent_id
		) AS u ORDER BY s);
END
$$;
COMMENT ON FUNCTION agentidp.effective_scopes(uuid) IS
'the scopes an agent may be granted: its allowed scopes and those of its roles, sorted';

/*
 * JOSE (src/jose.c, src/jose_json.c, src/jwk.c): pure functions, no table
 * access.
 */
CREATE FUNCTION agentidp.jws_sign(payload jsonb, private_jwk jsonb, header jsonb DEFAULT '{}')
RETURNS text
LANGUAGE c VOLATILE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_jws_sign';
COMMENT ON FUNCTION agentidp.jws_sign(jsonb, jsonb, jsonb) IS
'signs a JSON payload as a compact JWS with a private JWK (ES256, RS256, PS256, EdDSA, HS256)';

CREATE FUNCTION agentidp.jws_verify(token text, jwks jsonb, algorithms text[])
RETURNS jsonb
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_jws_verify';
COMMENT ON FUNCTION agentidp.jws_verify(text, jsonb, text[]) IS
'verifies a compact JWS against a key set and an algorithm allowlist and returns its payload; raises 22023 (malformed) or 28000 (not trusted)';

CREATE FUNCTION agentidp.jwk_thumbprint(jwk jsonb) RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_jwk_thumbprint_sql';
COMMENT ON FUNCTION agentidp.jwk_thumbprint(jsonb) IS
'the RFC 7638 thumbprint of a JWK (base64url SHA-256)';

CREATE FUNCTION agentidp.generate_jwk(alg text) RETURNS jsonb
LANGUAGE c VOLATILE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_generate_jwk';
COMMENT ON FUNCTION agentidp.generate_jwk(text) IS
'a new private JWK for ES256, RS256, PS256, EdDSA or HS256; superusers only, since it returns private key material';

CREATE FUNCTION agentidp._verify_signature(alg text, jwk jsonb, message bytea,
										   signature bytea, der boolean DEFAULT false)
RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_verify_signature';
COMMENT ON FUNCTION agentidp._verify_signature(text, jsonb, bytea, bytea, boolean) IS
'the signature check of jws_verify on raw bytes, for test vectors; superusers only';

CREATE FUNCTION agentidp._sign_signature(alg text, jwk jsonb, message bytea) RETURNS bytea
LANGUAGE c VOLATILE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_sign_signature';
COMMENT ON FUNCTION agentidp._sign_signature(text, jsonb, bytea) IS
'the signature step of jws_sign on raw bytes, for test vectors; superusers only';

/*
 * Signing keys (src/keys.c).  Private keys are stored sealed with
 * AES-256-GCM under a key-encryption key from agentidp.kek_file, which is
 * in no table; no role but the owner reads wrapped_key.  A key's state
 * follows from its times (see signing_key_states).
 */
CREATE TABLE agentidp.signing_keys (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants,
	kid			text NOT NULL,			-- the RFC 7638 thumbprint
	alg			text NOT NULL
				CONSTRAINT signing_keys_alg_valid CHECK (alg IN ('ES256', 'RS256', 'PS256', 'EdDSA')),
	public_jwk	jsonb NOT NULL,
	wrapped_key bytea NOT NULL,			-- IV || AES-256-GCM(private JWK) || tag
	kek_id		text NOT NULL,			-- which key-encryption key sealed it
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	activates_at timestamptz NOT NULL,
	CONSTRAINT signing_keys_pkey PRIMARY KEY (tenant_id, kid)
);
CREATE INDEX signing_keys_activation_idx ON agentidp.signing_keys (tenant_id, activates_at);
COMMENT ON TABLE agentidp.signing_keys IS 'tenants'' signing keys, private halves sealed under the key-encryption key';
SELECT pg_catalog.pg_extension_config_dump('agentidp.signing_keys', '');
ALTER TABLE agentidp.signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.signing_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.signing_keys
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]))
	WITH CHECK (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));

CREATE FUNCTION agentidp._max_token_lifetime() RETURNS interval
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_max_token_lifetime_sql';
COMMENT ON FUNCTION agentidp._max_token_lifetime() IS
'agentidp.max_token_lifetime as an interval, from the loaded library';

/*
 * next: published, not yet signing; active: the newest activated key;
 * retired: replaced, and published until no token it signed can be valid
 * (agentidp.max_token_lifetime after its successor took over).
 */
CREATE VIEW agentidp.signing_key_states WITH (security_invoker = true) AS
SELECT k.tenant_id, k.kid, k.alg, k.public_jwk, k.kek_id, k.created_at, k.activates_at,
	   CASE WHEN k.activates_at OPERATOR(pg_catalog.>) pg_catalog.now() THEN 'next'
			WHEN s.successor_at IS NULL THEN 'active'
			ELSE 'retired' END AS state,
	   s.successor_at AS retired_at,
	   (s.successor_at IS NULL OR
		s.successor_at OPERATOR(pg_catalog.+) agentidp._max_token_lifetime()
		OPERATOR(pg_catalog.>) pg_catalog.now()) AS published
FROM agentidp.signing_keys AS k
LEFT JOIN LATERAL (
	SELECT pg_catalog.min(n.activates_at) AS successor_at
	FROM agentidp.signing_keys AS n
	WHERE n.tenant_id OPERATOR(pg_catalog.=) k.tenant_id
	  -- a tie in activation goes to the higher kid, as signing does
	  AND (n.activates_at, n.kid) OPERATOR(pg_catalog.>) (k.activates_at, k.kid)
	  AND n.activates_at OPERATOR(pg_catalog.<=) pg_catalog.now()) AS s ON true;
COMMENT ON VIEW agentidp.signing_key_states IS 'each signing key with its state (next, active, retired) and whether the JWKS publishes it';

CREATE FUNCTION agentidp.rotate_signing_key(tenant_id uuid, alg text DEFAULT 'ES256') RETURNS text
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_rotate_signing_key';
COMMENT ON FUNCTION agentidp.rotate_signing_key(uuid, text) IS
'generates a signing key for a tenant and returns its kid; the first is active at once, later ones after agentidp.key_prepublish';

CREATE FUNCTION agentidp.jwks(tenant_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT jsonb_build_object('keys', COALESCE(jsonb_agg(k.public_jwk ORDER BY k.activates_at DESC), '[]'))
	FROM agentidp.signing_key_states AS k
	WHERE k.tenant_id = jwks.tenant_id AND k.published;
END;
COMMENT ON FUNCTION agentidp.jwks(uuid) IS
'the tenant''s JWK Set: public keys that are next, active, or retired but still published';

CREATE FUNCTION agentidp.rewrap_keys() RETURNS integer
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_rewrap_keys';
COMMENT ON FUNCTION agentidp.rewrap_keys() IS
're-encrypts every signing key under the first key-encryption key of agentidp.kek_file; superusers only';

CREATE FUNCTION agentidp._sign_with_tenant_key(tenant_id uuid, payload jsonb, header jsonb DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'agentidp_sign_with_tenant_key';
COMMENT ON FUNCTION agentidp._sign_with_tenant_key(uuid, jsonb, jsonb) IS
'a JWS signed with the tenant''s active key; for the token service, granted to nobody';

CREATE FUNCTION agentidp._aes_gcm_open(key bytea, iv bytea, aad bytea, ct bytea, tag bytea)
RETURNS bytea
LANGUAGE c IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'agentidp_aes_gcm_open';
COMMENT ON FUNCTION agentidp._aes_gcm_open(bytea, bytea, bytea, bytea, bytea) IS
'the AES-256-GCM open of the key wrap, for test vectors; superusers only';

/*
 * Privileges.  Functions are SECURITY INVOKER unless noted, so row-level
 * security decides what each caller sees.  Column privileges keep secret
 * hashes unreadable and let no role insert a secret of its own choosing.
 */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA agentidp FROM PUBLIC;

GRANT USAGE ON SCHEMA agentidp TO agentidp_admin, agentidp_service;

GRANT SELECT, UPDATE (status, settings) ON agentidp.tenants TO agentidp_admin;
GRANT SELECT, INSERT (tenant_id, member), UPDATE (member_name), DELETE ON agentidp.tenant_admins TO agentidp_admin;
GRANT SELECT, INSERT (tenant_id, name, allowed_scopes, metadata),
	UPDATE (name, status, allowed_scopes, metadata)
	ON agentidp.agents TO agentidp_admin;
GRANT SELECT (tenant_id, secret_id, agent_id, hint, created_at, expires_at, revoked_at),
	UPDATE (revoked_at) ON agentidp.client_secrets TO agentidp_admin;
GRANT SELECT, UPDATE (revoked_at) ON agentidp.client_keys TO agentidp_admin;
GRANT SELECT, INSERT (tenant_id, name, scopes, description), UPDATE (scopes, description), DELETE
	ON agentidp.roles TO agentidp_admin;
GRANT SELECT, INSERT (tenant_id, agent_id, role_id), DELETE ON agentidp.agent_roles TO agentidp_admin;

GRANT EXECUTE ON FUNCTION
	agentidp._valid_slug(text), agentidp._valid_agent_name(text), agentidp._valid_scope(text),
	agentidp._valid_scopes(text[]), agentidp._valid_issuer(text), agentidp._valid_metadata(jsonb),
	agentidp.admin_tenants()
	TO agentidp_admin, agentidp_service;

GRANT EXECUTE ON FUNCTION
	agentidp._require(boolean, text, text, text, text),
	agentidp._check_scopes(text[]),
	agentidp._check_agent_name(text),
	agentidp._check_metadata(jsonb),
	agentidp._visible_tenant(uuid),
	agentidp._visible_agent(uuid),
	agentidp._visible_role(uuid, text),
	agentidp._set_agent_status(uuid, text),
	agentidp._insert_tenant(text, text),
	agentidp.create_tenant(text, text),
	agentidp.add_tenant_admin(uuid, regrole),
	agentidp.remove_tenant_admin(uuid, regrole),
	agentidp.register_agent(uuid, text, text[], jsonb),
	agentidp.suspend_agent(uuid),
	agentidp.reactivate_agent(uuid),
	agentidp.delete_agent(uuid),
	agentidp.set_allowed_scopes(uuid, text[]),
	agentidp.create_client_secret(uuid, interval),
	agentidp.revoke_client_secret(text, uuid),
	agentidp.create_role(uuid, text, text[], text),
	agentidp.drop_role(uuid, text),
	agentidp.grant_role(uuid, text),
	agentidp.revoke_role(uuid, text),
	agentidp.effective_scopes(uuid)
	TO agentidp_admin;

GRANT EXECUTE ON FUNCTION agentidp.check_client_secret(text, text)
	TO agentidp_admin, agentidp_service;

GRANT SELECT (tenant_id, kid, alg, public_jwk, kek_id, created_at, activates_at)
	ON agentidp.signing_keys TO agentidp_admin;
GRANT SELECT ON agentidp.signing_key_states TO agentidp_admin;
GRANT EXECUTE ON FUNCTION agentidp.rotate_signing_key(uuid, text) TO agentidp_admin;
GRANT EXECUTE ON FUNCTION agentidp._max_token_lifetime() TO agentidp_admin, agentidp_service;
GRANT EXECUTE ON FUNCTION agentidp.jwks(uuid) TO agentidp_admin, agentidp_service;

-- generate_jwk, _verify_signature, rewrap_keys, _sign_with_tenant_key and
-- _aes_gcm_open stay with superusers
GRANT EXECUTE ON FUNCTION
	agentidp.jws_sign(jsonb, jsonb, jsonb),
	agentidp.jws_verify(text, jsonb, text[]),
	agentidp.jwk_thumbprint(jsonb)
	TO agentidp_admin, agentidp_service;
