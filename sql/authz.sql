--
-- Tokens as database identity (src/authz.c): authenticate(), the helpers,
-- tenant isolation of a user's table, the PostgREST contract, and the
-- attack matrix, run as a login role that owns nothing.
--
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_app;
RESET client_min_messages;
CREATE ROLE regress_app LOGIN IN ROLE agentidp_agent;

-- two tenants, an agent each, with scopes
SELECT agentidp.create_tenant('authz-a') AS ta \gset
SELECT agentidp.create_tenant('authz-b') AS tb \gset
SELECT agentidp.rotate_signing_key(:'ta') IS NOT NULL AND agentidp.rotate_signing_key(:'tb') IS NOT NULL AS keyed;
SELECT agentidp.register_agent(:'ta', 'reader-a', '{docs:read,docs:write}') AS agent_a \gset
SELECT agentidp.register_agent(:'tb', 'reader-b', '{docs:read,docs:write}') AS agent_b \gset
SELECT agentidp.register_agent(:'ta', 'readonly-a', '{docs:read}') AS agent_ro \gset
SELECT client_id AS ca, client_secret AS sa FROM agentidp.create_client_secret(:'agent_a') \gset
SELECT client_id AS cb, client_secret AS sb FROM agentidp.create_client_secret(:'agent_b') \gset
SELECT client_id AS cro, client_secret AS sro FROM agentidp.create_client_secret(:'agent_ro') \gset
SELECT agentidp.issue_token(:'ca', :'sa') ->> 'access_token' AS tok_a \gset
SELECT agentidp.issue_token(:'cb', :'sb') ->> 'access_token' AS tok_b \gset
SELECT agentidp.issue_token(:'cro', :'sro') ->> 'access_token' AS tok_ro \gset

-- a user's table, owned by the superuser, isolated by tenant
CREATE TABLE public.docs (tenant_id uuid NOT NULL, id int, body text, PRIMARY KEY (tenant_id, id),
	CONSTRAINT docs_body_unique UNIQUE (tenant_id, body) DEFERRABLE INITIALLY DEFERRED);
CREATE SEQUENCE public.docs_seq;
GRANT USAGE ON SEQUENCE public.docs_seq TO regress_app;
INSERT INTO public.docs VALUES (:'ta', 1, 'a1'), (:'ta', 2, 'a2'), (:'tb', 1, 'b1');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.docs TO regress_app;
SELECT agentidp.enable_tenant_isolation('public.docs', 'tenant_id', 'docs:read', 'docs:write');
SELECT polname, polcmd FROM pg_policy WHERE polrelid = 'public.docs'::regclass ORDER BY 1;
SELECT agentidp.enable_tenant_isolation('public.docs');
SELECT agentidp.enable_tenant_isolation('public.docs', 'body');
SELECT agentidp.enable_tenant_isolation('public.docs', 'nope');

SET ROLE regress_app;
-- no identity: nothing
SELECT count(*) AS without_identity FROM public.docs;
SELECT agentidp.current_tenant(), agentidp.current_agent(), agentidp.current_claims();

-- tenant a's agent sees and changes tenant a's rows only
BEGIN;
SELECT agentidp.authenticate(:'tok_a') ->> 'sub' = :'agent_a' AS authenticated;
SELECT agentidp.current_tenant() = :'ta' AS tenant, agentidp.current_agent() = :'agent_a' AS agent,
	   agentidp.acting_for() AS acting_for, agentidp.has_scope('docs:read') AS reads,
	   agentidp.has_scope('admin') AS admin, agentidp.has_role('none') AS role;
SELECT id, body FROM public.docs ORDER BY id;
INSERT INTO public.docs (id, body) VALUES (3, 'a3');
SELECT tenant_id = :'ta' AS defaulted FROM public.docs WHERE id = 3;
UPDATE public.docs SET body = 'taken' WHERE tenant_id = :'tb';
DELETE FROM public.docs WHERE tenant_id = :'tb';
COMMIT;
-- naming another tenant on insert is refused
BEGIN;
SELECT agentidp.authenticate(:'tok_a') IS NOT NULL AS authenticated;
INSERT INTO public.docs VALUES (:'tb', 9, 'forged');
ROLLBACK;
BEGIN;
SELECT agentidp.authenticate(:'tok_a') IS NOT NULL AS authenticated;
UPDATE public.docs SET tenant_id = :'tb' WHERE id = 1;
ROLLBACK;

