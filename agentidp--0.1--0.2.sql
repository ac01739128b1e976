/* agentidp--0.1--0.2.sql: the tamper-evident audit chain */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.2'" to load this file. \quit

/*
 * One hash chain per tenant.  Rows are written only by the extension's C
 * code just before a transaction commits (src/audit.c); docs/audit.md
 * documents every column and the hash encoding.  No foreign key to
 * tenants: the log outlives what it records.
 */
CREATE TABLE agentidp.audit_events (
	tenant_id	uuid NOT NULL,
	seq			bigint NOT NULL,			-- 1, 2, 3, ... per tenant, no gaps
	v			smallint NOT NULL,			-- hash encoding version
	at			timestamptz NOT NULL,		-- when the row was chained (its commit)
	actor_agent uuid,						-- the agent of a verified token
	actor_role	text NOT NULL,				-- the database role that acted
	actor_act	json,						-- RFC 8693 "act" chain when delegated
	action		text NOT NULL,				-- insert, update, delete, audit.prune, ...
	resource	text,						-- the table (schema-qualified), or what else was acted on
	resource_key json,						-- the row's primary key, or e.g. a token's jti
	result		text NOT NULL,				-- success, failure, denied
	client_addr inet,						-- the client's address; NULL over a Unix socket
	trace_id	text,						-- agentidp.trace_id when the change was made
	detail		json NOT NULL,				-- what changed: {"new": ...}, {"old": ..., "new": ...}
	prev_hash	bytea NOT NULL,				-- the previous row's hash (32 zero bytes for seq 1)
	hash		bytea NOT NULL,				-- SHA-256 of this row's encoding, prev_hash included
	CONSTRAINT audit_events_pkey PRIMARY KEY (tenant_id, seq)
);
COMMENT ON TABLE agentidp.audit_events IS
'append-only audit log: one SHA-256 hash chain per tenant (docs/audit.md)';

-- where a pruned chain's retained history starts
CREATE TABLE agentidp.audit_anchors (
	tenant_id	uuid NOT NULL,
	seq			bigint NOT NULL CONSTRAINT audit_anchors_seq_valid CHECK (seq OPERATOR(pg_catalog.>) 1),
	prev_hash	bytea NOT NULL
				CONSTRAINT audit_anchors_prev_hash_valid CHECK (pg_catalog.octet_length(prev_hash) OPERATOR(pg_catalog.=) 32),
	pruned_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT audit_anchors_pkey PRIMARY KEY (tenant_id)
);
COMMENT ON TABLE agentidp.audit_anchors IS
'after agentidp.prune_audit: the first kept row of a tenant''s chain and the hash it links to';

SELECT pg_catalog.pg_extension_config_dump('agentidp.audit_events', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.audit_anchors', '');

ALTER TABLE agentidp.audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.audit_events
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));
ALTER TABLE agentidp.audit_anchors ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentidp.audit_anchors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_admin ON agentidp.audit_anchors
	USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]));

/*
 * Append-only, for everyone: no role, the owner included, keeps INSERT,
 * UPDATE, DELETE or TRUNCATE, and a trigger refuses the last three to
 * superusers too.  What bypasses both (session_replication_role = replica,
 * editing files) is what verify_audit_chain and checkpoints catch.
 */
CREATE FUNCTION agentidp._audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'audit events are append-only: % is not allowed', TG_OP
		USING ERRCODE = 'insufficient_privilege',
			  HINT = 'Retention is agentidp.prune_audit(tenant_id, before), which the chain records.';
END
$$;

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON agentidp.audit_events
	FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audit_events_append_only();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON agentidp.audit_events
	FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audit_events_append_only();

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON agentidp.audit_events FROM CURRENT_USER;

/* the row trigger, and what keeps TRUNCATE from erasing audited rows unseen */
CREATE FUNCTION agentidp.audit_trigger() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_audit_trigger';
COMMENT ON FUNCTION agentidp.audit_trigger() IS
'AFTER ROW trigger that appends each change to the row''s tenant''s audit chain; arguments name columns to leave out of the detail';

