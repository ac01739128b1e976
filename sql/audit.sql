--
-- The audit chain (src/audit.c, src/audit_verify.c): what is recorded, that
-- rolled-back work leaves nothing, append-only, users' tables, each kind of
-- tampering found with the right first_bad_seq, checkpoints and pruning.
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('audit-a') AS t \gset

-- the tenant's own creation starts its chain; each change is one row
SELECT agentidp.register_agent(:'t', 'auditor', '{read}') AS agent \gset
SELECT agentidp.create_client_secret(:'agent') IS NOT NULL AS secret_made;
SELECT agentidp.suspend_agent(:'agent');
SELECT seq, v, actor_role, action, resource, result, client_addr IS NOT NULL AS has_addr,
	   trace_id, seq = 1 AND prev_hash = decode(repeat('00', 32), 'hex') AS genesis,
	   octet_length(hash) AS hash_len
FROM agentidp.audit_events WHERE tenant_id = :'t' ORDER BY seq;

-- keys and details: primary key as resource_key, only changed columns on update
SELECT resource_key::jsonb ? 'agent_id' AS keyed,
	   (detail::jsonb -> 'old') - '{updated_at}'::text[] AS old,
	   (detail::jsonb -> 'new') - '{updated_at,suspended_at}'::text[] AS new
FROM agentidp.audit_events WHERE tenant_id = :'t' AND action = 'update';
SELECT (detail::jsonb -> 'new') ? 'secret_hash' AS hash_logged,
	   (detail::jsonb -> 'new') ? 'hint' AS hint_logged
FROM agentidp.audit_events WHERE tenant_id = :'t' AND resource = 'agentidp.client_secrets';

-- rolled back: a transaction, a savepoint; nothing remains, no gap
BEGIN;
SELECT agentidp.register_agent(:'t', 'never') IS NOT NULL AS registered;
ROLLBACK;
BEGIN;
SAVEPOINT s1;
SELECT agentidp.register_agent(:'t', 'never-either') IS NOT NULL AS registered;
ROLLBACK TO s1;
SAVEPOINT s2;
SELECT agentidp.register_agent(:'t', 'kept') IS NOT NULL AS registered;
RELEASE s2;
COMMIT;
-- a failing statement inside a PL/pgSQL exception block drops its events too
DO $$
BEGIN
	BEGIN
		PERFORM agentidp.register_agent(t.tenant_id, 'swallowed') FROM agentidp.tenants t WHERE name = 'audit-a';
		RAISE EXCEPTION 'undo';
	EXCEPTION WHEN raise_exception THEN NULL;
	END;
END
$$;
SELECT count(*) AS rows, max(seq) AS max_seq,
	   count(*) FILTER (WHERE detail::text LIKE '%never%' OR detail::text LIKE '%swallowed%') AS rolled_back
FROM agentidp.audit_events WHERE tenant_id = :'t';

-- the trace id: a W3C traceparent is reduced to its trace id
BEGIN;
SET LOCAL agentidp.trace_id = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
SELECT agentidp.reactivate_agent(:'agent');
COMMIT;
SELECT trace_id FROM agentidp.audit_events WHERE tenant_id = :'t' ORDER BY seq DESC LIMIT 1;
SET agentidp.trace_id = 'req-42:retry.1';
SHOW agentidp.trace_id;
SET agentidp.trace_id = 'has space';
SET agentidp.trace_id = '00-00000000000000000000000000000000-00f067aa0ba902b7-01';
-- not a traceparent (dashes elsewhere), so kept whole
SET agentidp.trace_id = '00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01';
SHOW agentidp.trace_id;
RESET agentidp.trace_id;

-- append-only for administrators: no privilege to write
INSERT INTO agentidp.audit_events SELECT * FROM agentidp.audit_events LIMIT 1;
UPDATE agentidp.audit_events SET result = 'denied';
DELETE FROM agentidp.audit_events;
TRUNCATE agentidp.audit_events;
SELECT agentidp.prune_audit(:'t', now());
RESET ROLE;
-- a role granted prune_audit still prunes only the tenants it administers
GRANT EXECUTE ON FUNCTION agentidp.prune_audit(uuid, timestamptz) TO regress_admin_b;
SET ROLE regress_admin_b;
\set VERBOSITY terse
SELECT agentidp.prune_audit(:'t', now());
\set VERBOSITY default
RESET ROLE;
REVOKE EXECUTE ON FUNCTION agentidp.prune_audit(uuid, timestamptz) FROM regress_admin_b;
-- and for the owner, a superuser, too
UPDATE agentidp.audit_events SET result = 'denied';
DELETE FROM agentidp.audit_events;
TRUNCATE agentidp.audit_events;
TRUNCATE agentidp.agents CASCADE;

