-- bench/audit.sh: one INSERT per transaction into bench_audit.plain.
-- -D ntenants=1: every client writes to tenant slot 0 (bench-audit-1);
-- -D ntenants=8: client i writes to slot i % 8.  The three insert_*.sql
-- differ only in the table's name.
\set slot :client_id % :ntenants
INSERT INTO bench_audit.plain (tenant_id, payload)
VALUES ((SELECT tenant_id FROM bench_audit.tenant_slots WHERE slot = :slot), md5(random()::text));
