-- bench/rls.sh, set-up: the schema bench_rls with three tables of the same
-- 1,000,000 rows, differing only in their row-level security:
--   helpers   agentidp.enable_tenant_isolation(..., 'tenant_id', 'docs:read'):
--             a SELECT sees tenant_id = (SELECT agentidp.current_tenant())
--             AND (SELECT agentidp.has_scope('docs:read'))
--   constant  RLS enabled and forced, one SELECT policy with the tenant's id
--             written in: tenant_id = '<id of bench-rls>'::uuid
--   plain     no RLS
-- the tenant bench-rls with an ES256 signing key, its agent bench-rls
-- (allowed scope docs:read) with a fresh client secret, and the role
-- bench_rls that the benchmark's sessions take: a member of agentidp_agent,
-- neither superuser nor owner of the tables, with SELECT on them.
--
-- The schema is made once and kept: a later run reuses it when the three
-- tables still hold their 1,000,000 rows for the same tenant with their
-- policies, and rebuilds it otherwise (about half a minute).  The tenant,
-- its key, the agent and the role are created by the first run and reused
-- by later ones; the agent's earlier secrets are revoked before the new one
-- is made.  Prints one line: the tenant's id, client_id and client_secret,
-- separated by spaces.
--
--   psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 -f bench/rls/setup.sql
SET client_min_messages = warning;

SELECT COALESCE((SELECT tenant_id FROM agentidp.tenants WHERE name = 'bench-rls'),
				agentidp.create_tenant('bench-rls')) AS t \gset
-- the first key of a tenant is active at once (ES256 by default)
SELECT CASE WHEN NOT EXISTS (SELECT FROM agentidp.signing_keys WHERE tenant_id = :'t')
			THEN agentidp.rotate_signing_key(:'t') END \g /dev/null
SELECT COALESCE((SELECT agent_id FROM agentidp.agents
				 WHERE tenant_id = :'t' AND name = 'bench-rls' AND status = 'active'),
				agentidp.register_agent(:'t', 'bench-rls', '{docs:read}')) AS a \gset

-- the role of the agent's connections: row-level security applies to it
-- (the superuser bypasses it, forced or not)
DO $$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_rls') THEN
		CREATE ROLE bench_rls NOLOGIN IN ROLE agentidp_agent;
	END IF;
END $$;
SELECT agentidp._require(NOT rolsuper AND NOT rolbypassrls, '55000',
						 'role bench_rls bypasses row-level security')
FROM pg_roles WHERE rolname = 'bench_rls' \g /dev/null

-- ready: the three tables hold 1,000,000 rows each, slot 0 is this tenant
-- bench-rls, and both SELECT policies are there
SELECT to_regclass('bench_rls.helpers') IS NOT NULL AND to_regclass('bench_rls.constant') IS NOT NULL
	   AND to_regclass('bench_rls.plain') IS NOT NULL AND to_regclass('bench_rls.tenant_slots') IS NOT NULL
	   AS exists \gset
\if :exists
SELECT (SELECT count(*) FROM bench_rls.helpers) = 1000000
	   AND (SELECT count(*) FROM bench_rls.constant) = 1000000
	   AND (SELECT count(*) FROM bench_rls.plain) = 1000000
	   AND EXISTS (SELECT FROM bench_rls.tenant_slots WHERE slot = 0 AND tenant_id = :'t')
	   AND EXISTS (SELECT FROM pg_policy WHERE polrelid = 'bench_rls.helpers'::regclass
				   AND polname = 'agentidp_tenant_select')
	   AND EXISTS (SELECT FROM pg_policy WHERE polrelid = 'bench_rls.constant'::regclass
				   AND polname = 'constant_tenant')
	   AS ready \gset
\else
\set ready false
\endif

\if :ready
\else
DROP SCHEMA IF EXISTS bench_rls CASCADE;
CREATE SCHEMA bench_rls;

-- ten tenants: slot 0 is bench-rls, slots 1 to 9 uuids of no tenant (no
-- token names them); row id is slot id % 10's, so that every page holds
-- rows of every tenant
CREATE TABLE bench_rls.tenant_slots (
	slot		int PRIMARY KEY,
	tenant_id	uuid NOT NULL
);
INSERT INTO bench_rls.tenant_slots
SELECT i, CASE WHEN i = 0 THEN :'t'::uuid ELSE gen_random_uuid() END FROM generate_series(0, 9) i;

-- the primary key serves the point lookups by id; no index leads with
-- tenant_id, so the count of one tenant's rows reads all 1,000,000
CREATE TABLE bench_rls.plain (
	tenant_id	uuid NOT NULL,
	id			bigint NOT NULL,
	payload		text NOT NULL
);
INSERT INTO bench_rls.plain (tenant_id, id, payload)
SELECT s.tenant_id, i, md5(i::text)
FROM generate_series(1, 1000000) i JOIN bench_rls.tenant_slots s ON s.slot = i % 10
ORDER BY i;
-- the same rows in the same order
CREATE TABLE bench_rls.constant (LIKE bench_rls.plain);
CREATE TABLE bench_rls.helpers (LIKE bench_rls.plain);
INSERT INTO bench_rls.constant SELECT * FROM bench_rls.plain ORDER BY id;
INSERT INTO bench_rls.helpers SELECT * FROM bench_rls.plain ORDER BY id;
-- the keys after the rows: quicker than 3,000,000 index insertions
ALTER TABLE bench_rls.plain ADD PRIMARY KEY (id);
ALTER TABLE bench_rls.constant ADD PRIMARY KEY (id);
ALTER TABLE bench_rls.helpers ADD PRIMARY KEY (id);

-- policies agentidp_tenant_select, _insert, _update and _delete
SELECT agentidp.enable_tenant_isolation('bench_rls.helpers', 'tenant_id', 'docs:read') \g /dev/null
-- the baseline: the same RLS flags, a policy without function call
SELECT format('CREATE POLICY constant_tenant ON bench_rls.constant FOR SELECT USING (tenant_id = %L::uuid)', :'t')
\gexec
ALTER TABLE bench_rls.constant ENABLE ROW LEVEL SECURITY;
ALTER TABLE bench_rls.constant FORCE ROW LEVEL SECURITY;

-- hint bits, the visibility map and statistics, so that no run pays for them
VACUUM (FREEZE, ANALYZE) bench_rls.tenant_slots, bench_rls.plain, bench_rls.constant, bench_rls.helpers;
\endif

GRANT USAGE ON SCHEMA bench_rls TO bench_rls;
GRANT SELECT ON bench_rls.plain, bench_rls.constant, bench_rls.helpers TO bench_rls;

-- one current secret
SELECT agentidp.revoke_client_secret(client_id) FROM agentidp.agents WHERE agent_id = :'a' \g /dev/null
SELECT :'t', client_id, client_secret FROM agentidp.create_client_secret(:'a');
