-- bench/worker.sh: :n new audit rows for the tenant
INSERT INTO bench_worker.items (tenant_id, payload)
SELECT :'tenant', 'new ' || i FROM generate_series(1, :n) i;
