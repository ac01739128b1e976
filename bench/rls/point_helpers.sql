-- bench/rls.sh: one point lookup per transaction, by id, in
-- bench_rls.helpers, isolated by agentidp.enable_tenant_isolation():
-- the policy keeps the rows of the identity's tenant, with the scope
-- docs:read.
-- The ids of tenant bench-rls are the multiples of 10 (slot 0); the query
-- names no tenant, the policy does.  The seven scripts of bench/rls/ run
-- the same transaction (authenticate(), one query), so that the runs differ
-- by the query only; -D token=... is a fresh access token of agent
-- bench-rls.
\set id 10 * random(1, 100000)
BEGIN;
SELECT agentidp.authenticate(:token) IS NOT NULL;
SELECT payload FROM bench_rls.helpers WHERE id = :id;
END;