-- another tenant's administrator sees none of it, not even through verify
SET ROLE regress_admin_b;
SELECT count(*) FROM agentidp.audit_events WHERE tenant_id = :'t';
SELECT count(*) FROM agentidp.verify_audit_chain(:'t');
SET ROLE regress_outsider;
SELECT * FROM agentidp.verify_audit_chain();
SELECT * FROM agentidp.audit_events;
RESET ROLE;

SET ROLE regress_admin_a;
SELECT ok, rows_checked, first_bad_seq, reason FROM agentidp.verify_audit_chain(:'t');
RESET ROLE;

--
-- Users' tables
--
CREATE TABLE public.orders (
	tenant_id	uuid,
	order_id	int PRIMARY KEY,
	item		text NOT NULL,
	amount		numeric,
	card		text,
	paid		boolean DEFAULT false,
	extra		jsonb
);
CREATE VIEW public.orders_view AS SELECT * FROM public.orders;
CREATE TABLE public.bad_tenant (tenant_id text, x int);
CREATE TABLE public.no_tenant (x int);
SELECT agentidp.enable_audit('public.orders_view');
SELECT agentidp.enable_audit('public.bad_tenant');
-- a table without tenant_id is audited into the chain of the writer's identity;
-- without an identity its rows cannot be written (sql/authz.sql has the rest)
SELECT agentidp.enable_audit('public.no_tenant');
INSERT INTO public.no_tenant VALUES (1);
SELECT agentidp.enable_audit('public.orders', '{nope}');
SELECT agentidp.enable_audit('agentidp.agents');
SELECT agentidp.disable_audit('public.orders');
SELECT agentidp.enable_audit('public.orders', '{card}');
SELECT agentidp.enable_audit('public.orders');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass ORDER BY 1;

INSERT INTO public.orders VALUES (:'t', 1, 'tea "green"', 4.50, '4111-1111', false, '{"b": 1, "a": [1, 2]}');
UPDATE public.orders SET paid = true, card = '5500-0000' WHERE order_id = 1;
UPDATE public.orders SET card = '6011-0000' WHERE order_id = 1;
DELETE FROM public.orders WHERE order_id = 1;
SELECT action, resource, resource_key, replace(detail::text, :'t', '<tenant>') AS detail
FROM agentidp.audit_events WHERE tenant_id = :'t' AND resource = 'public.orders' ORDER BY seq;
-- a row without a tenant cannot be audited, and TRUNCATE would erase unseen
INSERT INTO public.orders VALUES (NULL, 2, 'tea');
TRUNCATE public.orders;
SELECT agentidp.disable_audit('public.orders');
INSERT INTO public.orders VALUES (NULL, 2, 'tea');
SELECT count(*) AS unaudited FROM agentidp.audit_events WHERE detail::text LIKE '%"order_id":2%';
DROP VIEW public.orders_view;
DROP TABLE public.orders, public.bad_tenant, public.no_tenant;

-- a transaction cannot be prepared with audit events in it
BEGIN;
SELECT agentidp.register_agent(:'t', 'prepared') IS NOT NULL AS registered;
PREPARE TRANSACTION 'audit';

