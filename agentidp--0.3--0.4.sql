/* agentidp--0.3--0.4.sql: tokens as database identity (docs/rls.md, docs/postgrest.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.4'" to load this file. \quit

/*
 * The role of connections that act for agents (an application's role,
 * PostgREST's authenticator and its roles): row-level security policies
 * run the helpers as the querying role, which therefore needs them.
 */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'agentidp_agent') THEN
		CREATE ROLE agentidp_agent NOLOGIN;
	END IF;
END
$roles$;

CREATE FUNCTION agentidp.authenticate(token text) RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_authenticate';
COMMENT ON FUNCTION agentidp.authenticate(text) IS
'verifies an access token and makes its claims the identity of the current transaction';

CREATE FUNCTION agentidp.authenticate(token text, dpop_proof text, htm text, htu text) RETURNS jsonb
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_authenticate';
COMMENT ON FUNCTION agentidp.authenticate(text, text, text, text) IS
'verifies a DPoP-bound access token with its proof and makes its claims the identity of the current transaction';

CREATE FUNCTION agentidp.current_claims() RETURNS jsonb
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_current_claims';
COMMENT ON FUNCTION agentidp.current_claims() IS
'the claims of the transaction''s identity (authenticate, or trusted PostgREST claims); NULL without one';

CREATE FUNCTION agentidp.current_tenant() RETURNS uuid
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_current_tenant';
COMMENT ON FUNCTION agentidp.current_tenant() IS
'the tenant of the transaction''s identity; NULL without one';

CREATE FUNCTION agentidp.current_agent() RETURNS uuid
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_current_agent';
COMMENT ON FUNCTION agentidp.current_agent() IS
'the agent acting: the actor of a delegated token, else the token''s subject; NULL without an identity';

CREATE FUNCTION agentidp.acting_for() RETURNS uuid
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_acting_for';
COMMENT ON FUNCTION agentidp.acting_for() IS
'the subject a delegated token acts for; NULL for a token of one''s own or without an identity';

CREATE FUNCTION agentidp.has_scope(scope text) RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_has_scope';
COMMENT ON FUNCTION agentidp.has_scope(text) IS
'whether the transaction''s identity holds the scope';

CREATE FUNCTION agentidp.has_role(role text) RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'agentidp_has_role';
COMMENT ON FUNCTION agentidp.has_role(text) IS
'whether the transaction''s identity holds the agentidp role';

CREATE FUNCTION agentidp.postgrest_pre_request() RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_postgrest_pre_request';
COMMENT ON FUNCTION agentidp.postgrest_pre_request() IS
'PostgREST db-pre-request: refuses a verified token that was revoked, or whose agent, tenant or credential is no longer active';

/*
 * Tenant isolation of a user's table: policies on the identity's tenant
 * and scopes, the tenant column's default, RLS enabled and forced.  What
 * was there before is kept in the comment of the SELECT policy, so that
 * disable_tenant_isolation undoes exactly this.
 */
