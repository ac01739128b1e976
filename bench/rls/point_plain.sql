-- bench/rls.sh: one point lookup per transaction, by id, in bench_rls.plain,
-- which has no RLS: the query names the tenant itself (-D tenant=..., the
-- id of bench-rls), as the policies of the other two tables do.  The ids of
-- tenant bench-rls are the multiples of 10 (slot 0).  The seven scripts of
-- bench/rls/ run the same transaction (authenticate(), one query), so that
-- the runs differ by the query only; -D token=... is a fresh access token
-- of agent bench-rls.
\set id 10 * random(1, 100000)
BEGIN;
SELECT agentidp.authenticate(:token) IS NOT NULL;
SELECT payload FROM bench_rls.plain WHERE id = :id AND tenant_id = :tenant;
END;
