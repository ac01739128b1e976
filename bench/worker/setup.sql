-- bench/worker.sh: a tenant with an audited table and :base audit rows;
-- prints the tenant's id
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_worker CASCADE;
CREATE SCHEMA bench_worker;
SELECT agentidp.create_tenant(:'name') AS tenant \gset
CREATE TABLE bench_worker.items (tenant_id uuid NOT NULL DEFAULT :'tenant', id bigserial, payload text,
	PRIMARY KEY (tenant_id, id));
SELECT agentidp.enable_audit('bench_worker.items');
INSERT INTO bench_worker.items (payload) SELECT 'base ' || i FROM generate_series(1, :base) i;
\echo :tenant
