-- bench/worker.sh: the full verification of the tenant's chain, timed in ms
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FILTER (WHERE NOT ok) AS broken FROM agentidp.verify_audit_chain(:'tenant') \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000, 1);