-- tenant b's agent sees only b's row
BEGIN;
SELECT agentidp.authenticate(:'tok_b') IS NOT NULL AS authenticated;
SELECT id, body FROM public.docs ORDER BY id;
COMMIT;

-- a token without the write scope reads but does not write
BEGIN;
SELECT agentidp.authenticate(:'tok_ro') IS NOT NULL AS authenticated;
SELECT count(*) AS readable FROM public.docs;
INSERT INTO public.docs (id, body) VALUES (4, 'no');
ROLLBACK;
BEGIN;
SELECT agentidp.authenticate(:'tok_ro') IS NOT NULL AS authenticated;
UPDATE public.docs SET body = 'no';
DELETE FROM public.docs;
COMMIT;

RESET ROLE;
-- a delegated token: the actor acts, for the subject
SELECT agentidp.register_agent(:'ta', 'helper-a', '{docs:read}') AS helper \gset
SELECT client_id AS ch, client_secret AS sh FROM agentidp.create_client_secret(:'helper') \gset
SELECT agentidp.allow_delegation(:'agent_a', :'helper');
SELECT agentidp.exchange_token(:'tok_a', agentidp.issue_token(:'ch', :'sh') ->> 'access_token')
	->> 'access_token' AS tok_x \gset
SET ROLE regress_app;
BEGIN;
SELECT agentidp.authenticate(:'tok_x') IS NOT NULL AS authenticated;
SELECT agentidp.current_agent() = :'helper' AS actor_acts, agentidp.acting_for() = :'agent_a' AS for_subject,
	   agentidp.has_scope('docs:read') AS reads, agentidp.has_scope('docs:write') AS writes;
SELECT count(*) AS readable FROM public.docs;
COMMIT;

-- the identity does not outlive its transaction or savepoint
BEGIN;
SELECT agentidp.authenticate(:'tok_a') IS NOT NULL AS authenticated;
COMMIT;
SELECT agentidp.current_tenant() AS after_commit, count(*) AS rows FROM public.docs;
BEGIN;
SAVEPOINT s;
SELECT agentidp.authenticate(:'tok_a') IS NOT NULL AS authenticated;
ROLLBACK TO s;
SELECT agentidp.current_tenant() AS after_rollback_to_savepoint;
COMMIT;
-- a failed verification leaves no identity
BEGIN;
\set VERBOSITY terse
SELECT agentidp.authenticate('garbage');
\set VERBOSITY default
ROLLBACK;
SELECT agentidp.current_tenant() AS after_failure;

-- setting the identity or the trust by hand is refused
SELECT set_config('agentidp.identity', jsonb_build_object('tenant_id', :'tb')::text, true);
SET agentidp.trust_postgrest_claims = on;
-- forged PostgREST claims without the trust setting grant nothing
BEGIN;
SELECT set_config('request.jwt.claims', jsonb_build_object('tenant_id', :'tb', 'sub', :'agent_b',
	'scope', 'docs:read docs:write')::text, true) IS NOT NULL AS forged;
SELECT agentidp.current_tenant() AS forged_tenant, count(*) AS rows FROM public.docs;
-- nor does the pre-request turn them into an identity
\set VERBOSITY terse
SELECT agentidp.postgrest_pre_request();
\set VERBOSITY default
ROLLBACK;
RESET ROLE;

-- a token whose agent was suspended after issue authenticates no more
SELECT agentidp.suspend_agent(:'agent_b');
SET ROLE regress_app;
BEGIN;
\set VERBOSITY terse
SELECT agentidp.authenticate(:'tok_b');
\set VERBOSITY default
ROLLBACK;
RESET ROLE;
SELECT agentidp.reactivate_agent(:'agent_b');

