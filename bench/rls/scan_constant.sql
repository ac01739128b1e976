-- bench/rls.sh: one full scan per transaction, count(*) of
-- bench_rls.constant, whose policy has the tenant's id
-- written in.
-- It counts the 100,000 rows of tenant bench-rls of 1,000,000.  The seven
-- scripts of bench/rls/ run the same transaction (authenticate(), one
-- query), so that the runs differ by the query only; -D token=... is a
-- fresh access token of agent bench-rls.
BEGIN;
SELECT agentidp.authenticate(:token) IS NOT NULL;
SELECT count(*) FROM bench_rls.constant;
END;
