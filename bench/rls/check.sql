-- bench/rls.sh: before the runs, that the identity works, as the role the
-- runs take (PGOPTIONS=-c role=bench_rls).  Without authenticate()
-- bench_rls.helpers shows no row; with the token (-v token=...), the
-- 100,000 rows of tenant bench-rls (-v t=...) and no other, as do constant
-- and plain with the tenant in its WHERE clause.  Prints one line: the rows
-- of helpers without identity; with the identity, the rows of helpers, of
-- helpers of another tenant than bench-rls, of constant and of plain with
-- the tenant's id; whether current_tenant() is bench-rls (t or f); the
-- current role.  Reading the three tables whole also brings them into the
-- operating system's cache before the first run.
--
--   PGOPTIONS='-c role=bench_rls' psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 \
--		-v token=... -v t=... -f bench/rls/check.sql
SELECT count(*) AS anonymous FROM bench_rls.helpers \gset
BEGIN;
SELECT agentidp.authenticate(:'token') \g /dev/null
SELECT :anonymous,
	   (SELECT count(*) FROM bench_rls.helpers),
	   (SELECT count(*) FROM bench_rls.helpers WHERE tenant_id <> :'t'),
	   (SELECT count(*) FROM bench_rls.constant),
	   (SELECT count(*) FROM bench_rls.plain WHERE tenant_id = :'t'),
	   COALESCE(agentidp.current_tenant() = :'t', false),
	   current_user;
COMMIT;