CREATE FUNCTION agentidp.enable_tenant_isolation(tbl regclass, tenant_column name DEFAULT 'tenant_id',
												 read_scope text DEFAULT NULL, write_scope text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	kind "char";
	coltype regtype;
	was_enabled boolean;
	was_forced boolean;
	old_default text;
	mine text;
	rd text;
	wr text;
BEGIN
	PERFORM agentidp._require(tbl IS NOT NULL AND tenant_column IS NOT NULL, '22004',
		'tbl and tenant_column must not be null');
	SELECT c.relkind, c.relrowsecurity, c.relforcerowsecurity INTO kind, was_enabled, was_forced
	FROM pg_class AS c WHERE c.oid = tbl;
	PERFORM agentidp._require(kind IN ('r', 'p'), '42809', format('"%s" is not a table', tbl));
	PERFORM agentidp._require(
		(SELECT n.nspname <> 'agentidp' FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
		 WHERE c.oid = tbl), '42809', format('"%s" belongs to agentidp', tbl));
	SELECT a.atttypid::regtype, pg_get_expr(d.adbin, d.adrelid) INTO coltype, old_default
	FROM pg_attribute AS a LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	WHERE a.attrelid = tbl AND a.attname = tenant_column AND a.attnum > 0 AND NOT a.attisdropped;
	PERFORM agentidp._require(coltype IS NOT NULL, '42703',
		format('column "%s" of "%s" does not exist', tenant_column, tbl));
	PERFORM agentidp._require(coltype = 'uuid'::regtype, '42804',
		format('column "%s" of "%s" is of type %s, not uuid', tenant_column, tbl, coltype));
	PERFORM agentidp._require(NOT EXISTS (SELECT FROM pg_policy AS p
		WHERE p.polrelid = tbl AND p.polname LIKE 'agentidp\_tenant\_%'), '42710',
		format('"%s" is isolated already', tbl), NULL,
		'Run agentidp.disable_tenant_isolation() first to change it.');
	IF read_scope IS NOT NULL THEN
		PERFORM agentidp._check_scopes(ARRAY[read_scope]);
	END IF;
	IF write_scope IS NOT NULL THEN
		PERFORM agentidp._check_scopes(ARRAY[write_scope]);
	END IF;

	-- init plans: the helpers run once per query, not once per row
	mine := format('%I OPERATOR(pg_catalog.=) (SELECT agentidp.current_tenant())', tenant_column);
	rd := mine || CASE WHEN read_scope IS NULL THEN ''
		ELSE format(' AND (SELECT agentidp.has_scope(%L))', read_scope) END;
	wr := mine || CASE WHEN write_scope IS NULL THEN ''
		ELSE format(' AND (SELECT agentidp.has_scope(%L))', write_scope) END;
	EXECUTE format('CREATE POLICY agentidp_tenant_select ON %s FOR SELECT USING (%s)', tbl, rd);
	EXECUTE format('CREATE POLICY agentidp_tenant_insert ON %s FOR INSERT WITH CHECK (%s)', tbl, wr);
	EXECUTE format('CREATE POLICY agentidp_tenant_update ON %s FOR UPDATE USING (%s) WITH CHECK (%s)', tbl, wr, wr);
	EXECUTE format('CREATE POLICY agentidp_tenant_delete ON %s FOR DELETE USING (%s)', tbl, wr);
	EXECUTE format('COMMENT ON POLICY agentidp_tenant_select ON %s IS %L', tbl,
		jsonb_build_object('tenant_column', tenant_column, 'rls_was_enabled', was_enabled,
						   'rls_was_forced', was_forced, 'old_default', old_default)::text);
	EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT agentidp.current_tenant()', tbl, tenant_column);
	EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
	EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
END
$$;
COMMENT ON FUNCTION agentidp.enable_tenant_isolation(regclass, name, text, text) IS
'row-level security on a user''s table: rows of the identity''s tenant only, optional read and write scopes, the tenant column defaulting to the identity''s tenant';

CREATE FUNCTION agentidp.disable_tenant_isolation(tbl regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	state jsonb;
BEGIN
	PERFORM agentidp._require(tbl IS NOT NULL, '22004', 'tbl must not be null');
	SELECT obj_description(p.oid, 'pg_policy')::jsonb INTO state
	FROM pg_policy AS p WHERE p.polrelid = tbl AND p.polname = 'agentidp_tenant_select';
	PERFORM agentidp._require(state IS NOT NULL, '42704', format('"%s" is not isolated', tbl));
	EXECUTE format('DROP POLICY agentidp_tenant_select ON %s', tbl);
	EXECUTE format('DROP POLICY IF EXISTS agentidp_tenant_insert ON %s', tbl);
	EXECUTE format('DROP POLICY IF EXISTS agentidp_tenant_update ON %s', tbl);
	EXECUTE format('DROP POLICY IF EXISTS agentidp_tenant_delete ON %s', tbl);
	IF state ->> 'old_default' IS NULL THEN
		EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', tbl, state ->> 'tenant_column');
	ELSE
		EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', tbl, state ->> 'tenant_column',
					   state ->> 'old_default');
	END IF;
	IF NOT (state ->> 'rls_was_forced')::boolean THEN
		EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
	END IF;
	IF NOT (state ->> 'rls_was_enabled')::boolean THEN
		EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp.disable_tenant_isolation(regclass) IS
'undoes agentidp.enable_tenant_isolation: its policies, the column default and the RLS flags as they were';

/*
 * Access preview: what a token's identity could read and write, before
 * the agent acts.  The statement runs with that identity, as a role the
 * agent's connections use, under a timeout, in a subtransaction that is
 * always rolled back.
 */
CREATE FUNCTION agentidp._preview_kind(query text) RETURNS text
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'agentidp_preview_kind';
COMMENT ON FUNCTION agentidp._preview_kind(text) IS
'select for one plain SELECT, write for one INSERT, UPDATE, DELETE or MERGE, NULL for anything else';

CREATE FUNCTION agentidp._arm_statement_timeout(ms integer) RETURNS void
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'agentidp_arm_statement_timeout';
COMMENT ON FUNCTION agentidp._arm_statement_timeout(integer) IS
'cancels the running statement after ms milliseconds, or at the session''s statement_timeout if sooner; 0 restores the session''s';

/*
 * The identity a preview runs with: the token's, and as_role when given.
 * Only inside the previews' subtransactions, which undo both.
 */
CREATE FUNCTION agentidp._preview_identity(token text, as_role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp.authenticate(token);
	IF as_role IS NOT NULL THEN
		-- regrole's text is already quoted where the name needs it
		EXECUTE format('SET LOCAL ROLE %s', as_role::text);
	END IF;
END
$$;

CREATE FUNCTION agentidp.preview_access(token text, query text, as_role regrole DEFAULT NULL,
										max_rows integer DEFAULT 100, timeout_ms integer DEFAULT 5000)
RETURNS TABLE(row_number bigint, row_data jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(token IS NOT NULL AND query IS NOT NULL, '22004',
		'token and query must not be null');
	PERFORM agentidp._require(max_rows BETWEEN 1 AND 10000, '22023', 'max_rows must be 1 to 10000');
	PERFORM agentidp._require(timeout_ms BETWEEN 1 AND 600000, '22023', 'timeout_ms must be 1 to 600000');
	PERFORM agentidp._require(agentidp._preview_kind(query) IS NOT DISTINCT FROM 'select', '0A000',
		'preview_access runs one plain SELECT', NULL,
		'No SELECT INTO, FOR UPDATE or data-modifying WITH; preview writes with agentidp.preview_write.');
	PERFORM agentidp._arm_statement_timeout(timeout_ms);
	BEGIN
		PERFORM set_config('transaction_read_only', 'on', true);
		PERFORM agentidp._preview_identity(token, as_role);
		RETURN QUERY EXECUTE format(
			'SELECT pg_catalog.row_number() OVER (), pg_catalog.to_jsonb(q) FROM (%s' || E'\n' || ') AS q LIMIT %s',
			query, max_rows);
		-- always rolled back: the rows returned so far are the result
		RAISE EXCEPTION 'preview done' USING ERRCODE = 'AIDP0';
	EXCEPTION WHEN SQLSTATE 'AIDP0' THEN
		NULL;
	END;
	PERFORM agentidp._arm_statement_timeout(0);
END
$$;
COMMENT ON FUNCTION agentidp.preview_access(text, text, regrole, integer, integer) IS
'the rows a token''s identity could read with a SELECT, run read-only as as_role, under a timeout, always rolled back';

/*
 * Whether a write would pass.  The statement really runs, so row-level
 * security, constraints (deferred ones too: they are made immediate) and
 * triggers all have their say; its error, if any, is the answer.  A
 * cancel or the timeout is not an answer and is raised.
 */
CREATE FUNCTION agentidp.preview_write(token text, statement text, as_role regrole DEFAULT NULL,
									   timeout_ms integer DEFAULT 5000)
RETURNS TABLE(allowed boolean, rows_affected bigint, sqlstate text, message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(token IS NOT NULL AND statement IS NOT NULL, '22004',
		'token and statement must not be null');
	PERFORM agentidp._require(timeout_ms BETWEEN 1 AND 600000, '22023', 'timeout_ms must be 1 to 600000');
	PERFORM agentidp._require(agentidp._preview_kind(statement) IS NOT DISTINCT FROM 'write', '0A000',
		'preview_write runs one INSERT, UPDATE, DELETE or MERGE', NULL,
		'Preview reads with agentidp.preview_access.');
	PERFORM agentidp._arm_statement_timeout(timeout_ms);
	BEGIN
		PERFORM agentidp._preview_identity(token, as_role);
		BEGIN
			EXECUTE statement;
			GET DIAGNOSTICS rows_affected = ROW_COUNT;
			SET CONSTRAINTS ALL IMMEDIATE;
			allowed := true;
		EXCEPTION WHEN OTHERS THEN
			allowed := false;
			rows_affected := NULL;
			preview_write.sqlstate := SQLSTATE;
			message := SQLERRM;
		END;
		-- always rolled back: the outcome is kept in the output columns
		RAISE EXCEPTION 'preview done' USING ERRCODE = 'AIDP0';
	EXCEPTION WHEN SQLSTATE 'AIDP0' THEN
		NULL;
	END;
	PERFORM agentidp._arm_statement_timeout(0);
	RETURN NEXT;
END
$$;
COMMENT ON FUNCTION agentidp.preview_write(text, text, regrole, integer) IS
'whether a token''s identity could run one INSERT, UPDATE, DELETE or MERGE, and how many rows it would change, run as as_role under a timeout, always rolled back';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
GRANT USAGE ON SCHEMA agentidp TO agentidp_agent;
GRANT EXECUTE ON FUNCTION
	agentidp.authenticate(text),
	agentidp.authenticate(text, text, text, text),
	agentidp.current_claims(),
	agentidp.current_tenant(),
	agentidp.current_agent(),
	agentidp.acting_for(),
	agentidp.has_scope(text),
	agentidp.has_role(text),
	agentidp.postgrest_pre_request()
	TO agentidp_agent, agentidp_admin, agentidp_service;
GRANT EXECUTE ON FUNCTION
	agentidp.enable_tenant_isolation(regclass, name, text, text),
	agentidp.disable_tenant_isolation(regclass),
	agentidp.preview_access(text, text, regrole, integer, integer),
	agentidp.preview_write(text, text, regrole, integer),
	agentidp._preview_kind(text),
	agentidp._preview_identity(text, regrole),
	agentidp._arm_statement_timeout(integer)
	TO agentidp_admin;