CREATE FUNCTION agentidp._audited_truncate_refused() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'TRUNCATE of audited table %.% is not allowed', TG_TABLE_SCHEMA, TG_TABLE_NAME
		USING ERRCODE = 'object_not_in_prerequisite_state',
			  HINT = 'DELETE the rows (each deletion is audited), or run agentidp.disable_audit() first.';
END
$$;

DO $audit$
DECLARE
	t text;
	excluded text;
BEGIN
	FOREACH t IN ARRAY ARRAY['tenants', 'tenant_admins', 'agents', 'client_secrets',
							 'client_keys', 'roles', 'agent_roles', 'signing_keys']
	LOOP
		-- secret hashes and wrapped private keys stay out of the log
		excluded := CASE t WHEN 'client_secrets' THEN '''secret_hash'''
						   WHEN 'signing_keys' THEN '''wrapped_key'''
						   ELSE '' END;
		EXECUTE pg_catalog.format(
			'CREATE TRIGGER agentidp_audit AFTER INSERT OR UPDATE OR DELETE ON agentidp.%I '
			'FOR EACH ROW EXECUTE FUNCTION agentidp.audit_trigger(%s)', t, excluded);
		EXECUTE pg_catalog.format(
			'CREATE TRIGGER agentidp_audit_truncate BEFORE TRUNCATE ON agentidp.%I '
			'FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audited_truncate_refused()', t);
	END LOOP;
END
$audit$;