--
-- PostgREST's contract, per transaction: SET LOCAL role, the claims it
-- verified in request.jwt.claims, the pre-request function, the query.
-- The deployment trusts the claims (a superuser setting).
--
SET agentidp.trust_postgrest_claims = on;
SELECT agentidp.verify_token(:'tok_a')::text AS claims_a \gset
SELECT agentidp.verify_token(:'tok_b')::text AS claims_b \gset
BEGIN;
SET LOCAL ROLE regress_app;
SELECT set_config('request.jwt.claims', :'claims_a', true) IS NOT NULL AS claims_set;
-- the claims alone are no identity, even trusted: the pre-request makes them one
SELECT agentidp.current_tenant() AS before_pre_request, count(*) AS rows FROM public.docs;
SELECT agentidp.postgrest_pre_request();
SELECT agentidp.current_tenant() = :'ta' AS tenant_from_claims;
SELECT id, body FROM public.docs ORDER BY id;
COMMIT;
SELECT agentidp.current_tenant() AS after_request;
-- the revoked token passes PostgREST's signature check; the pre-request stops it
SELECT agentidp.revoke_token(:'tok_b');
BEGIN;
SET LOCAL ROLE regress_app;
SELECT set_config('request.jwt.claims', :'claims_b', true) IS NOT NULL AS claims_set;
\set VERBOSITY terse
SELECT agentidp.postgrest_pre_request();
\set VERBOSITY default
ROLLBACK;
-- anonymous requests: no claims, or PostgREST's role alone; no identity, nothing visible
BEGIN;
SET LOCAL ROLE regress_app;
SELECT agentidp.postgrest_pre_request();
SELECT set_config('request.jwt.claims', '{"role": "regress_app"}', true) IS NOT NULL AS claims_set;
SELECT agentidp.postgrest_pre_request();
SELECT agentidp.current_tenant() AS anonymous_tenant, count(*) AS anonymous_rows FROM public.docs;
COMMIT;
-- claims that are not an agentidp token's, or malformed ones, are refused
BEGIN;
SET LOCAL ROLE regress_app;
\set VERBOSITY terse
SELECT set_config('request.jwt.claims', '{"sub": "someone", "role": "web_anon"}', true) IS NOT NULL AS claims_set;
SAVEPOINT s;
SELECT agentidp.postgrest_pre_request();
ROLLBACK TO s;
SELECT set_config('request.jwt.claims', (:'claims_a'::jsonb || '{"cred": "s"}')::text, true) IS NOT NULL AS claims_set;
SELECT agentidp.postgrest_pre_request();
ROLLBACK TO s;
SELECT set_config('request.jwt.claims', (:'claims_a'::jsonb || '{"act": {"sub": 7}}')::text, true) IS NOT NULL AS claims_set;
SELECT agentidp.postgrest_pre_request();
ROLLBACK TO s;
-- a DPoP-bound token would be a bearer token here: PostgREST does not check proofs
SELECT set_config('request.jwt.claims', (:'claims_a'::jsonb || '{"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}')::text, true) IS NOT NULL AS claims_set;
SELECT agentidp.postgrest_pre_request();
ROLLBACK TO s;
-- an audit checkpoint is signed by the tenant's key too, but is no access token
SELECT set_config('request.jwt.claims', jsonb_build_object('iss', 'x', 'tenant_id', :'ta', 'seq', 3,
	'hash', repeat('0', 64))::text, true) IS NOT NULL AS claims_set;
SELECT agentidp.postgrest_pre_request();
\set VERBOSITY default
ROLLBACK;
RESET agentidp.trust_postgrest_claims;

-- a search_path hijack: the caller puts first an "=" that is always true
-- and a current_setting that names tenant b; nothing of agentidp uses them
CREATE SCHEMA regress_evil AUTHORIZATION regress_app;
SELECT format('SELECT %L::text', jsonb_build_object('tenant_id', :'tb', 'sub', :'agent_b',
	'scope', 'docs:read docs:write')::text) AS evil_setting \gset
