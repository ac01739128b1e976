-- bench/rls.sh: the plans of the runs' queries, as the role the runs take
-- (PGOPTIONS=-c role=bench_rls) with the token's identity (-v token=...):
-- the scans compare the policies only if helpers and constant have one
-- plan shape (a parallel plan lost, or the helpers called per row, shows
-- here).  pgbench prepares the statements (-M prepared); they are prepared
-- here too and explained as the generic plans that the runs use after
-- their fifth execution, with the tenant's id (-v t=...) and an id of it for
-- the parameters.  Each runs once (ANALYZE, without timing).
--
--   PGOPTIONS='-c role=bench_rls' psql -X -q -v ON_ERROR_STOP=1 \
--		-v token=... -v t=... -f bench/rls/plans.sql
BEGIN;
SET LOCAL plan_cache_mode = force_generic_plan;
SELECT agentidp.authenticate(:'token') \g /dev/null
PREPARE scan_helpers AS SELECT count(*) FROM bench_rls.helpers;
PREPARE scan_constant AS SELECT count(*) FROM bench_rls.constant;
PREPARE scan_plain(uuid) AS SELECT count(*) FROM bench_rls.plain WHERE tenant_id = $1;
PREPARE point_helpers(bigint) AS SELECT payload FROM bench_rls.helpers WHERE id = $1;
PREPARE point_constant(bigint) AS SELECT payload FROM bench_rls.constant WHERE id = $1;
PREPARE point_plain(bigint, uuid) AS SELECT payload FROM bench_rls.plain WHERE id = $1 AND tenant_id = $2;
\echo '-- full scan, helpers: SELECT count(*) FROM bench_rls.helpers'
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE scan_helpers;
\echo '-- full scan, constant: SELECT count(*) FROM bench_rls.constant'
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE scan_constant;
\echo '-- full scan, plain: SELECT count(*) FROM bench_rls.plain WHERE tenant_id = $1'
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE scan_plain(:'t');
\echo '-- point lookup, helpers: SELECT payload FROM bench_rls.helpers WHERE id = $1'
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE point_helpers(500000);
\echo '-- point lookup, constant: SELECT payload FROM bench_rls.constant WHERE id = $1'
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE point_constant(500000);
\echo '-- point lookup, plain: SELECT payload FROM bench_rls.plain WHERE id = $1 AND tenant_id = $2'
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE point_plain(500000, :'t');
COMMIT;
