-- bench/audit.sh, set-up: a fresh schema bench_audit with three tables of
-- one shape, differing only in what happens after each insert:
--   plain          nothing
--   audited        agentidp.enable_audit(): one row in agentidp.audit_events
--   plpgsql_chain  the PL/pgSQL + pgcrypto chain of plpgsql_chain.sql
-- and the eight bench tenants, one per slot of bench_audit.tenant_slots.
--
--   psql -X -q -v ON_ERROR_STOP=1 -f bench/audit/setup.sql
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS bench_audit CASCADE;
CREATE SCHEMA bench_audit;

-- slot i (0 to 7) is the tenant bench-audit-(i + 1), created by the first
-- run and reused by later ones; the pgbench scripts pick slot
-- client_id % ntenants
CREATE TABLE bench_audit.tenant_slots (
	slot		int PRIMARY KEY,
	tenant_id	uuid NOT NULL
);
INSERT INTO bench_audit.tenant_slots (slot, tenant_id)
SELECT i - 1, COALESCE((SELECT t.tenant_id FROM agentidp.tenants t WHERE t.name = 'bench-audit-' || i),
					   agentidp.create_tenant('bench-audit-' || i))
FROM generate_series(1, 8) i;
ANALYZE bench_audit.tenant_slots;

CREATE TABLE bench_audit.plain (
	tenant_id	uuid NOT NULL,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	payload		text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id)
);
-- the same columns, identity (its own sequence), default and primary key
CREATE TABLE bench_audit.audited (LIKE bench_audit.plain INCLUDING ALL);
CREATE TABLE bench_audit.plpgsql_chain (LIKE bench_audit.plain INCLUDING ALL);

SELECT agentidp.enable_audit('bench_audit.audited') \g /dev/null

\ir plpgsql_chain.sql
INSERT INTO bench_audit.chain_heads (tenant_id, seq, hash)
SELECT tenant_id, 0, decode(repeat('00', 32), 'hex') FROM bench_audit.tenant_slots;

-- both triggers once, rolled back: a missing function or column fails here
-- rather than in the middle of the pgbench runs
BEGIN;
INSERT INTO bench_audit.audited (tenant_id, payload)
SELECT tenant_id, 'smoke test' FROM bench_audit.tenant_slots;
INSERT INTO bench_audit.plpgsql_chain (tenant_id, payload)
SELECT tenant_id, 'smoke test' FROM bench_audit.tenant_slots;
ROLLBACK;