SET ROLE regress_app;
CREATE FUNCTION regress_evil.yes(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = regress_evil.yes);
CREATE FUNCTION regress_evil.yes(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.yes);
CREATE FUNCTION regress_evil.current_setting(text, boolean) RETURNS text LANGUAGE sql AS :'evil_setting';
SET search_path = regress_evil, pg_catalog, public;
SELECT current_setting('agentidp.identity', true) = 'anything' AS hijack_in_place;
BEGIN;
SELECT agentidp.authenticate(:'tok_a') IS NOT NULL AS authenticated;
SELECT agentidp.current_tenant() OPERATOR(pg_catalog.=) :'ta'::uuid AS still_tenant_a, count(*) AS rows_a
FROM public.docs;
COMMIT;
SELECT agentidp.current_tenant() AS hijacked_tenant, count(*) AS hijacked_rows FROM public.docs;
-- the revoked token is still revoked
BEGIN;
\set VERBOSITY terse
SELECT agentidp.authenticate(:'tok_b');
\set VERBOSITY default
ROLLBACK;
RESET ROLE;
-- and the definer functions do not resolve through it either
SET ROLE regress_admin_a;
SELECT jsonb_array_length(agentidp.jwks(:'ta') -> 'keys') AS keys_of_a;
RESET ROLE;
RESET search_path;
SET client_min_messages = warning;
DROP SCHEMA regress_evil CASCADE;
RESET client_min_messages;

-- definer functions pin search_path (a hijack finds nothing to resolve)
SELECT count(*) AS unpinned_definers FROM pg_proc p
WHERE p.pronamespace = 'agentidp'::regnamespace AND p.prosecdef
  AND NOT coalesce(p.proconfig::text LIKE '%search_path=pg_catalog, pg_temp%', false);

-- access preview: what a token could read, as the agents' role, rolled back
GRANT regress_app TO regress_admin_a;
SET ROLE regress_admin_a;
SELECT row_number, row_data - 'tenant_id' AS row_data
FROM agentidp.preview_access(:'tok_a', 'SELECT id, body, tenant_id FROM public.docs ORDER BY id', 'regress_app');
SELECT count(*) AS rows_b FROM agentidp.preview_access(:'tok_ro', 'SELECT * FROM public.docs', 'regress_app', 2);
-- a role whose name needs quoting
RESET ROLE;
CREATE ROLE "regress Mixed" IN ROLE regress_app;
GRANT "regress Mixed" TO regress_admin_a;
SET ROLE regress_admin_a;
SELECT count(*) AS rows_as_quoted_role
FROM agentidp.preview_access(:'tok_a', 'SELECT * FROM public.docs', '"regress Mixed"');
SELECT agentidp.current_tenant() AS identity_after_preview;
SELECT * FROM agentidp.preview_access(:'tok_a', 'DELETE FROM public.docs', 'regress_app');
SELECT * FROM agentidp.preview_access(:'tok_a', 'WITH d AS (DELETE FROM public.docs RETURNING *) SELECT * FROM d', 'regress_app');
SELECT * FROM agentidp.preview_access(:'tok_a', 'SELECT * FROM public.docs FOR UPDATE', 'regress_app');
SELECT * FROM agentidp.preview_access(:'tok_a', 'SELECT 1; SELECT 2', 'regress_app');
SELECT * FROM agentidp.preview_access(:'tok_a', 'SELECT pg_sleep(5)', 'regress_app', 1, 100);
-- functions that write are stopped by read-only
SELECT * FROM agentidp.preview_access(:'tok_a', 'SELECT nextval(''public.docs_seq'')', 'regress_app');
-- write preview: whether a write would pass, and how many rows it would change
SELECT * FROM agentidp.preview_write(:'tok_a', 'UPDATE public.docs SET body = upper(body)', 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', 'DELETE FROM public.docs', 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', 'INSERT INTO public.docs (id, body) VALUES (50, ''x'')', 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a',
	'MERGE INTO public.docs d USING (VALUES (1)) s(id) ON d.id = s.id WHEN MATCHED THEN UPDATE SET body = ''m''',
	'regress_app');