CREATE FUNCTION agentidp.enable_audit(tbl regclass, exclude_columns name[] DEFAULT '{}')
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
	-- rows are chained per tenant: the row's tenant_id says which chain
	SELECT a.atttypid::regtype INTO tenant_type FROM pg_attribute AS a
	WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped;
	PERFORM agentidp._require(tenant_type IS NOT NULL, '42703',
		format('"%s" has no tenant_id column', tbl), NULL,
		'Audited rows are chained per tenant: add a tenant_id uuid column.');
	PERFORM agentidp._require(tenant_type = 'uuid'::regtype, '42804',
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
'chains every insert, update and delete of a table into the audit log of the row''s tenant (its tenant_id column)';

CREATE FUNCTION agentidp.disable_audit(tbl regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(tbl IS NOT NULL, '22004', 'tbl must not be null');
	PERFORM agentidp._require(
		(SELECT n.nspname <> 'agentidp' FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
		 WHERE c.oid = tbl), '42809',
		format('"%s" belongs to agentidp, whose auditing cannot be turned off', tbl));
	PERFORM agentidp._require(EXISTS (SELECT FROM pg_trigger AS g
		WHERE g.tgrelid = tbl AND g.tgname = 'agentidp_audit'), '42704',
		format('"%s" is not audited', tbl));
	EXECUTE format('DROP TRIGGER agentidp_audit ON %s', tbl);
	EXECUTE format('DROP TRIGGER IF EXISTS agentidp_audit_truncate ON %s', tbl);
END
$$;
COMMENT ON FUNCTION agentidp.disable_audit(regclass) IS
'stops auditing a table that agentidp.enable_audit audits; its rows already chained stay';

CREATE FUNCTION agentidp.prune_audit(tenant_id uuid, before timestamptz) RETURNS bigint
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_prune_audit';
COMMENT ON FUNCTION agentidp.prune_audit(uuid, timestamptz) IS
'deletes a tenant''s audit rows chained before a time, records the anchor the kept chain starts from, and chains an audit.prune event; superusers only unless granted';

CREATE FUNCTION agentidp.verify_audit_chain(tenant_id uuid DEFAULT NULL)
RETURNS TABLE(tenant_id uuid, ok boolean, rows_checked bigint, first_bad_seq bigint, reason text)
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'agentidp_verify_audit_chain';
COMMENT ON FUNCTION agentidp.verify_audit_chain(uuid) IS
'recomputes each visible tenant''s audit chain and names the first row that does not match';

CREATE FUNCTION agentidp.audit_checkpoint(tenant_id uuid) RETURNS text
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_audit_checkpoint';
COMMENT ON FUNCTION agentidp.audit_checkpoint(uuid) IS
'a JWS signed with the tenant''s key over its audit chain head {iss, tenant_id, seq, hash, time, iat}';

CREATE FUNCTION agentidp._jws_header(token text) RETURNS jsonb
LANGUAGE c IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'agentidp_jws_header';
COMMENT ON FUNCTION agentidp._jws_header(text) IS
'the protected header of a compact JWS, parsed strictly but not verified: for choosing a key only';

CREATE FUNCTION agentidp.verify_audit_checkpoint(checkpoint text) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	header jsonb;
	k record;
	claims jsonb;
	cp_seq bigint;
	cp_hash bytea;
	row_hash bytea;
	anchor record;
BEGIN
	PERFORM agentidp._require(checkpoint IS NOT NULL, '22004', 'checkpoint must not be null');
	header := agentidp._jws_header(checkpoint);
	PERFORM agentidp._require(header->>'typ' IS NOT DISTINCT FROM 'audit-checkpoint+jwt', '22023',
		'not an agentidp audit checkpoint', 'Its JWS header "typ" is not "audit-checkpoint+jwt".');
	-- the key picks the tenant; any key the tenant ever had, retired ones too
	SELECT s.tenant_id, s.alg, s.public_jwk INTO k FROM agentidp.signing_keys AS s
	WHERE s.kid = header->>'kid';
	PERFORM agentidp._require(FOUND, '28000', 'checkpoint is signed by an unknown key',
		format('No signing key "%s" of a tenant visible to role "%s".', header->>'kid', current_user));
	claims := agentidp.jws_verify(checkpoint,
		jsonb_build_object('keys', jsonb_build_array(k.public_jwk)), ARRAY[k.alg]);
	PERFORM agentidp._require(claims->>'tenant_id' IS NOT DISTINCT FROM k.tenant_id::text, '28000',
		'checkpoint names another tenant than its key''s');
	PERFORM agentidp._require(jsonb_typeof(claims->'seq') = 'number'
		AND (claims->>'seq') ~ '^[0-9]{1,18}$'
		AND (claims->>'hash') ~ '^[0-9a-f]{64}$', '22023', 'malformed checkpoint claims');
	cp_seq := (claims->>'seq')::bigint;
	cp_hash := decode(claims->>'hash', 'hex');
	IF cp_seq = 0 THEN
		-- an empty chain is a prefix of every chain
		RETURN cp_hash = decode(repeat('00', 32), 'hex');
	END IF;

	SELECT e.hash INTO row_hash FROM agentidp.audit_events AS e
	WHERE e.tenant_id = k.tenant_id AND e.seq = cp_seq;
	IF FOUND THEN
		RETURN row_hash = cp_hash;
	END IF;
	SELECT a.seq, a.prev_hash INTO anchor FROM agentidp.audit_anchors AS a
	WHERE a.tenant_id = k.tenant_id;
	IF FOUND AND cp_seq < anchor.seq THEN
		IF cp_seq = anchor.seq - 1 THEN
			RETURN anchor.prev_hash = cp_hash;
		END IF;
		RETURN NULL;				-- pruned history: cannot be decided here
	END IF;
	RETURN false;					-- the row the checkpoint names is gone
END
$$;
COMMENT ON FUNCTION agentidp.verify_audit_checkpoint(text) IS
'true when the audit chain still holds the head a checkpoint signed, false when not, NULL when that part was pruned';

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
GRANT SELECT ON agentidp.audit_events, agentidp.audit_anchors TO agentidp_admin;
GRANT EXECUTE ON FUNCTION
	agentidp.audit_trigger(),
	agentidp.enable_audit(regclass, name[]),
	agentidp.disable_audit(regclass),
	agentidp.verify_audit_chain(uuid),
	agentidp.audit_checkpoint(uuid),
	agentidp._jws_header(text),
	agentidp.verify_audit_checkpoint(text)
	TO agentidp_admin;
-- prune_audit stays with superusers: retention is the DBA's decision
