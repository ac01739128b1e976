-- bench/worker.sh: one incremental verification of every tenant, timed in ms
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FILTER (WHERE NOT ok) AS broken FROM agentidp.verify_audit_increment(1000000) \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000, 1);