--
-- Tampering, each kind in its own tenant's chain.  A superuser with
-- session_replication_role = replica bypasses the append-only triggers.
--
CREATE FUNCTION pg_temp.chain(name text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	t uuid := agentidp.create_tenant(name);
BEGIN
	FOR i IN 1..4 LOOP
		PERFORM agentidp.register_agent(t, 'agent-' || i);
	END LOOP;
	RETURN t;
END $$;
-- one transaction per chain: a tenant, its administrator and four agents (seq 1 to 6)
SELECT pg_temp.chain('tamper-edit') AS t_edit \gset
SELECT pg_temp.chain('tamper-delete') AS t_delete \gset
SELECT pg_temp.chain('tamper-insert') AS t_insert \gset
SELECT pg_temp.chain('tamper-reorder') AS t_reorder \gset
SELECT pg_temp.chain('tamper-rehash') AS t_rehash \gset
SELECT pg_temp.chain('tamper-append') AS t_append \gset
SELECT pg_temp.chain('tamper-prune') AS t_prune \gset
SELECT pg_temp.chain('tamper-anchor') AS t_anchor \gset
SELECT agentidp.prune_audit(:'t_anchor', now()) AS pruned;
SELECT agentidp.rotate_signing_key(:'t_rehash') IS NOT NULL AS keyed;
SELECT agentidp.audit_checkpoint(:'t_rehash') AS cp \gset

SET session_replication_role = replica;
-- an edited field
UPDATE agentidp.audit_events SET actor_role = 'someone_else' WHERE tenant_id = :'t_edit' AND seq = 4;
-- a deleted row
DELETE FROM agentidp.audit_events WHERE tenant_id = :'t_delete' AND seq = 3;
-- an inserted row: later rows renumbered, the forged one linked to row 2
UPDATE agentidp.audit_events SET seq = seq + 1000 WHERE tenant_id = :'t_insert' AND seq > 2;
UPDATE agentidp.audit_events SET seq = seq - 999 WHERE tenant_id = :'t_insert' AND seq > 1000;
INSERT INTO agentidp.audit_events
SELECT tenant_id, 3, v, at, actor_agent, actor_role, actor_act, 'delete', resource, resource_key,
	   result, client_addr, trace_id, '{}', hash, sha256(hash)
FROM agentidp.audit_events WHERE tenant_id = :'t_insert' AND seq = 2;
-- reordered rows: 2 and 5 swap places
UPDATE agentidp.audit_events SET seq = CASE seq WHEN 2 THEN 5 ELSE 2 END + 1000
WHERE tenant_id = :'t_reorder' AND seq IN (2, 5);
UPDATE agentidp.audit_events SET seq = seq - 1000 WHERE tenant_id = :'t_reorder' AND seq > 1000;
-- a forged row at the end
INSERT INTO agentidp.audit_events
SELECT tenant_id, 8, v, at, actor_agent, actor_role, actor_act, action, resource, resource_key,
	   result, client_addr, trace_id, detail, prev_hash, hash
FROM agentidp.audit_events WHERE tenant_id = :'t_append' AND seq = 6;
UPDATE agentidp.audit_events SET seq = 7 WHERE tenant_id = :'t_append' AND seq = 8;
-- old rows removed with an anchor that no prune recorded
INSERT INTO agentidp.audit_anchors (tenant_id, seq, prev_hash)
SELECT tenant_id, 4, hash FROM agentidp.audit_events WHERE tenant_id = :'t_prune' AND seq = 3;
DELETE FROM agentidp.audit_events WHERE tenant_id = :'t_prune' AND seq < 4;
-- the anchor of a real prune changed
UPDATE agentidp.audit_anchors SET prev_hash = sha256(prev_hash) WHERE tenant_id = :'t_anchor';
-- history rewritten consistently: the head removed, then a new head chained
DELETE FROM agentidp.audit_events WHERE tenant_id = :'t_rehash' AND seq = 7;
RESET session_replication_role;
SELECT agentidp.register_agent(:'t_rehash', 'rewritten') IS NOT NULL AS rewritten;

SELECT t.name, v.ok, v.rows_checked, v.first_bad_seq, v.reason
FROM agentidp.verify_audit_chain() AS v JOIN agentidp.tenants AS t USING (tenant_id)
WHERE t.name LIKE 'tamper-%' ORDER BY t.name;
-- a chain rewritten with every hash recomputed verifies, but a checkpoint
-- taken before the rewrite no longer holds
SELECT agentidp.verify_audit_checkpoint(:'cp') AS rewritten_checkpoint_holds;

--
-- Checkpoints
--
SET ROLE regress_admin_a;
SELECT agentidp.rotate_signing_key(:'t') AS kid \gset
SELECT agentidp.audit_checkpoint(:'t') AS cp_early \gset
SELECT agentidp.register_agent(:'t', 'after-checkpoint') IS NOT NULL AS registered;
SELECT agentidp.audit_checkpoint(:'t') AS cp \gset
SELECT agentidp._jws_header(:'cp') - 'kid' AS header,
	   agentidp._jws_header(:'cp') ->> 'kid' = :'kid' AS signed_with_active_key;
SELECT c - 'iat' - 'time' - 'tenant_id' - 'hash' - 'iss' AS claims,
	   c ->> 'tenant_id' = :'t' AS tenant, c ->> 'hash' = encode(e.hash, 'hex') AS head_hash,
	   c ->> 'iss' LIKE '%/t/audit-a' AS iss
FROM agentidp.jws_verify(:'cp', agentidp.jwks(:'t'), '{ES256}') AS c
JOIN agentidp.audit_events AS e ON e.tenant_id = :'t' AND e.seq = (c ->> 'seq')::bigint;
SELECT agentidp.verify_audit_checkpoint(:'cp') AS holds,
	   agentidp.verify_audit_checkpoint(:'cp_early') AS earlier_holds;
-- a changed signature, something else, NULL
SELECT agentidp.verify_audit_checkpoint(left(:'cp', -4) || 'AAAA');
SELECT agentidp.verify_audit_checkpoint('not.a.jws');
SELECT agentidp.verify_audit_checkpoint(NULL);
SELECT agentidp.audit_checkpoint(NULL);
\set VERBOSITY terse
-- another tenant's administrator knows neither the key nor the tenant
SET ROLE regress_admin_b;
SELECT agentidp.verify_audit_checkpoint(:'cp');
SELECT agentidp.audit_checkpoint(:'t');
\set VERBOSITY default
RESET ROLE;

--
-- Retention: prune keeps the chain verifiable from an anchor it records
--
SELECT seq AS head, encode(hash, 'hex') AS head_hash FROM agentidp.audit_events
WHERE tenant_id = :'t' ORDER BY seq DESC LIMIT 1 \gset
SELECT agentidp.prune_audit(:'t', now()) = :head AS pruned_all_before_now;
SELECT seq = :head + 1 AS anchor_is_next, encode(prev_hash, 'hex') = :'head_hash' AS anchor_links_old_head
FROM agentidp.audit_anchors WHERE tenant_id = :'t';
SELECT seq = :head + 1 AS prune_row_kept, action, detail::jsonb - 'before' - 'anchor_hash' - 'first_kept_seq'
	AS detail
FROM agentidp.audit_events WHERE tenant_id = :'t';
SELECT ok, rows_checked, first_bad_seq, reason FROM agentidp.verify_audit_chain(:'t');
-- a checkpoint of a pruned row cannot be decided any more, unless it names
-- the very row the anchor links to
SELECT agentidp.verify_audit_checkpoint(:'cp_early') IS NULL AS undecidable,
	   agentidp.verify_audit_checkpoint(:'cp') AS anchor_row_holds;
-- the chain goes on from the anchor
SELECT agentidp.register_agent(:'t', 'after-prune') IS NOT NULL AS registered;
SELECT ok, rows_checked, first_bad_seq - :head AS first_bad_after_head, reason
FROM agentidp.verify_audit_chain(:'t');
SELECT agentidp.prune_audit(:'t', now() - interval '1 day') AS nothing_older;
SELECT agentidp.prune_audit(:'t', NULL);

-- an anchor moved without a prune, or removed, is caught
SET session_replication_role = replica;
UPDATE agentidp.audit_anchors SET seq = seq + 1 WHERE tenant_id = :'t';
SELECT ok, rows_checked, first_bad_seq - :head AS first_bad_after_head, reason
FROM agentidp.verify_audit_chain(:'t');
DELETE FROM agentidp.audit_anchors WHERE tenant_id = :'t';
SELECT ok, rows_checked, first_bad_seq, reason FROM agentidp.verify_audit_chain(:'t');
RESET session_replication_role;
SELECT count(*) AS tenants_verified, bool_and(ok) FILTER (WHERE tenant_id <> :'t') AS others_ok
FROM agentidp.verify_audit_chain()
WHERE tenant_id NOT IN (SELECT tenant_id FROM agentidp.tenants WHERE name LIKE 'tamper-%');
