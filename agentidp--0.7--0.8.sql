/* agentidp--0.7--0.8.sql: the admin REST API of the HTTP front and its token batches (docs/http.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.8'" to load this file. \quit

/*
 * The admin API is one function, admin_api(), which the front calls for
 * every request under /admin/v1 and which makes every decision: who the
 * caller is (an access token of an agent with the scope agentidp:admin),
 * which tenant it acts on (the token's, never one named by the request),
 * which route and method, what the body and the query may hold, and what
 * the answer is.  The front turns its {"status", "headers", "body"} into
 * HTTP and adds nothing.
 *
 * admin_api is SECURITY DEFINER: the front's role administers no tenant,
 * so row-level security would show it nothing.  It runs the routes as the
 * extension owner, a superuser, whom row-level security does not limit.
 * The tenant is therefore enforced here instead: every row a route reads
 * or changes is looked up with the token's tenant_id first, and the
 * existing API functions (register_agent, create_client_secret,
 * grant_role, ...) are called only with ids that lookup found, so that
 * their own checks and audit triggers run as for any administrator, and no
 * other tenant's row can be reached.  The helpers below are granted to
 * nobody: only admin_api (and superusers) call them.
 */

/* the reason phrase of an HTTP status, for a problem's title (RFC 9457 4.2.1) */
CREATE FUNCTION agentidp._admin_reason(status integer) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE status
	WHEN 400 THEN 'Bad Request'
	WHEN 401 THEN 'Unauthorized'
	WHEN 403 THEN 'Forbidden'
	WHEN 404 THEN 'Not Found'
	WHEN 405 THEN 'Method Not Allowed'
	WHEN 409 THEN 'Conflict'
	WHEN 429 THEN 'Too Many Requests'
	ELSE 'Error' END;
COMMENT ON FUNCTION agentidp._admin_reason(integer) IS
'the HTTP reason phrase of a status the admin API answers with';