-- another tenant's rows: invisible, so nothing to change; naming that tenant: refused
SELECT * FROM agentidp.preview_write(:'tok_a', format('DELETE FROM public.docs WHERE tenant_id = %L', :'tb'), 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', format('INSERT INTO public.docs VALUES (%L, 51, ''x'')', :'tb'), 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', format('UPDATE public.docs SET tenant_id = %L', :'tb'), 'regress_app');
-- a token without the write scope; a constraint the write would break
SELECT * FROM agentidp.preview_write(:'tok_ro', 'INSERT INTO public.docs (id, body) VALUES (52, ''x'')', 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', 'INSERT INTO public.docs (id, body) VALUES (1, ''dup'')', 'regress_app');
-- deferred constraints are checked too, as at commit
SELECT * FROM agentidp.preview_write(:'tok_a', 'UPDATE public.docs SET body = ''same''', 'regress_app');
-- only one INSERT, UPDATE, DELETE or MERGE; a timeout is raised, not reported
SELECT * FROM agentidp.preview_write(:'tok_a', 'SELECT 1', 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', 'TRUNCATE public.docs', 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', 'DELETE FROM public.docs; DELETE FROM public.docs', 'regress_app');
SELECT * FROM agentidp.preview_write(:'tok_a', 'UPDATE public.docs SET body = body WHERE pg_sleep(1) IS NOT NULL',
	'regress_app', 100);
SELECT * FROM agentidp.preview_write('garbage', 'DELETE FROM public.docs', 'regress_app');
SELECT agentidp.current_tenant() AS identity_after_write_preview;
RESET ROLE;
SET ROLE regress_outsider;
\set VERBOSITY terse
SELECT * FROM agentidp.preview_access(:'tok_a', 'SELECT 1');
SELECT * FROM agentidp.preview_write(:'tok_a', 'DELETE FROM public.docs');
\set VERBOSITY default
RESET ROLE;
REVOKE regress_app FROM regress_admin_a;
DROP ROLE "regress Mixed";
-- nothing the previews ran survived
SELECT tenant_id = :'ta' AS tenant_a, id, body FROM public.docs ORDER BY tenant_id = :'ta', id;

-- audited tables: the identity's agent is the actor, with its delegation
-- chain; a table without tenant_id takes the identity's tenant
CREATE TABLE public.notes (id serial PRIMARY KEY, body text);
GRANT SELECT, INSERT ON public.notes TO regress_app;
GRANT USAGE ON SEQUENCE public.notes_id_seq TO regress_app;
SELECT agentidp.enable_audit('public.notes');
SET ROLE regress_app;
BEGIN;
SELECT agentidp.authenticate(:'tok_a') IS NOT NULL AS authenticated;
INSERT INTO public.notes (body) VALUES ('by a');
COMMIT;
BEGIN;
SELECT agentidp.authenticate(:'tok_x') IS NOT NULL AS authenticated;
INSERT INTO public.notes (body) VALUES ('by the helper, for a');
COMMIT;
\set VERBOSITY terse
INSERT INTO public.notes (body) VALUES ('nobody''s');
\set VERBOSITY default
RESET ROLE;
SELECT e.tenant_id = :'ta' AS tenant_a, e.actor_agent = :'agent_a' AS by_a, e.actor_agent = :'helper' AS by_helper,
	   e.actor_act ->> 'sub' = :'helper' AS act_names_helper, e.actor_role
FROM agentidp.audit_events AS e WHERE e.resource = 'public.notes' ORDER BY e.seq;
SELECT agentidp.disable_audit('public.notes');
DROP TABLE public.notes;

-- undone exactly
SELECT agentidp.disable_tenant_isolation('public.docs');
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.docs'::regclass;
SELECT count(*) AS policies FROM pg_policy WHERE polrelid = 'public.docs'::regclass;
SELECT pg_get_expr(adbin, adrelid) AS tenant_default FROM pg_attrdef
WHERE adrelid = 'public.docs'::regclass;
SELECT agentidp.disable_tenant_isolation('public.docs');
DROP TABLE public.docs;
DROP SEQUENCE public.docs_seq;
DROP OWNED BY regress_app;
DROP ROLE regress_app;
