-- bench/rls.sh: one full scan per transaction, count(*) of bench_rls.plain,
-- which has no RLS: the query names the tenant (-D tenant=..., the id of
-- bench-rls), so that it reads and compares the same 1,000,000 rows and
-- counts the same 100,000 as the scans of helpers and constant.  With -M
-- prepared the id is a parameter of the statement.  The seven scripts of
-- bench/rls/ run the same transaction (authenticate(), one query), so that
-- the runs differ by the query only; -D token=... is a fresh access token
-- of agent bench-rls.
BEGIN;
SELECT agentidp.authenticate(:token) IS NOT NULL;
SELECT count(*) FROM bench_rls.plain WHERE tenant_id = :tenant;
END;