/* an RFC 9457 problem: {"status", "headers", "body"} */
CREATE FUNCTION agentidp._admin_problem(status integer, detail text, headers jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('status', status,
	'headers', jsonb_build_object('Content-Type', 'application/problem+json') || headers,
	'body', jsonb_build_object('type', 'about:blank', 'title', agentidp._admin_reason(status),
							   'status', status)
			|| CASE WHEN detail IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('detail', detail) END);
COMMENT ON FUNCTION agentidp._admin_problem(integer, text, jsonb) IS
'an admin API error answer: an RFC 9457 problem document as application/problem+json';

/* a successful answer; no body (204) means no Content-Type either */
CREATE FUNCTION agentidp._admin_reply(status integer, body jsonb, headers jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('status', status,
	'headers', CASE WHEN body IS NULL THEN '{}'::jsonb
					ELSE jsonb_build_object('Content-Type', 'application/json') END || headers)
	|| CASE WHEN body IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('body', body) END;
COMMENT ON FUNCTION agentidp._admin_reply(integer, jsonb, jsonb) IS
'an admin API answer: {"status", "headers", "body"}, the body as application/json';

/*
 * The status an error of a route answers with, by SQLSTATE; NULL for
 * errors that are no fault of the request (a bug, a lost lock, a full
 * disk), which admin_api raises on, so that the front answers 500 or 503
 * and the server log has the error.
 */
CREATE FUNCTION agentidp._admin_status(sqlstate text) RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE
	WHEN sqlstate IN ('42704', 'P0002') THEN 404
	WHEN sqlstate = '42501' THEN 403
	-- a duplicate, a credential limit, a suspended agent or tenant, a revoked credential
	WHEN sqlstate IN ('23505', '23503', '54000', '55000') THEN 409
	WHEN sqlstate = '53400' THEN 429
	WHEN sqlstate LIKE '22%' OR sqlstate IN ('23502', '23514') THEN 400
	END;
COMMENT ON FUNCTION agentidp._admin_status(text) IS
'the HTTP status of an admin API request that raised an error with this SQLSTATE; NULL when the request is not at fault';

/* no object anywhere in a JSON value repeats a member name */
CREATE FUNCTION agentidp._json_unique_members(j json) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v json;
BEGIN
	IF json_typeof(j) = 'object' THEN
		IF (SELECT count(*) <> count(DISTINCT k) FROM json_object_keys(j) AS k) THEN
			RETURN false;
		END IF;
		FOR v IN SELECT e.value FROM json_each(j) AS e WHERE json_typeof(e.value) IN ('object', 'array') LOOP
			IF NOT agentidp._json_unique_members(v) THEN
				RETURN false;
			END IF;
		END LOOP;
	ELSIF json_typeof(j) = 'array' THEN
		FOR v IN SELECT e FROM json_array_elements(j) AS e WHERE json_typeof(e) IN ('object', 'array') LOOP
			IF NOT agentidp._json_unique_members(v) THEN
				RETURN false;
			END IF;
		END LOOP;
	END IF;
	RETURN true;
END
$$;
COMMENT ON FUNCTION agentidp._json_unique_members(json) IS
'true when no object in the JSON value has two members of one name';

/*
 * A request body, parsed strictly: a JSON object, no member name twice at
 * any level (jsonb would keep the last one silently), at most 32 levels
 * deep.  NULL for no body.
 */
CREATE FUNCTION agentidp._admin_body(body text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j json;
	jb jsonb;
BEGIN
	IF body IS NULL OR body = '' THEN
		RETURN NULL;
	END IF;
	BEGIN
		j := body::json;
		jb := j::jsonb;
	EXCEPTION WHEN invalid_text_representation OR untranslatable_character
		OR character_not_in_repertoire OR statement_too_complex THEN
		RAISE EXCEPTION 'the request body is not valid JSON' USING ERRCODE = 'invalid_parameter_value';
	END;
	PERFORM agentidp._require(jsonb_typeof(jb) = 'object', '22023', 'the request body must be a JSON object');
	PERFORM agentidp._require(NOT jsonb_path_exists(jb, 'strict $.**{32}'), '22023',
		'the request body is nested too deeply');
	PERFORM agentidp._require(agentidp._json_unique_members(j), '22023',
		'the request body repeats a member name');
	RETURN jb;
END
$$;
COMMENT ON FUNCTION agentidp._admin_body(text) IS
'an admin API request body as jsonb: a JSON object without repeated member names, at most 32 levels deep; NULL for none';

/* refuses a body member, or a query parameter, that the route does not know */
CREATE FUNCTION agentidp._admin_members(doc jsonb, allowed text[], what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	bad text;
BEGIN
	SELECT k INTO bad FROM jsonb_object_keys(doc) AS k WHERE NOT k = ANY (allowed) ORDER BY k LIMIT 1;
	PERFORM agentidp._require(bad IS NULL, '22023', format('unknown %s "%s"', what, left(bad, 64)),
		CASE WHEN cardinality(allowed) = 0 THEN format('This request takes no %s.', what)
			 ELSE format('This request takes %s.', array_to_string(allowed, ', ')) END);
END
$$;
COMMENT ON FUNCTION agentidp._admin_members(jsonb, text[], text) IS
'raises 22023 naming the first member of doc that is not among allowed';

/* a string member of a body; NULL when absent and not required */
CREATE FUNCTION agentidp._admin_string(doc jsonb, name text, required boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(doc ? name OR NOT required, '22023', format('"%s" is required', name));
	PERFORM agentidp._require(NOT doc ? name OR jsonb_typeof(doc -> name) = 'string', '22023',
		format('"%s" must be a string', name));
	RETURN doc ->> name;
END
$$;
COMMENT ON FUNCTION agentidp._admin_string(jsonb, text, boolean) IS
'a string member of an admin API request body';

/* an array-of-strings member of a body as text[]; NULL when absent */
CREATE FUNCTION agentidp._admin_strings(doc jsonb, name text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT doc ? name THEN
		RETURN NULL;
	END IF;
	PERFORM agentidp._require(jsonb_typeof(doc -> name) = 'array'
		AND NOT EXISTS (SELECT FROM jsonb_array_elements(doc -> name) AS e WHERE jsonb_typeof(e) <> 'string'),
		'22023', format('"%s" must be an array of strings', name));
	RETURN ARRAY(SELECT jsonb_array_elements_text(doc -> name));
END
$$;
COMMENT ON FUNCTION agentidp._admin_strings(jsonb, text) IS
'an array-of-strings member of an admin API request body as text[]';

/* an id from a path or a query: a uuid in canonical form, else NULL */
CREATE FUNCTION agentidp._admin_uuid(id text) RETURNS uuid
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN id::uuid END;
COMMENT ON FUNCTION agentidp._admin_uuid(text) IS
'the uuid of a canonical (lower-case, hyphenated) uuid text, else NULL';

/* the limit parameter of a list: 1 to 500, 50 by default */
CREATE FUNCTION agentidp._admin_limit(query jsonb) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text := query ->> 'limit';
BEGIN
	IF v IS NULL THEN
		RETURN 50;
	END IF;
	PERFORM agentidp._require(v ~ '^[0-9]{1,3}$' AND v::integer BETWEEN 1 AND 500, '22023',
		'limit must be an integer from 1 to 500');
	RETURN v::integer;
END
$$;
COMMENT ON FUNCTION agentidp._admin_limit(jsonb) IS
'the limit query parameter of an admin API list: 1 to 500, 50 when absent';

/*
 * An agent of the tenant by the id in a path, else 42704 (an id of another
 * tenant is no different from an unknown one).  live: not deleted, and
 * locked for the change that follows, as _visible_agent locks it.
 */
CREATE FUNCTION agentidp._admin_agent(tenant uuid, id text, live boolean) RETURNS agentidp.agents
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	aid uuid := agentidp._admin_uuid(id);
BEGIN
	IF live THEN
		SELECT * INTO a FROM agentidp.agents AS x
		WHERE x.tenant_id = tenant AND x.agent_id = aid AND x.status <> 'deleted'
		FOR NO KEY UPDATE;
	ELSE
		SELECT * INTO a FROM agentidp.agents AS x WHERE x.tenant_id = tenant AND x.agent_id = aid;
	END IF;
	PERFORM agentidp._require(FOUND, '42704', 'agent does not exist');
	RETURN a;
END
$$;
COMMENT ON FUNCTION agentidp._admin_agent(uuid, text, boolean) IS
'the agent of the tenant with the id given as text, locked when live (and then not deleted), else 42704';

CREATE FUNCTION agentidp._admin_agent_json(a agentidp.agents) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('id', a.agent_id, 'client_id', a.client_id, 'name', a.name,
	'status', a.status, 'allowed_scopes', to_jsonb(a.allowed_scopes),
	'roles', to_jsonb(ARRAY(SELECT r.name FROM agentidp.agent_roles AS ar
		JOIN agentidp.roles AS r ON r.tenant_id = ar.tenant_id AND r.role_id = ar.role_id
		WHERE ar.tenant_id = a.tenant_id AND ar.agent_id = a.agent_id ORDER BY r.name)),
	'metadata', a.metadata, 'created_at', a.created_at, 'updated_at', a.updated_at,
	'suspended_at', a.suspended_at, 'deleted_at', a.deleted_at);
COMMENT ON FUNCTION agentidp._admin_agent_json(agentidp.agents) IS
'an agent as the admin API shows it, with the names of its roles';

/*
 * /agents and /agents/{id}.  Lists are in id order (a keyset: the cursor
 * is the last id of the page), without deleted agents unless status asks
 * for them.
 */
CREATE FUNCTION agentidp._admin_agents(tenant uuid, method text, id text, query jsonb, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	lim integer;
	want text;
	after uuid;
	items jsonb;
	next uuid;
	v text;
BEGIN
	IF id IS NULL AND method = 'GET' THEN
		PERFORM agentidp._admin_members(query, '{limit,cursor,status}', 'query parameter');
		lim := agentidp._admin_limit(query);
		want := query ->> 'status';
		PERFORM agentidp._require(want IS NULL OR want IN ('active', 'suspended', 'deleted'), '22023',
			'status must be active, suspended or deleted');
		IF query ? 'cursor' THEN
			after := agentidp._admin_uuid(query ->> 'cursor');
			PERFORM agentidp._require(after IS NOT NULL, '22023', 'invalid cursor');
		END IF;
		SELECT COALESCE(jsonb_agg(agentidp._admin_agent_json(p.a) ORDER BY (p.a).agent_id)
							FILTER (WHERE p.n <= lim), '[]'),
			   -- a next page when the query found one row more than the limit
			   CASE WHEN max(p.n) > lim THEN
				   (array_agg((p.a).agent_id ORDER BY (p.a).agent_id DESC) FILTER (WHERE p.n <= lim))[1]::text END
		INTO items, v
		FROM (SELECT y AS a, row_number() OVER (ORDER BY y.agent_id) AS n
			  FROM agentidp.agents AS y
			  WHERE y.tenant_id = tenant
				AND CASE WHEN want IS NULL THEN y.status <> 'deleted' ELSE y.status = want END
				AND (after IS NULL OR y.agent_id > after)
			  ORDER BY y.agent_id LIMIT lim + 1) AS p;
		RETURN agentidp._admin_reply(200, jsonb_build_object('items', items, 'next_cursor', v));

	ELSIF id IS NULL THEN
		-- POST: register_agent checks the name, scopes and metadata
		PERFORM agentidp._require(body IS NOT NULL, '22023', 'the request needs a JSON body');
		PERFORM agentidp._admin_members(body, '{name,allowed_scopes,metadata}', 'member');
		next := agentidp.register_agent(tenant, agentidp._admin_string(body, 'name', true),
			COALESCE(agentidp._admin_strings(body, 'allowed_scopes'), '{}'),
			COALESCE(body -> 'metadata', '{}'));
		a := agentidp._admin_agent(tenant, next::text, false);
		RETURN agentidp._admin_reply(201, agentidp._admin_agent_json(a),
			jsonb_build_object('Location', '/admin/v1/agents/' || next));

	ELSIF method = 'GET' THEN
		RETURN agentidp._admin_reply(200, agentidp._admin_agent_json(agentidp._admin_agent(tenant, id, false)));

	ELSIF method = 'PATCH' THEN
		PERFORM agentidp._require(body IS NOT NULL, '22023', 'the request needs a JSON body');
		PERFORM agentidp._admin_members(body, '{status,allowed_scopes,metadata}', 'member');
		a := agentidp._admin_agent(tenant, id, true);
		IF body ? 'allowed_scopes' THEN
			PERFORM agentidp.set_allowed_scopes(a.agent_id, agentidp._admin_strings(body, 'allowed_scopes'));
		END IF;
		IF body ? 'metadata' THEN
			-- no API function sets metadata: the check is register_agent's
			PERFORM agentidp._check_metadata(body -> 'metadata');
			UPDATE agentidp.agents AS x SET metadata = body -> 'metadata'
			WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id;
		END IF;
		IF body ? 'status' THEN
			want := agentidp._admin_string(body, 'status');
			PERFORM agentidp._require(want IN ('active', 'suspended'), '22023',
				'status must be active or suspended', NULL, 'Delete an agent with DELETE.');
			IF want = 'active' THEN
				PERFORM agentidp.reactivate_agent(a.agent_id);
			ELSE
				PERFORM agentidp.suspend_agent(a.agent_id);
			END IF;
		END IF;
		RETURN agentidp._admin_reply(200, agentidp._admin_agent_json(agentidp._admin_agent(tenant, id, false)));

	ELSE
		-- DELETE
		a := agentidp._admin_agent(tenant, id, true);
		PERFORM agentidp.delete_agent(a.agent_id);
		RETURN agentidp._admin_reply(204, NULL);
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._admin_agents(uuid, text, text, jsonb, jsonb) IS
'the admin API''s /agents and /agents/{id} for a tenant';

/* an agent's client secrets and client keys, as the admin API shows them: never a hash */
CREATE FUNCTION agentidp._admin_credential_docs(tenant uuid, agent uuid)
RETURNS TABLE(id uuid, created_at timestamptz, revoked_at timestamptz, doc jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT s.secret_id, s.created_at, s.revoked_at,
		   jsonb_build_object('id', s.secret_id, 'kind', 'secret', 'hint', s.hint,
			   'created_at', s.created_at, 'expires_at', s.expires_at, 'revoked_at', s.revoked_at,
			   'active', s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now()))
	FROM agentidp.client_secrets AS s
	WHERE s.tenant_id = _admin_credential_docs.tenant AND s.agent_id = _admin_credential_docs.agent
	UNION ALL
	SELECT k.key_id, k.created_at, k.revoked_at,
		   jsonb_build_object('id', k.key_id, 'kind', 'key', 'kid', k.kid, 'public_jwk', k.public_jwk,
			   'created_at', k.created_at, 'expires_at', k.expires_at, 'revoked_at', k.revoked_at,
			   'active', k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()))
	FROM agentidp.client_keys AS k
	WHERE k.tenant_id = _admin_credential_docs.tenant AND k.agent_id = _admin_credential_docs.agent;
END;
COMMENT ON FUNCTION agentidp._admin_credential_docs(uuid, uuid) IS
'the client secrets (by hint, never the hash) and client keys of an agent of the tenant';

/*
 * /agents/{id}/credentials[/{cred}], /agents/{id}/secrets and
 * /agents/{id}/keys: what is the route's third segment.
 */
CREATE FUNCTION agentidp._admin_credentials(tenant uuid, method text, id text, what text, cred text,
											body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
	c record;
	cid uuid := agentidp._admin_uuid(cred);
	before uuid[];
	secret record;
	kid text;
	secs text;
	doc jsonb;
BEGIN
	IF what = 'credentials' AND cred IS NULL THEN
		a := agentidp._admin_agent(tenant, id, false);
		RETURN agentidp._admin_reply(200, jsonb_build_object('items',
			(SELECT COALESCE(jsonb_agg(d.doc ORDER BY d.created_at, d.id), '[]')
			 FROM agentidp._admin_credential_docs(tenant, a.agent_id) AS d)));

	ELSIF what = 'credentials' AND method = 'GET' THEN
		a := agentidp._admin_agent(tenant, id, false);
		SELECT d.doc INTO doc FROM agentidp._admin_credential_docs(tenant, a.agent_id) AS d WHERE d.id = cid;
		PERFORM agentidp._require(doc IS NOT NULL, '42704', 'credential does not exist');
		RETURN agentidp._admin_reply(200, doc);

	ELSIF what = 'credentials' THEN
		-- DELETE: revocation, which is final; the row stays for the record
		a := agentidp._admin_agent(tenant, id, true);
		SELECT d.* INTO c FROM agentidp._admin_credential_docs(tenant, a.agent_id) AS d WHERE d.id = cid;
		PERFORM agentidp._require(FOUND, '42704', 'credential does not exist');
		PERFORM agentidp._require(c.revoked_at IS NULL, '55000', 'credential is already revoked');
		IF c.doc ->> 'kind' = 'secret' THEN
			PERFORM agentidp.revoke_client_secret(a.client_id, cid);
		ELSE
			-- no API function revokes one key: this is what an administrator's UPDATE does
			UPDATE agentidp.client_keys AS k SET revoked_at = now()
			WHERE k.tenant_id = a.tenant_id AND k.agent_id = a.agent_id AND k.key_id = cid;
		END IF;
		RETURN agentidp._admin_reply(204, NULL);

	ELSIF what = 'secrets' THEN
		PERFORM agentidp._admin_members(COALESCE(body, '{}'), '{expires_in}', 'member');
		IF body ? 'expires_in' THEN
			secs := body ->> 'expires_in';
			PERFORM agentidp._require(jsonb_typeof(body -> 'expires_in') = 'number' AND secs ~ '^[0-9]{1,9}$',
				'22023', '"expires_in" must be a whole number of seconds');
		END IF;
		a := agentidp._admin_agent(tenant, id, true);
		before := ARRAY(SELECT s.secret_id FROM agentidp.client_secrets AS s
						WHERE s.tenant_id = a.tenant_id AND s.agent_id = a.agent_id);
		SELECT * INTO secret FROM agentidp.create_client_secret(a.agent_id,
			CASE WHEN secs IS NOT NULL THEN make_interval(secs => secs::double precision) END);
		SELECT d.id, d.doc INTO c FROM agentidp._admin_credential_docs(tenant, a.agent_id) AS d
		WHERE d.doc ->> 'kind' = 'secret' AND NOT d.id = ANY (before);
		-- shown this once; the front answers with Cache-Control: no-store
		RETURN agentidp._admin_reply(201,
			c.doc || jsonb_build_object('client_id', secret.client_id, 'client_secret', secret.client_secret),
			jsonb_build_object('Location', format('/admin/v1/agents/%s/credentials/%s', a.agent_id, c.id)));

	ELSE
		-- keys: the body is the public JWK; add_client_key checks it and refuses a private one
		PERFORM agentidp._require(body IS NOT NULL, '22023', 'the request needs a JSON body',
			'The body is the public JWK.');
		a := agentidp._admin_agent(tenant, id, true);
		kid := agentidp.add_client_key(a.agent_id, body);
		SELECT d.id, d.doc INTO c FROM agentidp._admin_credential_docs(tenant, a.agent_id) AS d
		WHERE d.doc ->> 'kind' = 'key' AND d.doc ->> 'kid' = kid;
		RETURN agentidp._admin_reply(201, c.doc,
			jsonb_build_object('Location', format('/admin/v1/agents/%s/credentials/%s', a.agent_id, c.id)));
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._admin_credentials(uuid, text, text, text, text, jsonb) IS
'the admin API''s credential routes of an agent of a tenant: list, show, revoke, new secret, new key';

CREATE FUNCTION agentidp._admin_role_json(r agentidp.roles) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('id', r.role_id, 'name', r.name, 'scopes', to_jsonb(r.scopes),
						  'description', r.description, 'created_at', r.created_at);
COMMENT ON FUNCTION agentidp._admin_role_json(agentidp.roles) IS
'a role as the admin API shows it';

/* /roles and /roles/{name}; lists are in name order, the cursor the last name */
CREATE FUNCTION agentidp._admin_roles(tenant uuid, method text, name text, query jsonb, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r agentidp.roles;
	lim integer;
	after text;
	items jsonb;
	next text;
BEGIN
	IF name IS NULL AND method = 'GET' THEN
		PERFORM agentidp._admin_members(query, '{limit,cursor}', 'query parameter');
		lim := agentidp._admin_limit(query);
		after := query ->> 'cursor';
		SELECT COALESCE(jsonb_agg(agentidp._admin_role_json(p.r) ORDER BY (p.r).name)
							FILTER (WHERE p.n <= lim), '[]'),
			   CASE WHEN max(p.n) > lim THEN max((p.r).name) FILTER (WHERE p.n <= lim) END
		INTO items, next
		FROM (SELECT y AS r, row_number() OVER (ORDER BY y.name) AS n
			  FROM agentidp.roles AS y
			  WHERE y.tenant_id = tenant AND (after IS NULL OR y.name > after)
			  ORDER BY y.name LIMIT lim + 1) AS p;
		RETURN agentidp._admin_reply(200, jsonb_build_object('items', items, 'next_cursor', next));

	ELSIF name IS NULL THEN
		-- POST: create_role checks the name, scopes and description
		PERFORM agentidp._require(body IS NOT NULL, '22023', 'the request needs a JSON body');
		PERFORM agentidp._admin_members(body, '{name,scopes,description}', 'member');
		PERFORM agentidp.create_role(tenant, agentidp._admin_string(body, 'name', true),
			COALESCE(agentidp._admin_strings(body, 'scopes'), '{}'),
			agentidp._admin_string(body, 'description'));
		r := agentidp._visible_role(tenant, body ->> 'name');
		RETURN agentidp._admin_reply(201, agentidp._admin_role_json(r),
			jsonb_build_object('Location', '/admin/v1/roles/' || r.name));

	ELSIF method = 'GET' THEN
		SELECT * INTO r FROM agentidp.roles AS x WHERE x.tenant_id = tenant AND x.name = _admin_roles.name;
		PERFORM agentidp._require(FOUND, '42704', 'role does not exist');
		RETURN agentidp._admin_reply(200, agentidp._admin_role_json(r));

	ELSE
		-- DELETE: agents that held the role lose its scopes
		PERFORM agentidp.drop_role(tenant, name);
		RETURN agentidp._admin_reply(204, NULL);
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._admin_roles(uuid, text, text, jsonb, jsonb) IS
'the admin API''s /roles and /roles/{name} for a tenant';

/* /agents/{id}/roles/{name}: PUT grants the role, DELETE revokes it; both are idempotent */
CREATE FUNCTION agentidp._admin_agent_role(tenant uuid, method text, id text, role text) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents := agentidp._admin_agent(tenant, id, true);
BEGIN
	-- the role is looked up in the agent's tenant, which is the token's
	IF method = 'PUT' THEN
		PERFORM agentidp.grant_role(a.agent_id, role);
	ELSE
		PERFORM agentidp.revoke_role(a.agent_id, role);
	END IF;
	RETURN agentidp._admin_reply(204, NULL);
END
$$;
COMMENT ON FUNCTION agentidp._admin_agent_role(uuid, text, text, text) IS
'the admin API''s /agents/{id}/roles/{name}: grants (PUT) or revokes (DELETE) a role of the tenant';

/*
 * /audit: the tenant's audit events, newest first (seq descending); the
 * cursor is the last seq of the page.  Filters: agent (actor_agent),
 * action (exact), since (at >= since), until (at < until).
 */
CREATE FUNCTION agentidp._admin_audit(tenant uuid, query jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lim integer;
	before bigint;
	agent uuid;
	since timestamptz;
	until timestamptz;
	items jsonb;
	next text;
BEGIN
	PERFORM agentidp._admin_members(query, '{limit,cursor,agent,action,since,until}', 'query parameter');
	lim := agentidp._admin_limit(query);
	IF query ? 'cursor' THEN
		PERFORM agentidp._require(query ->> 'cursor' ~ '^[0-9]{1,18}$', '22023', 'invalid cursor');
		before := (query ->> 'cursor')::bigint;
	END IF;
	IF query ? 'agent' THEN
		agent := agentidp._admin_uuid(query ->> 'agent');
		PERFORM agentidp._require(agent IS NOT NULL, '22023', 'agent must be an agent id');
	END IF;
	-- timestamptz input: ISO 8601 with an offset is meant, the rest is PostgreSQL's
	since := (query ->> 'since')::timestamptz;
	until := (query ->> 'until')::timestamptz;

	SELECT COALESCE(jsonb_agg(p.doc ORDER BY p.seq DESC) FILTER (WHERE p.n <= lim), '[]'),
		   CASE WHEN max(p.n) > lim THEN (min(p.seq) FILTER (WHERE p.n <= lim))::text END
	INTO items, next
	FROM (SELECT e.seq, row_number() OVER (ORDER BY e.seq DESC) AS n,
				 jsonb_build_object('seq', e.seq, 'at', e.at,
					 'actor', jsonb_build_object('agent', e.actor_agent, 'role', e.actor_role,
												 'act', e.actor_act),
					 'action', e.action, 'resource', e.resource, 'resource_key', e.resource_key,
					 'result', e.result, 'client_addr', e.client_addr, 'trace_id', e.trace_id,
					 'detail', e.detail, 'prev_hash', encode(e.prev_hash, 'hex'),
					 'hash', encode(e.hash, 'hex')) AS doc
		  FROM (SELECT * FROM agentidp.audit_events AS x
				WHERE x.tenant_id = tenant
				  AND (before IS NULL OR x.seq < before)
				  AND (agent IS NULL OR x.actor_agent = agent)
				  AND (NOT query ? 'action' OR x.action = query ->> 'action')
				  AND (since IS NULL OR x.at >= since)
				  AND (until IS NULL OR x.at < until)
				ORDER BY x.seq DESC LIMIT lim + 1) AS e) AS p;
	RETURN agentidp._admin_reply(200, jsonb_build_object('items', items, 'next_cursor', next));
END
$$;
COMMENT ON FUNCTION agentidp._admin_audit(uuid, jsonb) IS
'the admin API''s /audit: a page of the tenant''s audit events, newest first, filtered';

/*
 * The admin API.  Every request under /admin/v1 of the front, with the
 * path after /admin/v1, the query parameters as a JSON object of strings,
 * the raw body (or NULL), the Authorization header, the client's address
 * and the request id.  Returns {"status", "headers", "body"}; refusals
 * are answers, never errors, and change nothing (the route runs in a
 * subtransaction that a refusal rolls back).  Errors that are no fault of
 * the request are raised.
 */
CREATE FUNCTION agentidp.admin_api(method text, path text, query jsonb, body text,
								   authorization text, client_addr inet, request_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- authenticate() notes that an identity outside a transaction block ends
-- with the statement, which is what the front wants: keep that from its log
SET client_min_messages = warning
-- timestamps in answers are UTC, whatever the session's time zone
SET TimeZone = 'UTC'
AS $$
DECLARE
	challenge constant text := 'Bearer realm="agentidp"';
	m text[];
	tenant uuid;
	seg text[];
	route text;
	allow text;
	verb text := CASE WHEN method = 'HEAD' THEN 'GET' ELSE method END;
	q jsonb := COALESCE(query, '{}');
	doc jsonb;
	msg text;
	state text;
	status integer;
BEGIN
	-- the audit rows of this transaction name the HTTP client and the request
	PERFORM agentidp._set_request_context(client_addr, left(request_id, 128));

	-- RFC 6750 section 2.1; a request without a Bearer token gets a challenge without an error code
	-- (AUTHORIZATION is a reserved word: the parameter is named with its function)
	m := regexp_match(admin_api.authorization, '^([A-Za-z]+)(?: +(.*))?$');
	IF m IS NULL OR lower(m[1]) NOT IN ('bearer', 'dpop') THEN
		RETURN agentidp._admin_problem(401, 'an access token is required: Authorization: Bearer <token>',
			jsonb_build_object('WWW-Authenticate', challenge));
	END IF;
	IF lower(m[1]) = 'dpop' THEN
		RETURN agentidp._admin_problem(401, 'the admin API does not accept DPoP-bound tokens',
			jsonb_build_object('WWW-Authenticate',
				challenge || ', error="invalid_token", error_description="DPoP is not supported here"'));
	END IF;
	IF m[2] IS NULL OR m[2] !~ '^[A-Za-z0-9._~+/-]+=* *$' THEN
		RETURN agentidp._admin_problem(400, 'the Authorization header is malformed',
			jsonb_build_object('WWW-Authenticate', challenge || ', error="invalid_request"'));
	END IF;

	-- verification as everywhere (signature, times, audience, revocation,
	-- agent, credential, tenant), and the token's claims become the
	-- transaction's identity: the audit rows name the agent that acted
	BEGIN
		PERFORM agentidp.authenticate(rtrim(m[2], ' '));
	EXCEPTION WHEN invalid_authorization_specification OR data_exception THEN
		GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
		IF msg LIKE '%DPoP-bound%' THEN
			msg := 'the admin API does not accept DPoP-bound tokens';
		END IF;
		RETURN agentidp._admin_problem(401, msg, jsonb_build_object('WWW-Authenticate',
			challenge || ', error="invalid_token", error_description="the access token is not valid"'));
	END;
	IF NOT agentidp.has_scope('agentidp:admin') THEN
		RETURN agentidp._admin_problem(403, 'the access token lacks the scope agentidp:admin',
			jsonb_build_object('WWW-Authenticate',
				challenge || ', error="insufficient_scope", scope="agentidp:admin"'));
	END IF;
	-- the tenant is the token's, whatever the request names
	tenant := agentidp.current_tenant();

	-- routing: the path after /admin/v1
	seg := CASE WHEN left(path, 1) = '/' THEN string_to_array(substr(path, 2), '/') END;
	route := CASE
		WHEN seg = '{agents}' THEN 'agents'
		WHEN seg[1] = 'agents' AND cardinality(seg) = 2 THEN 'agent'
		WHEN seg[1] = 'agents' AND cardinality(seg) = 3 AND seg[3] = 'credentials' THEN 'credentials'
		WHEN seg[1] = 'agents' AND cardinality(seg) = 4 AND seg[3] = 'credentials' THEN 'credential'
		WHEN seg[1] = 'agents' AND cardinality(seg) = 3 AND seg[3] IN ('secrets', 'keys') THEN seg[3]
		WHEN seg[1] = 'agents' AND cardinality(seg) = 4 AND seg[3] = 'roles' THEN 'agent_role'
		WHEN seg = '{roles}' THEN 'roles'
		WHEN seg[1] = 'roles' AND cardinality(seg) = 2 THEN 'role'
		WHEN seg = '{audit}' THEN 'audit'
		END;
	IF route IS NULL THEN
		RETURN agentidp._admin_problem(404, 'no such resource');
	END IF;
	allow := CASE route
		WHEN 'agents' THEN 'GET, HEAD, POST'
		WHEN 'agent' THEN 'GET, HEAD, PATCH, DELETE'
		WHEN 'credentials' THEN 'GET, HEAD'
		WHEN 'credential' THEN 'GET, HEAD, DELETE'
		WHEN 'secrets' THEN 'POST'
		WHEN 'keys' THEN 'POST'
		WHEN 'agent_role' THEN 'PUT, DELETE'
		WHEN 'roles' THEN 'GET, HEAD, POST'
		WHEN 'role' THEN 'GET, HEAD, DELETE'
		WHEN 'audit' THEN 'GET, HEAD' END;
	IF method IS NULL OR NOT method = ANY (string_to_array(allow, ', ')) THEN
		RETURN agentidp._admin_problem(405, format('the resource allows %s', allow),
			jsonb_build_object('Allow', allow));
	END IF;

	BEGIN
		PERFORM agentidp._require(jsonb_typeof(q) = 'object', '22023',
			'the query must be a JSON object of the query parameters');
		-- query parameters only for lists, bodies only where something is written
		IF NOT (verb = 'GET' AND route IN ('agents', 'roles', 'audit')) THEN
			PERFORM agentidp._admin_members(q, '{}', 'query parameter');
		END IF;
		doc := agentidp._admin_body(body);
		PERFORM agentidp._require(doc IS NULL OR verb IN ('POST', 'PATCH'), '22023',
			'this request takes no body');
		RETURN CASE
			WHEN route IN ('agents', 'agent') THEN
				agentidp._admin_agents(tenant, verb, seg[2], q, doc)
			WHEN route IN ('credentials', 'credential', 'secrets', 'keys') THEN
				agentidp._admin_credentials(tenant, verb, seg[2], seg[3], seg[4], doc)
			WHEN route = 'agent_role' THEN
				agentidp._admin_agent_role(tenant, verb, seg[2], seg[4])
			WHEN route IN ('roles', 'role') THEN
				agentidp._admin_roles(tenant, verb, seg[2], q, doc)
			ELSE agentidp._admin_audit(tenant, q) END;
	EXCEPTION WHEN OTHERS THEN
		-- the subtransaction is gone: the refused request changed nothing
		GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		status := agentidp._admin_status(state);
		IF status IS NULL THEN
			RAISE;
		END IF;
		RETURN agentidp._admin_problem(status, msg);
	END;
END
$$;
COMMENT ON FUNCTION agentidp.admin_api(text, text, jsonb, text, text, inet, text) IS
'the admin REST API of the HTTP front: one request (method, path after /admin/v1, query parameters, body, Authorization, client address, request id) to {"status", "headers", "body"}; an access token with the scope agentidp:admin acts on its own tenant';

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
-- the front's alone: it records the client's address and request id in the audit log
GRANT EXECUTE ON FUNCTION agentidp.admin_api(text, text, jsonb, text, text, inet, text)
	TO agentidp_service;

/*
 * Group commit for the HTTP front (src/httpd/batch.c): several token
 * requests in one transaction, each decided by token_endpoint() exactly as
 * alone, with its own request context for its audit rows.  One commit, one
 * flush, one link of each tenant's audit chain for all of them.  An error
 * that token_endpoint does not turn into an OAuth error response fails the
 * whole call, and nothing of it commits: the front then runs the requests
 * one by one.
 */
CREATE FUNCTION agentidp.token_endpoint_batch(requests jsonb)
RETURNS TABLE(status integer, body text)
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
		RETURN NEXT;
	END LOOP;
END
$$;
COMMENT ON FUNCTION agentidp.token_endpoint_batch(jsonb) IS
'token_endpoint() for each request object of the array, in one transaction: one row (status, body) per request, in order';

REVOKE ALL ON FUNCTION agentidp.token_endpoint_batch(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentidp.token_endpoint_batch(jsonb) TO agentidp_service;

/*
 * The tenant of a request's route.  The front names it (a /t/<name>/ path,
 * or a host name under tenant_host_suffix) in the request object as
 * "tenant"; until 0.8 the token endpoint ignored it and served any client
 * there.  Now an unknown or suspended tenant is 404, and a client of
 * another tenant is not known at that route: invalid_client, as for a
 * wrong secret (the grants check it where they learn the client's tenant,
 * agentidp_request_tenant_matches() in C; revocation and introspection in
 * _authenticate_client).
 */
CREATE FUNCTION agentidp._set_request_tenant(tenant_id uuid) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_set_request_tenant';
COMMENT ON FUNCTION agentidp._set_request_tenant(uuid) IS
'the tenant the HTTP front routed this request to, after _set_request_context(): the grants refuse clients of other tenants';

CREATE FUNCTION agentidp._route_tenant(tenant_name text) RETURNS uuid
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT t.tenant_id FROM agentidp.tenants AS t
	WHERE t.name = _route_tenant.tenant_name AND t.status = 'active';
END;
COMMENT ON FUNCTION agentidp._route_tenant(text) IS
'the id of an active tenant by name, for the routes of the HTTP front; NULL when unknown or suspended';

/* the request's route: NULL, or the 404 of an unknown tenant */
CREATE FUNCTION agentidp._request_route(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tenant uuid;
BEGIN
	IF request ->> 'tenant' IS NULL THEN
		RETURN NULL;
	END IF;
	tenant := agentidp._route_tenant(request ->> 'tenant');
	IF tenant IS NULL THEN
		RETURN agentidp._endpoint_error(404, 'not_found', 'no such tenant');
	END IF;
	PERFORM agentidp._set_request_tenant(tenant);
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION agentidp.token_endpoint(request jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	refused jsonb;
BEGIN
	PERFORM agentidp._require(request IS NOT NULL AND jsonb_typeof(request) = 'object', '22023',
		'the request must be a JSON object of the form parameters');
	PERFORM agentidp._request_context(request);
	refused := agentidp._request_route(request);
	IF refused IS NOT NULL THEN
		RETURN refused;
	END IF;
	RETURN agentidp._token_grant(request);
END
$$;

CREATE OR REPLACE FUNCTION agentidp._authenticate_client(request jsonb, OUT client_id text, OUT issuer text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	agent uuid;
	tenant_name text;
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
	SELECT t.issuer, t.name INTO issuer, tenant_name
	FROM agentidp.agents AS a JOIN agentidp.tenants AS t USING (tenant_id)
	WHERE a.client_id = _authenticate_client.client_id;
	-- a client of another tenant than the route's is not known there
	PERFORM agentidp._require(request ->> 'tenant' IS NULL OR request ->> 'tenant' = tenant_name,
		'28000', 'client authentication failed');
END
$$;

CREATE OR REPLACE FUNCTION agentidp._token_request(request jsonb, OUT client_id text, OUT issuer text,
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
	error := agentidp._request_route(request);
	IF error IS NOT NULL THEN
		RETURN;
	END IF;
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	agentidp._set_request_tenant(uuid),
	agentidp._route_tenant(text),
	agentidp._request_route(jsonb)
	TO agentidp_service;
