-- bench/audit.sh, verification speed: a chain of :n rows (1,000,000 from
-- audit.sh) for a fresh tenant, made by one INSERT into bench_audit.audited,
-- then, each run twice with the second timed (warm cache):
--   verify_audit_chain(tenant)  the extension's verification
--   plain read                  count and total detail length of the same rows
--   SQL sha256 recompute        sha256 over each row's text in plain SQL
-- Prints one line per figure.  The tenant and its rows stay: audit rows
-- cannot be deleted.
--
--   psql -X -q -tA -v ON_ERROR_STOP=1 -v n=1000000 -f bench/audit/verify.sql
--
-- The column names of agentidp.audit_events used by the two baselines
-- (tenant_id, seq, action, detail, prev_hash) follow the audit chain's
-- design; the recompute is not the extension's exact hash input, only the
-- same amount of hashing done in SQL.
SET client_min_messages = warning;
-- verify_audit_chain runs in one process; so do the baselines
SET max_parallel_workers_per_gather = 0;

SELECT 'bench-audit-verify-' || to_char(clock_timestamp(), 'YYYYMMDD-HH24MISS') || '-' ||
	   substr(md5(random()::text), 1, 4) AS tname \gset
SELECT agentidp.create_tenant(:'tname') AS t \gset

-- the chain: n audit rows appended in one transaction
SELECT clock_timestamp() AS b0 \gset
INSERT INTO bench_audit.audited (tenant_id, payload)
SELECT :'t'::uuid, md5(i::text) FROM generate_series(1, :n) i;
SELECT clock_timestamp() AS b1 \gset
VACUUM ANALYZE agentidp.audit_events;

-- verify_audit_chain
SELECT * FROM agentidp.verify_audit_chain(:'t') \g /dev/null
SELECT clock_timestamp() AS v0 \gset
SELECT COALESCE(ok::text, 'null') AS v_ok, COALESCE(rows_checked, 0) AS v_rows,
	   COALESCE(first_bad_seq::text, '-') AS v_bad, COALESCE(reason, '-') AS v_reason
FROM agentidp.verify_audit_chain(:'t') \gset
SELECT clock_timestamp() AS v1 \gset

-- plain read of the same rows
SELECT count(*), sum(length(detail::text)) FROM agentidp.audit_events WHERE tenant_id = :'t' \g /dev/null
SELECT clock_timestamp() AS r0 \gset
SELECT count(*) AS r_rows, COALESCE(sum(length(detail::text)), 0) AS r_bytes
FROM agentidp.audit_events WHERE tenant_id = :'t' \gset
SELECT clock_timestamp() AS r1 \gset

-- SQL recompute; count(h), not count(*): with count(*) the planner would
-- drop the unused hash from the flattened subquery and never compute it
SELECT count(h) FROM (SELECT sha256(convert_to(tenant_id::text || seq || action || detail::text, 'UTF8') || prev_hash) AS h
					  FROM agentidp.audit_events WHERE tenant_id = :'t') s \g /dev/null
SELECT clock_timestamp() AS s0 \gset
SELECT count(h) AS s_rows
FROM (SELECT sha256(convert_to(tenant_id::text || seq || action || detail::text, 'UTF8') || prev_hash) AS h
	  FROM agentidp.audit_events WHERE tenant_id = :'t') s \gset
SELECT clock_timestamp() AS s1 \gset

SELECT extract(epoch FROM :'b1'::timestamptz - :'b0'::timestamptz) AS b_s,
	   extract(epoch FROM :'v1'::timestamptz - :'v0'::timestamptz) AS v_s,
	   extract(epoch FROM :'r1'::timestamptz - :'r0'::timestamptz) AS r_s,
	   extract(epoch FROM :'s1'::timestamptz - :'s0'::timestamptz) AS s_s \gset

SELECT format('tenant %s: %s audit rows made by one INSERT in %s s (%s rows/s), %s bytes of detail',
			  :'tname', :r_rows, round(:b_s, 1), round(:n / :b_s), :r_bytes);
SELECT format('%-22s %8s s %10s rows/s', 'verify_audit_chain', round(:v_s, 3), round(:r_rows / :v_s));
SELECT format('%-22s %8s s %10s rows/s', 'plain read', round(:r_s, 3), round(:r_rows / :r_s));
SELECT format('%-22s %8s s %10s rows/s', 'SQL sha256 recompute', round(:s_s, 3), round(:s_rows / :s_s));
SELECT format('rows/s of verify_audit_chain over plain read %s, over SQL recompute %s', round(:r_s / :v_s, 2), round(:s_s / :v_s, 2));
SELECT format('target verify_audit_chain >= 1500000 rows/s: %s',
			  CASE WHEN :r_rows / :v_s >= 1500000 THEN 'met' ELSE 'MISSED' END);
-- a verification that stopped early or checked other rows times nothing
SELECT format('CHAIN NOT OK: ok %s, %s of %s rows checked, first bad seq %s: %s',
			  :'v_ok', :v_rows, :r_rows, :'v_bad', :'v_reason')
WHERE :'v_ok' <> 'true' OR :v_rows <> :r_rows;
