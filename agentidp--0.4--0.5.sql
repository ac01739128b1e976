/* agentidp--0.4--0.5.sql: the maintenance the background worker (or pg_cron) runs (docs/worker.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.5'" to load this file. \quit

/*
 * Expiry deletes in batches by expiry time: these indexes make each batch
 * a short index range scan, however many rows are left.
 */
CREATE INDEX revoked_tokens_expiry_idx ON agentidp.revoked_tokens (expires_at);
CREATE INDEX used_jtis_expiry_idx ON agentidp.used_jtis (expires_at);
CREATE INDEX refresh_tokens_expiry_idx ON agentidp.refresh_tokens (expires_at);
CREATE INDEX refresh_tokens_idle_expiry_idx ON agentidp.refresh_tokens (idle_expires_at);
CREATE INDEX client_secrets_expiry_idx ON agentidp.client_secrets (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX client_secrets_revoked_idx ON agentidp.client_secrets (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX client_keys_expiry_idx ON agentidp.client_keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX client_keys_revoked_idx ON agentidp.client_keys (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX agents_deleted_idx ON agentidp.agents (deleted_at) WHERE deleted_at IS NOT NULL;
-- which live refresh families began with a credential (expiry keeps such credentials)
CREATE INDEX refresh_tokens_cred_idx ON agentidp.refresh_tokens (tenant_id, cred) WHERE revoked_at IS NULL;

/*
 * How far each tenant's audit chain has been verified: the next run
 * starts after seq, from hash, so its cost follows the new rows only.
 * broken_seq is set while the chain is broken there; reported_at says
 * when the break was last announced, so that it is announced once.
 */
CREATE TABLE agentidp.audit_verified (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants ON DELETE CASCADE,
	seq			bigint NOT NULL,
	hash		bytea NOT NULL
				CONSTRAINT audit_verified_hash_valid CHECK (pg_catalog.octet_length(hash) OPERATOR(pg_catalog.=) 32),
	verified_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	broken_seq	bigint,
	broken_reason text,
	reported_at	timestamptz,
	CONSTRAINT audit_verified_pkey PRIMARY KEY (tenant_id)
);
COMMENT ON TABLE agentidp.audit_verified IS
'per tenant, the last audit row verified by the incremental verification, and a break it found';
ALTER TABLE agentidp.audit_verified ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.audit_verified FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.audit_verified
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));
GRANT SELECT ON agentidp.audit_verified TO agentidp_admin;

/*
 * The last run of each maintenance task in this database.  Not a
 * tenant's data: one row per task, for the whole database, shown to
 * administrators through the view agentidp.worker_status.
 */
CREATE TABLE agentidp.maintenance_tasks (
	task		text NOT NULL,
	runs		bigint NOT NULL DEFAULT 0,
	last_started_at timestamptz,
	last_finished_at timestamptz,
	last_rows	bigint,
	last_ok		boolean,
	total_rows	bigint NOT NULL DEFAULT 0,
	last_error	text,
	last_error_at timestamptz,
	CONSTRAINT maintenance_tasks_pkey PRIMARY KEY (task)
);
COMMENT ON TABLE agentidp.maintenance_tasks IS
'the last run of each maintenance task (agentidp.run_maintenance), for agentidp.worker_status';
ALTER TABLE agentidp.maintenance_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.maintenance_tasks FORCE ROW LEVEL SECURITY;
INSERT INTO agentidp.maintenance_tasks (task)
VALUES ('expiry'), ('audit_verification'), ('refusals'), ('webhooks'), ('issuer_keys'), ('quota_reset');

CREATE FUNCTION agentidp._task_done(task text, started_at timestamptz, rows bigint, error text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE agentidp.maintenance_tasks AS t
	SET runs = t.runs + 1,
		last_started_at = _task_done.started_at,
		last_finished_at = clock_timestamp(),
		last_rows = _task_done.rows,
		last_ok = _task_done.error IS NULL,
		total_rows = t.total_rows + COALESCE(_task_done.rows, 0),
		last_error = COALESCE(_task_done.error, t.last_error),
		last_error_at = CASE WHEN _task_done.error IS NULL THEN t.last_error_at ELSE clock_timestamp() END
	WHERE t.task = _task_done.task;
END;
COMMENT ON FUNCTION agentidp._task_done(text, timestamptz, bigint, text) IS
'records a run of a maintenance task in agentidp.maintenance_tasks';

/* a failed task says so in the server log too, with its error */
CREATE FUNCTION agentidp._task_failed(task text, error text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF error IS NOT NULL THEN
		RAISE WARNING 'agentidp: maintenance task % failed: %', task, error;
	END IF;
END
$$;

/*
 * Expiry, one batch: at most batch_size rows of each kind, oldest first.
 * Rows another transaction holds are skipped (SKIP LOCKED): expiry never
 * waits for, nor blocks, the token service.  Rows whose end is past by
 * more than the clock-skew leeway go: a token, assertion or proof can no
 * longer be accepted then, so its revocation or replay entry protects
 * nothing.  Credentials and deleted agents are kept while a token
 * obtained with them could still be valid (agentidp.max_token_lifetime
 * plus the leeway after they ended), deleted agents for
 * agentidp.deleted_agent_retention.  Deleting credentials and agents is
 * audited, as every change to them is.
 */
CREATE FUNCTION agentidp.expire_batch(batch_size integer DEFAULT NULL)
RETURNS TABLE(kind text, deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	-- first a call into the library, which defines the settings read next
	-- settings in seconds read back with a unit ('1min', '30d'), which interval input takes
	grace interval := agentidp._max_token_lifetime() + current_setting('agentidp.clock_skew')::interval;
	n integer := COALESCE(batch_size, current_setting('agentidp.expiry_batch_size')::integer);
	skew interval := current_setting('agentidp.clock_skew')::interval;
	retention interval := current_setting('agentidp.deleted_agent_retention')::interval;
	c bigint;
BEGIN
	PERFORM agentidp._require(n BETWEEN 1 AND 1000000, '22023', 'batch_size must be 1 to 1000000');

	DELETE FROM agentidp.revoked_tokens AS r
	USING (SELECT x.tenant_id, x.jti FROM agentidp.revoked_tokens AS x
		   WHERE x.expires_at < now() - skew ORDER BY x.expires_at LIMIT n
		   FOR UPDATE SKIP LOCKED) AS d
	WHERE r.tenant_id = d.tenant_id AND r.jti = d.jti;
	GET DIAGNOSTICS c = ROW_COUNT;
	kind := 'revoked_tokens'; deleted := c; RETURN NEXT;

	-- recorded with the leeway already added (the assertion's exp + skew)
	DELETE FROM agentidp.used_jtis AS u
	USING (SELECT x.tenant_id, x.kind, x.jti FROM agentidp.used_jtis AS x
		   WHERE x.expires_at < now() ORDER BY x.expires_at LIMIT n
		   FOR UPDATE SKIP LOCKED) AS d
	WHERE u.tenant_id = d.tenant_id AND u.kind = d.kind AND u.jti = d.jti;
	GET DIAGNOSTICS c = ROW_COUNT;
	kind := 'used_jtis'; deleted := c; RETURN NEXT;

	-- a refresh token past either end can never be used again
	DELETE FROM agentidp.refresh_tokens AS r
	USING (SELECT x.tenant_id, x.token_id FROM agentidp.refresh_tokens AS x
		   WHERE x.expires_at < now() - skew ORDER BY x.expires_at LIMIT n
		   FOR UPDATE SKIP LOCKED) AS d
	WHERE r.tenant_id = d.tenant_id AND r.token_id = d.token_id;
	GET DIAGNOSTICS c = ROW_COUNT;
	deleted := c;
	DELETE FROM agentidp.refresh_tokens AS r
	USING (SELECT x.tenant_id, x.token_id FROM agentidp.refresh_tokens AS x
		   WHERE x.idle_expires_at < now() - skew ORDER BY x.idle_expires_at LIMIT n
		   FOR UPDATE SKIP LOCKED) AS d
	WHERE r.tenant_id = d.tenant_id AND r.token_id = d.token_id;
	GET DIAGNOSTICS c = ROW_COUNT;
	kind := 'refresh_tokens'; deleted := deleted + c; RETURN NEXT;

	/*
	 * Credentials that ended (expired or revoked) long enough ago, unless a
	 * live refresh family began with one: the access tokens it still gives
	 * name that credential, and verification looks it up.
	 */
	DELETE FROM agentidp.client_secrets AS s
	USING (SELECT x.tenant_id, x.secret_id FROM agentidp.client_secrets AS x
		   WHERE (x.expires_at < now() - grace OR x.revoked_at < now() - grace)
			 AND NOT EXISTS (SELECT FROM agentidp.refresh_tokens AS r
							 WHERE r.tenant_id = x.tenant_id AND r.cred = 's:' || x.secret_id
							   AND r.revoked_at IS NULL AND r.expires_at > now())
		   LIMIT n FOR UPDATE OF x SKIP LOCKED) AS d
	WHERE s.tenant_id = d.tenant_id AND s.secret_id = d.secret_id;
	GET DIAGNOSTICS c = ROW_COUNT;
	kind := 'client_secrets'; deleted := c; RETURN NEXT;

	DELETE FROM agentidp.client_keys AS k
	USING (SELECT x.tenant_id, x.key_id FROM agentidp.client_keys AS x
		   WHERE (x.expires_at < now() - grace OR x.revoked_at < now() - grace)
			 AND NOT EXISTS (SELECT FROM agentidp.refresh_tokens AS r
							 WHERE r.tenant_id = x.tenant_id AND r.cred = 'k:' || x.key_id
							   AND r.revoked_at IS NULL AND r.expires_at > now())
		   LIMIT n FOR UPDATE OF x SKIP LOCKED) AS d
	WHERE k.tenant_id = d.tenant_id AND k.key_id = d.key_id;
	GET DIAGNOSTICS c = ROW_COUNT;
	kind := 'client_keys'; deleted := c; RETURN NEXT;

	deleted := agentidp._purge_deleted_agents(now() - GREATEST(retention, grace), n);
	kind := 'agents'; RETURN NEXT;
END
$$;
COMMENT ON FUNCTION agentidp.expire_batch(integer) IS
'deletes one batch (agentidp.expiry_batch_size by default) of each kind of expired row; returns how many of each';

/*
 * A deleted agent is final; after the retention its rows go, with what
 * still refers to them.  Its credentials were revoked when it was
 * deleted; its refresh tokens, delegation grants and roles go with it.
 */
CREATE FUNCTION agentidp._purge_deleted_agents(deleted_before timestamptz, max_agents integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c bigint;
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS agentidp_purge (tenant_id uuid, agent_id uuid) ON COMMIT DROP;
	TRUNCATE agentidp_purge;
	INSERT INTO agentidp_purge
	SELECT a.tenant_id, a.agent_id FROM agentidp.agents AS a
	WHERE a.status = 'deleted' AND a.deleted_at < deleted_before
	ORDER BY a.deleted_at LIMIT max_agents
	FOR UPDATE SKIP LOCKED;

	DELETE FROM agentidp.refresh_tokens AS r USING agentidp_purge AS p
	WHERE r.tenant_id = p.tenant_id AND r.agent_id = p.agent_id;
	DELETE FROM agentidp.may_act AS m USING agentidp_purge AS p
	WHERE m.tenant_id = p.tenant_id AND (m.subject_agent_id = p.agent_id OR m.actor_agent_id = p.agent_id);
	DELETE FROM agentidp.client_secrets AS s USING agentidp_purge AS p
	WHERE s.tenant_id = p.tenant_id AND s.agent_id = p.agent_id;
	DELETE FROM agentidp.client_keys AS k USING agentidp_purge AS p
	WHERE k.tenant_id = p.tenant_id AND k.agent_id = p.agent_id;
	DELETE FROM agentidp.agents AS a USING agentidp_purge AS p
	WHERE a.tenant_id = p.tenant_id AND a.agent_id = p.agent_id;
	GET DIAGNOSTICS c = ROW_COUNT;
	RETURN c;
END
$$;
COMMENT ON FUNCTION agentidp._purge_deleted_agents(timestamptz, integer) IS
'deletes up to max_agents agents deleted before the given time, with their credentials, refresh tokens and delegation grants';

/*
 * Incremental verification of the audit chains (src/audit_verify.c).
 */
CREATE FUNCTION agentidp.verify_audit_increment(max_rows integer DEFAULT 100000)
RETURNS TABLE(tenant_id uuid, ok boolean, rows_checked bigint, first_bad_seq bigint, reason text,
			  newly_broken boolean)
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_verify_audit_increment';
COMMENT ON FUNCTION agentidp.verify_audit_increment(integer) IS
'verifies each tenant''s audit rows written since the last run (at most max_rows per tenant) and remembers how far it got';

/* whether agentidp came from shared_preload_libraries (bgworker/launcher.c) */
CREATE FUNCTION agentidp._preloaded() RETURNS boolean
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'agentidp_preloaded_sql';
COMMENT ON FUNCTION agentidp._preloaded() IS
'true when agentidp is in shared_preload_libraries: shared memory and the background worker are there';

/* the launcher serves this database from now on (bgworker/launcher.c) */
CREATE FUNCTION agentidp._wake_worker() RETURNS boolean
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_wake_worker';
COMMENT ON FUNCTION agentidp._wake_worker() IS
'asks the background worker''s launcher to look for databases with agentidp now; false when it is not running';

/*
 * Users' audited tables need no tenant_id column any more: their rows go
 * to the chain of the writing transaction's identity (authenticate()),
 * and every audit row names the agent of that identity and its "act"
 * (src/audit.c).
 */
CREATE OR REPLACE FUNCTION agentidp.enable_audit(tbl regclass, exclude_columns name[] DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	kind "char";
	tenant_type regtype;
	missing name;
	args text;
BEGIN
	PERFORM agentidp._require(tbl IS NOT NULL, '22004', 'tbl must not be null');
	PERFORM agentidp._require(exclude_columns IS NOT NULL, '22004', 'exclude_columns must not be null');
	SELECT c.relkind INTO kind FROM pg_class AS c WHERE c.oid = tbl;
	PERFORM agentidp._require(kind IN ('r', 'p'), '42809',
		format('"%s" is not a table', tbl), NULL, 'Only tables (plain or partitioned) can be audited.');
	PERFORM agentidp._require(
		(SELECT n.nspname <> 'agentidp' FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
		 WHERE c.oid = tbl), '42809',
		format('"%s" belongs to agentidp, whose tables are audited already', tbl));
	-- rows are chained per tenant: the row's tenant_id says which chain, or
	-- for a table without one the tenant of the writing transaction's identity
	SELECT a.atttypid::regtype INTO tenant_type FROM pg_attribute AS a
	WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped;
	PERFORM agentidp._require(tenant_type IS NULL OR tenant_type = 'uuid'::regtype, '42804',
		format('column tenant_id of "%s" is of type %s, not uuid', tbl, tenant_type));
	SELECT x INTO missing FROM unnest(exclude_columns) AS x
	WHERE x IS NULL OR NOT EXISTS (SELECT FROM pg_attribute AS a
		WHERE a.attrelid = tbl AND a.attname = x AND a.attnum > 0 AND NOT a.attisdropped)
	LIMIT 1;
	PERFORM agentidp._require(NOT FOUND, '42703',
		format('column "%s" of "%s" does not exist', missing, tbl));
	PERFORM agentidp._require(NOT EXISTS (SELECT FROM pg_trigger AS g
		WHERE g.tgrelid = tbl AND g.tgname = 'agentidp_audit'), '42710',
		format('"%s" is audited already', tbl), NULL,
		'Run agentidp.disable_audit() first to change the excluded columns.');

	SELECT coalesce(string_agg(quote_literal(x), ', '), '') INTO args FROM unnest(exclude_columns) AS x;
	EXECUTE format('CREATE TRIGGER agentidp_audit AFTER INSERT OR UPDATE OR DELETE ON %s '
				   'FOR EACH ROW EXECUTE FUNCTION agentidp.audit_trigger(%s)', tbl, args);
	EXECUTE format('CREATE TRIGGER agentidp_audit_truncate BEFORE TRUNCATE ON %s '
				   'FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audited_truncate_refused()', tbl);
END
$$;
COMMENT ON FUNCTION agentidp.enable_audit(regclass, name[]) IS
'chains every insert, update and delete of a table into the audit log of the row''s tenant (its tenant_id column, else the tenant of the transaction''s identity)';

/*
 * Trusted external issuers: a person's identity provider, whose tokens
 * token exchange accepts as the subject an agent acts for
 * (docs/issuers.md).  The tenant's administrators trust and untrust
 * them (audited, as every change to agentidp's configuration); the worker
 * fetches their key sets into agentidp.issuer_keys, a cache that is not
 * audited.
 */
CREATE TABLE agentidp.trusted_issuers (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants ON DELETE CASCADE,
	issuer		text NOT NULL CONSTRAINT trusted_issuers_issuer_valid
				CHECK (pg_catalog.length(issuer) OPERATOR(pg_catalog.<=) 255),
	jwks_uri	text NOT NULL CONSTRAINT trusted_issuers_jwks_uri_valid
				CHECK (pg_catalog.length(jwks_uri) OPERATOR(pg_catalog.<=) 2048),
	scopes		text[] CONSTRAINT trusted_issuers_scopes_valid CHECK (scopes IS NULL OR agentidp._valid_scopes(scopes)),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT trusted_issuers_pkey PRIMARY KEY (tenant_id, issuer)
);
COMMENT ON TABLE agentidp.trusted_issuers IS
'outside issuers (people''s identity providers) whose tokens token exchange accepts as the subject, with the most their people may delegate';
SELECT pg_catalog.pg_extension_config_dump('agentidp.trusted_issuers', '');
ALTER TABLE agentidp.trusted_issuers ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.trusted_issuers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.trusted_issuers
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]))
	WITH CHECK (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));
CREATE TRIGGER agentidp_audit AFTER INSERT OR UPDATE OR DELETE ON agentidp.trusted_issuers
	FOR EACH ROW EXECUTE FUNCTION agentidp.audit_trigger();
CREATE TRIGGER agentidp_audit_truncate BEFORE TRUNCATE ON agentidp.trusted_issuers
	FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audited_truncate_refused();
GRANT SELECT ON agentidp.trusted_issuers TO agentidp_admin;

CREATE TABLE agentidp.issuer_keys (
	tenant_id	uuid NOT NULL,
	issuer		text NOT NULL,
	jwks		jsonb,					-- the public keys last fetched, checked; NULL before the first
	fetched_at	timestamptz,
	next_fetch_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	refresh_requested_at timestamptz,	-- when a token naming a kid not in jwks last made it due
	last_error	text,
	last_error_at timestamptz,
	CONSTRAINT issuer_keys_pkey PRIMARY KEY (tenant_id, issuer),
	CONSTRAINT issuer_keys_issuer_fkey FOREIGN KEY (tenant_id, issuer)
		REFERENCES agentidp.trusted_issuers (tenant_id, issuer) ON DELETE CASCADE ON UPDATE CASCADE
);
COMMENT ON TABLE agentidp.issuer_keys IS
'the cached key sets of trusted issuers, fetched by agentidp.refresh_issuer_keys()';
CREATE INDEX issuer_keys_due_idx ON agentidp.issuer_keys (next_fetch_at);
ALTER TABLE agentidp.issuer_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.issuer_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.issuer_keys
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));
GRANT SELECT ON agentidp.issuer_keys TO agentidp_admin;

/* an issuer identifier (RFC 8414 section 2) or a key set's URL: absolute http(s), a host, no fragment */
CREATE FUNCTION agentidp._check_http_url(url text, what text, allow_query boolean) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(url IS NOT NULL, '22004', format('%s must not be null', what));
	PERFORM agentidp._require(
		url ~ '^https?://[^/?#@[:space:][:cntrl:]]+(/[^#[:space:][:cntrl:]]*)?$'
		AND (allow_query OR position('?' in url) = 0), '22023',
		format('%s must be an absolute http(s) URL with a host', what),
		NULL, CASE WHEN allow_query THEN 'No user information, fragment or white space.'
				   ELSE 'No user information, query, fragment or white space.' END);
END
$$;

CREATE FUNCTION agentidp.trust_issuer(tenant_id uuid, issuer text, jwks_uri text, scopes text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t agentidp.tenants;
BEGIN
	t := agentidp._visible_tenant(tenant_id);
	PERFORM agentidp._check_http_url(issuer, 'issuer', false);
	PERFORM agentidp._check_http_url(jwks_uri, 'jwks_uri', true);
	PERFORM agentidp._require(length(issuer) <= 255, '22023', 'issuer must be at most 255 characters');
	PERFORM agentidp._require(length(jwks_uri) <= 2048, '22023', 'jwks_uri must be at most 2048 characters');
	PERFORM agentidp._require(issuer <> t.issuer, '22023', 'a tenant does not trust itself as an outside issuer');
	IF scopes IS NOT NULL THEN
		PERFORM agentidp._check_scopes(scopes);
	END IF;
	INSERT INTO agentidp.trusted_issuers AS x (tenant_id, issuer, jwks_uri, scopes)
	VALUES (t.tenant_id, issuer, jwks_uri,
			CASE WHEN scopes IS NOT NULL THEN ARRAY(SELECT DISTINCT s FROM unnest(scopes) AS s ORDER BY s) END)
	ON CONFLICT ON CONSTRAINT trusted_issuers_pkey DO UPDATE
	SET jwks_uri = excluded.jwks_uri, scopes = excluded.scopes;
END
$$;
COMMENT ON FUNCTION agentidp.trust_issuer(uuid, text, text, text[]) IS
'trusts an outside issuer''s tokens as token exchange subjects (within scopes, when given); the worker fetches its key set from jwks_uri';

/*
 * A new or moved key set is fetched at the next run.  The cache row is
 * not the administrators' to write: a trigger of the trust, which row-level
 * security let them change, writes it as the owner.
 */
CREATE FUNCTION agentidp._issuer_keys_due() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO agentidp.issuer_keys AS k (tenant_id, issuer, next_fetch_at)
	VALUES (NEW.tenant_id, NEW.issuer, now())
	ON CONFLICT ON CONSTRAINT issuer_keys_pkey DO UPDATE SET next_fetch_at = now(), jwks = NULL,
		fetched_at = NULL, refresh_requested_at = NULL, last_error = NULL, last_error_at = NULL;
	RETURN NULL;
END
$$;
CREATE TRIGGER issuer_keys_due AFTER INSERT OR UPDATE OF jwks_uri ON agentidp.trusted_issuers
	FOR EACH ROW EXECUTE FUNCTION agentidp._issuer_keys_due();

CREATE FUNCTION agentidp.untrust_issuer(tenant_id uuid, issuer text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t agentidp.tenants;
BEGIN
	t := agentidp._visible_tenant(tenant_id);
	DELETE FROM agentidp.trusted_issuers AS x WHERE x.tenant_id = t.tenant_id AND x.issuer = untrust_issuer.issuer;
	PERFORM agentidp._require(FOUND, '42704', format('issuer "%s" is not trusted by this tenant', issuer));
END
$$;
COMMENT ON FUNCTION agentidp.untrust_issuer(uuid, text) IS
'ends the trust in an outside issuer: tokens exchanged for its people stop verifying at once';

/* a fetched key set, checked: public keys of the algorithms agentidp verifies (src/issuers.c) */
CREATE FUNCTION agentidp._public_key_set(jwks jsonb) RETURNS jsonb
LANGUAGE c IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'agentidp_public_key_set';
COMMENT ON FUNCTION agentidp._public_key_set(jsonb) IS
'the keys of a JWK Set that are valid public signing keys with a kid; raises when none is';

GRANT EXECUTE ON FUNCTION
	agentidp.trust_issuer(uuid, text, text, text[]),
	agentidp.untrust_issuer(uuid, text),
	agentidp._check_http_url(text, text, boolean)
	TO agentidp_admin;
GRANT INSERT, UPDATE (jwks_uri, scopes), DELETE ON agentidp.trusted_issuers TO agentidp_admin;

/*
 * Hooks of the tasks that other parts fill in: webhook delivery and its
 * outbox (docs/worker.md), trusted issuers' key sets, quota windows.
 * Until then they do nothing.
 */
CREATE FUNCTION agentidp._enqueue_event(tenant_id uuid, event text, data jsonb) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT;
END;
COMMENT ON FUNCTION agentidp._enqueue_event(uuid, text, jsonb) IS
'queues an event for the tenant''s webhook subscribers, in the calling transaction';

CREATE PROCEDURE agentidp.deliver_webhooks(INOUT delivered bigint DEFAULT 0,
										   time_budget interval DEFAULT '30 seconds')
LANGUAGE plpgsql
AS $$
BEGIN
	delivered := 0;
END
$$;
COMMENT ON PROCEDURE agentidp.deliver_webhooks(bigint, interval) IS
'delivers queued webhook events; returns how many were delivered';

CREATE FUNCTION agentidp.refresh_issuer_keys() RETURNS bigint
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_refresh_issuer_keys';
COMMENT ON FUNCTION agentidp.refresh_issuer_keys() IS
'fetches the key sets of trusted external issuers that are due; returns how many were refreshed';

CREATE FUNCTION agentidp.reset_quotas() RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
RETURN 0;
COMMENT ON FUNCTION agentidp.reset_quotas() IS
'starts the new counting windows of quotas whose window ended; returns how many (a hook for the limits)';

/*
 * A task that is one call returning how many rows it handled: run it,
 * and record the run, its failure too, without ending the caller.
 */
CREATE FUNCTION agentidp._run_task(task text, call text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	started timestamptz := clock_timestamp();
	n bigint;
	err text;
BEGIN
	BEGIN
		EXECUTE 'SELECT ' || call INTO n;
	EXCEPTION WHEN OTHERS THEN
		err := SQLERRM;
	END;
	PERFORM agentidp._task_failed(task, err);
	PERFORM agentidp._task_done(task, started, n, err);
END
$$;

/*
 * Every task, each in its own short transactions: what the background
 * worker runs every agentidp.worker_naptime, and what pg_cron runs where
 * the library cannot be preloaded (CALL agentidp.run_maintenance()).  A
 * task that fails is recorded and the others still run.  Expiry stops
 * when nothing is left or after time_budget, whichever comes first.
 *
 * A procedure that commits cannot have a SET clause, so it pins no
 * search_path: it names everything of agentidp with its schema, and the
 * built-in functions it calls come from pg_catalog, which is searched
 * first unless the caller's path names it later.  It runs with its
 * caller's rights, a superuser's in the worker and the job owner's under
 * pg_cron.
 */
CREATE PROCEDURE agentidp.run_maintenance(time_budget interval DEFAULT '1 minute')
LANGUAGE plpgsql
AS $$
DECLARE
	started timestamptz;
	deadline timestamptz := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) time_budget;
	total bigint;
	n bigint;
	err text;
	r record;
BEGIN
	-- expiry: batch after batch, each its own transaction
	started := pg_catalog.clock_timestamp();
	total := 0;
	err := NULL;
	LOOP
		BEGIN
			SELECT COALESCE(pg_catalog.sum(b.deleted), 0) INTO n FROM agentidp.expire_batch() AS b;
		EXCEPTION WHEN OTHERS THEN
			err := SQLERRM;
			n := 0;
		END;
		total := total OPERATOR(pg_catalog.+) n;
		EXIT WHEN n OPERATOR(pg_catalog.=) 0
			OR pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) deadline;
		COMMIT;
	END LOOP;
	PERFORM agentidp._task_failed('expiry', err);
	PERFORM agentidp._task_done('expiry', started, total, err);
	COMMIT;

	-- audit chains: what was written since the last run
	started := pg_catalog.clock_timestamp();
	total := 0;
	err := NULL;
	BEGIN
		FOR r IN SELECT * FROM agentidp.verify_audit_increment() LOOP
			total := total OPERATOR(pg_catalog.+) r.rows_checked;
			IF r.newly_broken THEN
				RAISE WARNING 'agentidp: the audit chain of tenant % is broken at row %: %',
					r.tenant_id, r.first_bad_seq, r.reason;
				PERFORM agentidp._enqueue_event(r.tenant_id, 'audit.chain_broken',
					pg_catalog.jsonb_build_object('first_bad_seq', r.first_bad_seq, 'reason', r.reason));
			END IF;
		END LOOP;
	EXCEPTION WHEN OTHERS THEN
		err := SQLERRM;
	END;
	PERFORM agentidp._task_failed('audit_verification', err);
	PERFORM agentidp._task_done('audit_verification', started, total, err);
	COMMIT;

	-- refused grants queued in shared memory (preloaded only)
	IF agentidp._preloaded() THEN
		PERFORM agentidp._run_task('refusals', 'agentidp.drain_refusals()');
		COMMIT;
	END IF;

	-- trusted issuers' key sets, and quota windows
	PERFORM agentidp._run_task('issuer_keys', 'agentidp.refresh_issuer_keys()');
	COMMIT;
	PERFORM agentidp._run_task('quota_reset', 'agentidp.reset_quotas()');
	COMMIT;

	-- webhooks last: delivery waits on the network, outside any transaction
	-- that holds locks; it records its own errors (a procedure that
	-- commits cannot run inside an exception block)
	started := pg_catalog.clock_timestamp();
	n := 0;
	CALL agentidp.deliver_webhooks(n, GREATEST(deadline OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp(),
										interval '1 second'));
	PERFORM agentidp._task_done('webhooks', started, n, NULL);
	COMMIT;
END
$$;
COMMENT ON PROCEDURE agentidp.run_maintenance(interval) IS
'runs every maintenance task: expiry, incremental audit verification, queued refusals, trusted issuers'' keys, quota windows, webhooks; for the worker and for pg_cron';

/*
 * What the worker has done here, task by task, and the processes doing
 * it now.  A view with its owner's rights: administrators see the
 * database-wide status without reading the table.
 */
CREATE VIEW agentidp.worker_status AS
SELECT t.task, t.runs, t.last_started_at, t.last_finished_at, t.last_ok, t.last_rows, t.total_rows,
	   t.last_error, t.last_error_at,
	   (SELECT pg_catalog.array_agg(a.pid ORDER BY a.pid) FROM pg_catalog.pg_stat_activity AS a
		WHERE a.backend_type OPERATOR(pg_catalog.=) 'agentidp worker'
		  AND a.datid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database AS d
											  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))
		AS worker_pids,
	   -- what is wrong now: the broken audit chains of the tenants the reader administers
	   CASE WHEN t.task OPERATOR(pg_catalog.=) 'audit_verification' THEN
		(SELECT pg_catalog.array_agg(pg_catalog.format('tenant %s: broken at row %s: %s',
													   v.tenant_id, v.broken_seq, v.broken_reason)
									 ORDER BY v.tenant_id)
		 FROM agentidp.audit_verified AS v
		 WHERE v.broken_seq IS NOT NULL
		   AND (pg_catalog.current_setting('is_superuser')::boolean
				OR v.tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[])))
	   END AS problems
FROM agentidp.maintenance_tasks AS t;
COMMENT ON VIEW agentidp.worker_status IS
'each maintenance task''s last run (rows handled, last error), the worker processes serving this database, and what is wrong now (broken audit chains)';
GRANT SELECT ON agentidp.worker_status TO agentidp_admin;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
REVOKE ALL ON PROCEDURE agentidp.run_maintenance(interval) FROM PUBLIC;
REVOKE ALL ON PROCEDURE agentidp.deliver_webhooks(bigint, interval) FROM PUBLIC;

-- a worker already running picks this database up at once
SELECT agentidp._wake_worker();
